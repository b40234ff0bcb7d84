"""Slice-wise batched inference on arrays: the one engine that the CLI, Slicer, training
validation, the benchmarks and the tests all call.

Pure array code: a (z, y, x) HU array in, a float32 HU array out.  No files, no MRML.
The engine builds 2.5D stacks (2k+1 neighbouring slices, the edge slice replicated at
the volume ends), normalises HU as the model's :class:`~.modelfile.HUNormalisation`
says, runs the network in batches, and subtracts ``strength`` times the predicted noise
from the input.  Voxels at or beyond the model's HU window (padding, air outside the
field of view, metal) pass through unchanged.  On CUDA out-of-memory the batch is
halved, and at batch 1 the run continues on the CPU with a warning.  The output array is
allocated once (or given by the caller, in the input's own type: a 512×512×300 int16
series then needs its input and output and one batch of float32 copies, not a float32
volume); beyond it, only one batch of float copies lives at a time.  A non-finite result
(an input far outside any CT range) is refused batch by batch.  On error or cancel
nothing is returned, so no half-made result can escape.

The network is a :class:`~.modelfile.LoadedModel` (a model file), or a bare
``torch.nn.Module`` with its HU normalisation (training validation runs the generator
being trained through this same path).  This module also owns the small shared checks:
the device resolver and lister, the strength check and the cancel normalisation.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import Cancelled, DeviceError, InputError
from .modelfile import HUNormalisation, LoadedModel, load_model
from .volume import cast_like

__all__ = [
    "DEFAULT_ENSEMBLE",
    "DEVICES",
    "ENSEMBLES",
    "NEIGHBOURS",
    "CancelCheck",
    "Predictor",
    "ProgressCallback",
    "check_cancel",
    "check_ensemble",
    "check_neighbours",
    "check_pixel_size",
    "check_slice_spacing",
    "check_strength",
    "check_volume",
    "ct_range_problem",
    "denoise_volume",
    "is_cancelled",
    "list_devices",
    "resolve_device",
]

log = logging.getLogger(__name__)

#: ``progress(done, total)``: called with the number of slices finished and the total.
ProgressCallback = Callable[[int, int], None]
#: A cancel request: None, a callable returning True to cancel, or an object with ``is_set()``
#: (a ``threading.Event``).
CancelCheck = Union[Callable[[], bool], Any, None]

DEVICES = ("auto", "cpu", "cuda", "mps")


# --------------------------------------------------------------------------- shared checks


def check_cancel(cancel: CancelCheck) -> CancelCheck:
    """``cancel`` itself when it is a cancel request the engine understands, else InputError.

    Accepted: None (never cancel), a callable taking no arguments that returns True to
    stop, or an object whose ``is_set()`` says so (a ``threading.Event``).  Checked before
    any work, so that a wrong value (``cancel="yes"``, ``cancel=True``) is not found only
    at the first batch, as a bare TypeError.
    """
    if cancel is None or callable(getattr(cancel, "is_set", None)) or callable(cancel):
        return cancel
    raise InputError(
        f"cancel must be None, a function taking no arguments that returns True to stop, or an object with "
        f"is_set() such as threading.Event(); got {cancel!r} ({type(cancel).__name__})."
    )


def is_cancelled(cancel: CancelCheck) -> bool:
    """True when ``cancel`` asks to stop: a callable that returns True, or an Event that is set
    (InputError for anything else, see :func:`check_cancel`)."""
    checked = check_cancel(cancel)
    if checked is None:
        return False
    if hasattr(checked, "is_set"):
        return bool(checked.is_set())
    return bool(checked())


def check_strength(strength: Any) -> float:
    """The strength as a float in [0, 1] (0: the input unchanged, 1: all predicted noise removed)."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"Strength must be a number between 0 and 1, got {strength!r}.") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"Strength must be between 0 (off) and 1 (full), got {strength}.")
    return value


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Any = "auto") -> Any:
    """The ``torch.device`` to run on: 'auto' picks CUDA, then Apple MPS, then the CPU; an
    explicit device ('cpu', 'cuda', 'cuda:N', 'mps' or a torch.device) must exist here."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    base, _, index_text = name.partition(":")
    if base not in DEVICES or (index_text and (base != "cuda" or not index_text.isdigit())):
        raise DeviceError(f"Unknown device '{device}'; use one of auto, cpu, cuda, cuda:N or mps.")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
        index = int(index_text) if index_text else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"CUDA device {index} was requested but only {torch.cuda.device_count()} GPU(s) exist."
            )
    if base == "mps" and not _mps_available(torch):
        raise DeviceError("Apple MPS was requested but is not available here; use --device cpu or auto.")
    return torch.device(name)


def list_devices() -> List[Tuple[str, str]]:
    """(device id, label) of every device this machine can run on, for a device menu:
    auto, the CPU, each CUDA GPU (name and memory) and Apple MPS.

    Never fails: without torch, or with a torch that cannot be imported (a broken
    install), only 'auto' and 'cpu' are listed.  The ids are what :func:`resolve_device`
    and ``denoise_volume(device=...)`` accept.
    """
    choices = [("auto", "Automatic (GPU if available)"), ("cpu", "CPU")]
    if importlib.util.find_spec("torch") is None:
        return choices
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            memory = f", {props.total_memory / 2**30:.0f} GB" if getattr(props, "total_memory", 0) else ""
            choices.append((f"cuda:{index}", f"GPU {index}: {props.name}{memory}"))
        if _mps_available(torch):
            choices.append(("mps", "Apple GPU (MPS)"))
    except Exception as error:  # a broken torch install must not break a device menu
        log.warning("Cannot list GPUs (%s: %s); offering the CPU only.", type(error).__name__, error)
    return choices


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
    return None


def ct_range_problem(hu: np.ndarray) -> Optional[str]:
    """A reason why the values do not look like CT in HU, or None when they do.

    CT in HU spans air (about −1000) to bone (over 300).  All values within 0..255
    looks like an 8-bit picture or a raw detector image; a range of a few HU looks
    like a mask or a parameter map.
    """
    if hu.size == 0:
        return None
    lo, hi = float(np.min(hu)), float(np.max(hu))
    if hi - lo < 50.0:  # first: a 0/1 mask is a mask, not an 8-bit picture
        return f"the values span only {lo:g}..{hi:g}, which looks like a mask or map, not CT in HU"
    if lo >= 0.0 and hi <= 255.0:
        return f"all values lie in {lo:g}..{hi:g}, which looks like an 8-bit image, not CT in HU"
    if lo < -4000.0 or hi > 40000.0:
        return f"the values span {lo:g}..{hi:g}, beyond any CT range in HU (is a rescale missing?)"
    return None


def check_pixel_size(model: Union[LoadedModel, Predictor], spacing: Optional[Sequence[float]]) -> Optional[str]:
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


def check_slice_spacing(model: Union[LoadedModel, Predictor], spacing: Optional[Sequence[float]]) -> Optional[str]:
    """A note when the slices lie farther apart than the context slices the model was trained on.

    Then :func:`denoise_volume` (``neighbours=None``) gives the network each slice alone, as it is
    given a single 2D image: neighbours 8 mm away show other anatomy, and a model trained on
    2–5 mm slices blends it in (measured on held-out 8 mm scans: model card, "Where it fails").
    None when the model records no range, the spacing has no z or the model has no context.
    """
    known = model.slice_spacing_range
    if spacing is None or len(spacing) < 3 or known is None or model.context == 0:
        return None
    gap = abs(float(spacing[2]))
    if gap <= known[1] * 1.05:
        return None
    return (
        f"Slices are {gap:.2f} mm apart, farther than the {known[1]:.2f} mm this model's neighbouring slices were "
        "in training: each slice is denoised on its own, as a single image (to use them anyway: Neighbouring "
        "slices 'Always use' in Slicer, --neighbours on, or neighbours=True)."
    )


# --------------------------------------------------------------------------- the network


@dataclass
class Predictor:
    """A denoising network and what the engine needs to run it.

    ``module`` maps (B, 2k+1, H, W) normalised slices to the denoised centre slice
    (B, 1, H, W); ``context`` is k; ``normalisation`` maps HU to model units;
    ``min_size`` is the smallest in-plane size it accepts.
    """

    module: Any  # torch.nn.Module or torch.jit.ScriptModule
    normalisation: HUNormalisation
    context: int
    min_size: int = 1
    pixel_size_range: Optional[Tuple[float, float]] = None
    name: str = "network"
    slice_spacing_range: Optional[Tuple[float, float]] = None

    @classmethod
    def of(
        cls,
        model: Union[LoadedModel, Predictor, Any, str, Path, None],
        normalisation: Optional[HUNormalisation] = None,
        context: Optional[int] = None,
    ) -> Predictor:
        """A Predictor for a LoadedModel, a model name or file (None: the default model), or a
        bare ``torch.nn.Module`` with its ``normalisation`` (its ``context`` and ``min_size``
        attributes are used when present, as :class:`~.network.Generator` has them)."""
        if isinstance(model, Predictor):
            return model
        if model is None or isinstance(model, (str, Path)):
            model = load_model(model)
        if isinstance(model, LoadedModel):
            return cls(model.module, model.normalisation, model.context, model.min_size, model.pixel_size_range,
                       model.name, model.slice_spacing_range)
        if not callable(model):
            raise InputError(f"Expected a LoadedModel, a model file or a torch.nn.Module, got {type(model).__name__}.")
        if normalisation is None:
            raise InputError("A bare network needs its HU normalisation (normalisation=HUNormalisation(...)).")
        k = context if context is not None else getattr(model, "context", None)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InputError("A bare network needs its context (2k+1 input slices): pass context=k.")
        return cls(model, normalisation, k, int(getattr(model, "min_size", 1)), None, type(model).__name__)


def _is_out_of_memory(error: BaseException) -> bool:
    """CUDA (torch.cuda.OutOfMemoryError, torch >= 1.13) or MPS/older CUDA out-of-memory."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """Eval mode (and inference mode) for the run; the caller's training flag is put back."""
    import torch

    training = bool(getattr(module, "training", False))
    if hasattr(module, "eval"):
        module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if training:
            module.train()


