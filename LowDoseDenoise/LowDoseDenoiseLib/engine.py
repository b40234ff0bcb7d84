"""Slice-wise batched inference on arrays: the one engine that the CLI, Slicer and tests call.

Pure array code: a (z, y, x) HU array in, a float32 HU array out.  No files, no MRML.
The engine builds 2.5D stacks (2k+1 neighbouring slices, the edge slice replicated at
the volume ends), normalises HU as the model's metadata says, runs the network in
batches, and subtracts ``strength`` times the predicted noise from the input.  The
output array is allocated once; beyond it, only one batch of float copies lives at a
time.  On error or cancel nothing is returned, so no half-made result can escape.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import Cancelled, DeviceError, InputError
from .modelfile import LoadedModel, load_model

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CancelCheck = Union[Callable[[], bool], object, None]

DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list:
    """Devices this machine can run on, e.g. ['cpu', 'cuda:0', 'mps']."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str = "auto"):
    """'auto' picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise DeviceError(f"Unknown device '{device}'; use one of auto, cpu, cuda, cuda:N or mps.")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"CUDA device {index} was requested but only {torch.cuda.device_count()} GPU(s) exist."
            )
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("Apple MPS was requested but is not available here; use --device cpu or auto.")
    return torch.device(name)


def _is_cancelled(cancel: CancelCheck) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def _auto_batch(device, height: int, width: int) -> int:
    if device.type == "cpu":
        return 1  # larger CPU batches are slower and cost memory (see benchmarks/speed.py)
    pixels = max(height * width, 1)
    return max(1, min(32, int(16 * 512 * 512 / pixels)))


def check_volume(hu: np.ndarray, min_size: int) -> None:
    """Refuse what the engine cannot process, with a message that says why."""
    if hu.ndim == 2:
        return check_volume(hu[None], min_size)
    if hu.ndim != 3:
        raise InputError(f"Expected a 3D (z, y, x) volume or one 2D slice, got an array of shape {hu.shape}.")
    if hu.size == 0:
        raise InputError("The volume is empty (no voxels).")
    if hu.shape[1] < min_size or hu.shape[2] < min_size:
        raise InputError(
            f"In-plane size {hu.shape[2]}×{hu.shape[1]} is below the model's minimum of "
            f"{min_size}×{min_size} pixels."
        )


def ct_range_problem(hu: np.ndarray) -> Optional[str]:
    """A reason why the values do not look like CT in HU, or None when they do.

    CT in HU spans air (about −1000) to bone (over 300).  All values within 0..255
    looks like an 8-bit picture or a raw detector image; a range of a few HU looks
    like a mask or a parameter map.
    """
    if hu.size == 0:
        return None
    lo, hi = float(np.min(hu)), float(np.max(hu))
    if lo >= 0.0 and hi <= 255.0:
        return f"all values lie in {lo:g}..{hi:g}, which looks like an 8-bit image, not CT in HU"
    if hi - lo < 50.0:
        return f"the values span only {lo:g}..{hi:g}, which looks like a mask or map, not CT in HU"
    if lo < -4000.0 or hi > 40000.0:
        return f"the values span {lo:g}..{hi:g}, beyond any CT range in HU (is a rescale missing?)"
    return None


def check_pixel_size(model: LoadedModel, spacing: Optional[Sequence[float]]) -> Optional[str]:
    """A warning text when the in-plane pixel size lies outside the model's training range."""
    known = model.pixel_size_range
    if spacing is None or known is None:
        return None
    lo, hi = known
    sizes = [float(s) for s in spacing[:2]]
    outside = [s for s in sizes if s < lo * 0.95 or s > hi * 1.05]
    if not outside:
        return None
    return (
        f"In-plane pixel size {' × '.join(f'{s:.2f}' for s in sizes)} mm lies outside the "
        f"{lo:.2f}–{hi:.2f} mm range this model was trained on; noise grain scales with pixel size, so "
        "the result is not validated (check it against the original, or resample first)."
    )