# --------------------------------------------------------------------------- the engine


#: Self-ensemble sizes (``denoise_volume(ensemble=)``): the network is run on these in-plane
#: symmetries of the input (each a group of the square's symmetries, so the average is itself
#: symmetric) and its outputs, mapped back, are averaged.  Named by what is applied to (y, x).
ENSEMBLES: Dict[int, Tuple[str, ...]] = {
    1: ("identity",),
    2: ("identity", "transpose"),
    4: ("identity", "transpose", "rotate180", "antitranspose"),
    8: ("identity", "transpose", "rotate180", "antitranspose", "flip_y", "flip_x", "rotate90", "rotate270"),
}
#: The default ensemble: the network and its transposed twin.  Measured on the held-out scans
#: (model card): the sharp-kernel B70f gains about 0.3 dB over a single pass (8: about 0.5), the
#: faint-lesion contrast and fine patterns stay; it costs 2 passes per slice (still faster than
#: 5-iteration diffusion on 2 CPU cores, benchmarks/speed.py).
DEFAULT_ENSEMBLE = 2


#: The thick-slice rule's settings by the words the CLI (``--neighbours``) and the provenance use:
#: ``denoise_volume(neighbours=)`` None (automatic, by slice spacing), True (always), False (never).
NEIGHBOURS: Dict[str, Optional[bool]] = {"auto": None, "on": True, "off": False}


def check_neighbours(neighbours: Any) -> Optional[bool]:
    """``neighbours`` as :func:`denoise_volume` takes it: None, True or False (not 1, "yes" or "on")."""
    if neighbours is None or neighbours is True or neighbours is False:
        return neighbours
    raise InputError(
        "Neighbouring slices must be None (automatic, by slice spacing), True (always use them) or False "
        f"(each slice alone): neighbours must be one of these three, got {neighbours!r}."
    )


def check_ensemble(ensemble: Any) -> int:
    if isinstance(ensemble, bool) or not isinstance(ensemble, (int, np.integer)) or int(ensemble) not in ENSEMBLES:
        raise InputError(f"The self-ensemble size must be one of {sorted(ENSEMBLES)} (1 = one pass of the network), "
                         f"got {ensemble!r}.")
    return int(ensemble)


def _symmetry(x: Any, name: str, inverse: bool = False) -> Any:
    """One symmetry of the square on the last two axes of a torch tensor (or its inverse)."""
    if name == "identity":
        return x
    if name == "transpose":
        return x.transpose(-1, -2)
    if name == "rotate180":
        return x.flip(-1, -2)
    if name == "antitranspose":
        return x.flip(-1, -2).transpose(-1, -2)
    if name == "flip_y":
        return x.flip(-2)
    if name == "flip_x":
        return x.flip(-1)
    if name in ("rotate90", "rotate270"):
        turns = 1 if name == "rotate90" else -1
        return x.rot90(-turns if inverse else turns, dims=(-2, -1))
    raise InputError(f"Unknown symmetry {name!r}.")