def denoise_volume(
    hu: np.ndarray,
    model: Union[LoadedModel, str, Path, None] = None,
    device: str = "auto",
    batch_size: Union[int, str] = "auto",
    strength: float = 1.0,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
    spacing: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Denoise a (z, y, x) HU volume (or one 2D slice) and return float32 HU of the same shape.

    ``model`` is a LoadedModel, a model file path, or None for the bundled model.
    ``strength`` in [0, 1] scales the removed noise: 0 returns the input exactly.
    ``progress(done, total)`` is called after every batch; ``cancel`` (a callable or
    an object with ``is_set()``) is checked between batches and raises Cancelled.
    ``spacing`` is the pixel size (x, y[, z]) in mm, as ``Volume.spacing``; it is used
    only to warn when the in-plane size lies outside the model's training range.
    """
    import torch

    if not isinstance(model, LoadedModel):
        model = load_model(model)
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"Strength must be a number between 0 and 1, got {strength!r}.") from None
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise InputError(f"Strength must be between 0 and 1, got {strength}.")
    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"Batch size must be a whole number of at least 1, got {batch_size!r}.")
    hu = np.asarray(hu)
    squeeze = hu.ndim == 2
    volume = hu[None] if squeeze else hu
    check_volume(volume, model.min_size)
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise InputError(f"Voxel type {volume.dtype} is not a real number type.")
    if np.issubdtype(volume.dtype, np.floating) and not np.isfinite(volume).all():
        raise InputError("The volume contains NaN or infinite values; fix or mask them before denoising.")
    message = check_pixel_size(model, spacing)
    if message:
        warnings.warn(message, stacklevel=2)
        log.warning(message)

    target = resolve_device(device)
    depth = volume.shape[0]
    out = np.empty(volume.shape, dtype=np.float32)
    if strength == 0.0:
        out[...] = volume
        if progress:
            progress(depth, depth)
        return out[0] if squeeze else out

    batch = _auto_batch(target, *volume.shape[1:]) if batch_size == "auto" else int(batch_size)
    runner = _Runner(model, target)
    done = 0
    while done < depth:
        if _is_cancelled(cancel):
            raise Cancelled("Denoising was cancelled; nothing was written.")
        stop = min(done + batch, depth)
        try:
            noise = runner.noise(volume, done, stop)
        except torch.OutOfMemoryError:
            batch, runner = runner.after_out_of_memory(stop - done)
            continue
        centre = volume[done:stop].astype(np.float32)
        out[done:stop] = centre - strength * noise
        done = stop
        if progress:
            progress(done, depth)
    return out[0] if squeeze else out


class _Runner:
    """Runs the network for a block of slices on one device; knows how to back off."""

    def __init__(self, model: LoadedModel, device):
        self.model = model
        self.device = device
        self.module = model.module.to(device)

    def stack(self, volume: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(B, 2k+1, H, W) normalised input for slices start..stop, edges replicated."""
        k = self.model.context
        depth = volume.shape[0]
        index = np.clip(np.arange(start - k, stop + k), 0, depth - 1)
        lo, hi = self.model.hu_clip
        block = np.clip(volume[index].astype(np.float32), lo, hi)
        block -= self.model.hu_offset
        block /= self.model.hu_scale
        windows = np.lib.stride_tricks.sliding_window_view(block, 2 * k + 1, axis=0)
        # sliding_window_view puts the window last: (B, H, W, 2k+1) -> (B, 2k+1, H, W)
        stack = np.ascontiguousarray(np.moveaxis(windows, -1, 1))
        return stack if stack.flags.writeable else stack.copy()

    def noise(self, volume: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Predicted noise in HU for slices start..stop, zero outside the model's HU window."""
        import torch

        x = torch.from_numpy(self.stack(volume, start, stop)).to(self.device)
        with torch.inference_mode():
            centre = x[:, self.model.context : self.model.context + 1]
            noise = (centre - self.module(x))[:, 0].float().cpu().numpy()
        noise *= self.model.hu_scale
        lo, hi = self.model.hu_clip
        raw = volume[start:stop]
        noise[(raw <= lo) | (raw >= hi)] = 0.0  # padding, air outside the window, metal
        return noise

    def after_out_of_memory(self, batch: int):
        """Halve the batch on the GPU; at batch 1 move to the CPU with a warning."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch > 1:
            log.warning("Out of GPU memory at batch size %d; retrying with %d.", batch, batch // 2)
            return batch // 2, self
        message = f"Out of {self.device.type.upper()} memory even at batch size 1; continuing on the CPU."
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        return 1, _Runner(self.model, torch.device("cpu"))