def denoise_volume(
    hu: np.ndarray,
    model: Union[LoadedModel, Predictor, Any, str, Path, None] = None,
    device: Any = "auto",
    batch_size: Union[int, str] = "auto",
    strength: float = 1.0,
    progress: Optional[ProgressCallback] = None,
    cancel: CancelCheck = None,
    spacing: Optional[Sequence[float]] = None,
    normalisation: Optional[HUNormalisation] = None,
    out: Optional[np.ndarray] = None,
    neighbours: Optional[bool] = None,
    ensemble: int = DEFAULT_ENSEMBLE,
) -> np.ndarray:
    """Denoise a (z, y, x) HU volume (or one 2D slice) and return float32 HU of the same shape.

    ``model`` is a LoadedModel, a bundled model's name or a model file path (None: the
    default model), or a bare ``torch.nn.Module`` together with its ``normalisation``.
    ``strength`` in [0, 1] scales the removed noise: 0 returns the input exactly.
    ``progress(done, total)`` is called after every batch; ``cancel`` (a callable or
    an object with ``is_set()``) is checked between batches and raises Cancelled.
    ``spacing`` is the pixel size (x, y[, z]) in mm, as ``Volume.spacing``; it is used to
    warn when the in-plane size lies outside the model's training range and, with
    ``neighbours=None``, to denoise each slice on its own when the slices lie farther apart
    than in the model's training (:func:`check_slice_spacing`); ``neighbours`` True / False
    always / never gives the network the neighbouring slices.
    ``ensemble`` (1, 2, 4 or 8; :data:`ENSEMBLES`): the network runs on that many in-plane
    symmetries of each slice stack (transposed, rotated, flipped) and the outputs, mapped back,
    are averaged; 1 is a single pass, the default :data:`DEFAULT_ENSEMBLE` costs two.
    ``out``: an array of the input's shape to write the result into and return instead
    (any real type; integer types get the values rounded and clipped as
    :func:`~.volume.cast_like` does), e.g. ``np.empty_like(hu)`` to keep the stored type
    without a float32 copy of the volume.  It is filled batch by batch: after an error or
    a cancel its content is undefined.  Raises InputError when a result is not finite.
    """
    strength = check_strength(strength)
    ensemble = check_ensemble(ensemble)
    check_cancel(cancel)
    predictor = Predictor.of(model, normalisation)
    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"Batch size must be a whole number of at least 1, got {batch_size!r}.")
    hu = np.asarray(hu)
    squeeze = hu.ndim == 2
    volume = hu[None] if squeeze else hu
    check_volume(volume, predictor.min_size)
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise InputError(f"Voxel type {volume.dtype} is not a real number type.")
    if np.issubdtype(volume.dtype, np.floating) and not np.isfinite(volume).all():
        raise InputError("The volume contains NaN or infinite values; fix or mask them before denoising.")
    neighbours = check_neighbours(neighbours)
    spacing_note = check_slice_spacing(predictor, spacing) if neighbours is None else None
    single = neighbours is False or spacing_note is not None
    for message in (check_pixel_size(predictor, spacing), spacing_note):
        if message:
            warnings.warn(message, stacklevel=2)
            log.warning(message)

    result = _output_array(out, hu.shape)
    target = resolve_device(device)
    depth = volume.shape[0]
    written = result[None] if squeeze else result
    if strength == 0.0:
        for start in range(0, depth, 16):
            block = volume[start : start + 16]
            written[start : start + 16] = block if block.dtype == written.dtype else cast_like(
                block.astype(np.float32), written.dtype)
        if progress:
            progress(depth, depth)
        return result

    batch = _auto_batch(target, *volume.shape[1:]) if batch_size == "auto" else int(batch_size)
    runner = _Runner(predictor, target, single, ENSEMBLES[ensemble])
    done = 0
    with _evaluating(predictor.module), _returning(predictor.module, target):
        while done < depth:
            if is_cancelled(cancel):
                raise Cancelled("Denoising was cancelled; nothing was written.")
            stop = min(done + batch, depth)
            try:
                noise = runner.noise(volume, done, stop)
            except RuntimeError as error:
                if not _is_out_of_memory(error):
                    raise
                batch, runner = runner.after_out_of_memory(stop - done)
                continue
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf and is refused below
                denoised = volume[done:stop].astype(np.float32)
            denoised -= strength * noise
            if not np.isfinite(denoised).all():
                raise InputError("The result holds NaN or infinite values: the input's values lie far outside the CT "
                                 "range (beyond float32); check the input's rescale or pixel type.")
            written[done:stop] = cast_like(denoised, written.dtype)
            done = stop
            if progress:
                progress(done, depth)
    return result


def _output_array(out: Optional[np.ndarray], shape: Tuple[int, ...]) -> np.ndarray:
    """The caller's ``out`` checked against the input's shape, or a new float32 array."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.shape != shape:
        got = out.shape if isinstance(out, np.ndarray) else type(out).__name__
        raise InputError(f"out must be a numpy array of the input's shape {shape}, got {got}.")
    if not np.issubdtype(out.dtype, np.number) or np.iscomplexobj(out) or not out.flags.writeable:
        raise InputError(f"out must be a writeable array of a real number type, got {out.dtype}.")
    return out


@contextmanager
def _returning(module: Any, device: Any) -> Iterator[None]:
    """After a CPU fallback, put the caller's module back on the device it was run on."""
    try:
        yield
    finally:
        if device.type != "cpu":
            module.to(device)


def _auto_batch(device: Any, height: int, width: int) -> int:
    if device.type == "cpu":
        return 1  # larger CPU batches are slower and cost memory (see benchmarks/speed.py)
    pixels = max(height * width, 1)
    return max(1, min(32, int(16 * 512 * 512 / pixels)))


class _Runner:
    """Runs the network for a block of slices on one device; knows how to back off."""

    def __init__(self, predictor: Predictor, device: Any, single: bool = False,
                 symmetries: Tuple[str, ...] = ("identity",)):
        self.predictor = predictor
        self.device = device
        self.single = single  # each slice as its own neighbours (a single image)
        self.symmetries = symmetries  # the self-ensemble (ENSEMBLES)
        self.module = predictor.module.to(device)

    def stack(self, volume: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(B, 2k+1, H, W) normalised input for slices start..stop, edges replicated (``single``:
        every slice repeated as its own neighbours)."""
        k = self.predictor.context
        if self.single:
            block = self.predictor.normalisation.to_model(volume[start:stop])
            return np.ascontiguousarray(np.repeat(block[:, None], 2 * k + 1, axis=1))
        depth = volume.shape[0]
        index = np.clip(np.arange(start - k, stop + k), 0, depth - 1)
        block = self.predictor.normalisation.to_model(volume[index])
        windows = np.lib.stride_tricks.sliding_window_view(block, 2 * k + 1, axis=0)
        # sliding_window_view puts the window last: (B, H, W, 2k+1) -> (B, 2k+1, H, W)
        stack = np.ascontiguousarray(np.moveaxis(windows, -1, 1))
        return stack if stack.flags.writeable else stack.copy()

    def noise(self, volume: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Predicted noise in HU for slices start..stop, zero outside the model's HU window."""
        import torch

        k = self.predictor.context
        norm = self.predictor.normalisation
        x = torch.from_numpy(self.stack(volume, start, stop)).to(self.device)
        centre = x[:, k : k + 1]
        denoised = None
        for name in self.symmetries:
            out = _symmetry(self.module(_symmetry(x, name)), name, inverse=True).float()
            denoised = out if denoised is None else denoised + out
        assert denoised is not None
        if len(self.symmetries) > 1:
            denoised = denoised / len(self.symmetries)
        noise = (centre.float() - denoised)[:, 0].cpu().numpy()
        noise *= norm.scale
        noise[norm.outside(volume[start:stop])] = 0.0  # padding, air outside the window, metal
        return noise

    def after_out_of_memory(self, batch: int) -> Tuple[int, _Runner]:
        """Halve the batch on the GPU; at batch 1 continue on the CPU with a warning.

        The network is moved to the CPU for the rest of the run and back to its device
        afterwards, so the caller's module (a model being trained, or a LoadedModel kept
        for the next run) ends where it started.
        """
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch > 1:
            log.warning("Out of GPU memory at batch size %d; retrying with %d.", batch, batch // 2)
            return batch // 2, self
        if self.device.type == "cpu":
            raise InputError("Out of memory on the CPU even at batch size 1; close other programs or denoise "
                             "a smaller volume.")
        message = f"Out of {self.device.type.upper()} memory even at batch size 1; continuing on the CPU."
        warnings.warn(message, stacklevel=3)
        log.warning(message)
        return 1, _Runner(self.predictor, torch.device("cpu"), self.single, self.symmetries)
