"""Physics-based low-dose CT simulation: projection-domain noise insertion, slice by slice.

"What would this scan look like at 25% dose?"  Used both as a user feature and to make
training pairs.

The physics
-----------
A CT detector counts photons.  Along a ray with line integral ``p = ∫ μ ds`` the
expected count is ``N0·exp(−p)`` for ``N0`` incident photons, and the measured line
integral ``p̂ = −log(counts/N0)`` has variance ``≈ exp(p)/N0`` (Poisson statistics,
first order).  Lowering the dose to a fraction ``a`` scales N0 by ``a``, so the
variance becomes ``exp(p)/(a·N0)``; the extra noise a low-dose scan carries on top of
the full-dose one therefore has variance ``(1/a − 1)·exp(p)/N0`` on each line integral.
Rays through dense bone or long paths through the body have large ``p``, hence much
more noise: after reconstruction this gives the typical streaks along bone.

The simulator, for each slice:

1. converts HU to linear attenuation, ``μ = μ_water·(1 + HU/1000)`` with
   ``μ_water = 0.0195 /mm`` (about 70 keV), clipped at 0; padding (−3024) and
   everything outside the field of view count as air;
2. forward projects ``μ`` in parallel-beam geometry (views over 180°, detector bins one
   pixel wide) to get ``p``;
3. draws Gaussian noise with the variance above on every line integral (Gaussian with
   Poisson variance: the standard approximation away from photon starvation);
4. reconstructs *only the noise* by filtered back-projection and adds it, in HU, to
   the input.  The input image itself is never re-projected, so its resolution and
   mean HU are untouched.

The reconstruction filter is a ramp times a Hann apodisation window whose cutoff is the
``texture`` parameter, a fraction of the detector Nyquist frequency: ``0.5`` is a
very smooth grain, ``1`` the classic Hann-filtered ramp, larger values are sharper and
``inf`` is the plain ramp (the grain of a bone kernel).  Fitted to real soft-tissue
kernels at about 0.95 mm pixels: GE STANDARD ≈ 1.1, Siemens Br38f ≈ 1.5.

The two calibrations
--------------------
*Amplitude.*  By default ``N0`` is calibrated on the input's own noise ``σ``, measured
in flat soft tissue (:func:`~LowDoseDenoiseLib.quality.noise.estimate_noise_sd`), so that the
added noise SD in those regions is ``sqrt(1/a − 1)·σ`` and the total is ``σ/sqrt(a)``:
at 25% dose the noise doubles.  ``σ`` is measured over the whole volume, and ``N0`` is
set per slice so that the added SD matches it on every slice, as tube-current
modulation keeps the noise of modern scans roughly constant along z.  An input with
almost no noise of its own (below :data:`NOISELESS_HU`, e.g. the synthetic phantom) is
treated as a full-dose scan with the typical noise of :data:`TYPICAL_FULL_DOSE_NOISE_HU`
(10 HU in soft tissue), and a note is logged.  Alternatively ``photons`` fixes ``N0``
(incident photons per detector bin and view, at this projector's sampling: bins one
pixel wide, ``views`` views over 180°), which scales the noise with the patient's size
like a fixed tube current.

*Texture.*  Real reconstruction kernels give smoother noise than a plain ramp.  With
``texture="auto"`` the Hann cutoff is fitted so that the radial noise power spectrum
of the simulated noise has the shape of the input's own noise NPS, measured in flat
soft-tissue ROIs (:func:`fit_texture`).  A noise-free input gets
:data:`DEFAULT_TEXTURE`.  Training code can set ``texture`` explicitly, e.g. sampled
between 0.4 and 2, to see sharp to smooth grain, and can use :func:`noise_field` to
precompute unit noise once and scale it for any dose.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from .noise import (
    SOFT_TISSUE_HU,
    density_mode,
    flat_regions,
    flat_rois,
    local_mean_sd,
    measure_noise,
    noise_power_spectrum_2d,
    radial_nps,
    spacing_xy,
)

__all__ = [
    "DEFAULT_TEXTURE",
    "MU_WATER_PER_MM",
    "NOISELESS_HU",
    "PADDING_HU",
    "TEXTURE_RANGE",
    "TYPICAL_FULL_DOSE_NOISE_HU",
    "SimulationInfo",
    "Spacing",
    "Texture",
    "check_dose",
    "default_views",
    "fit_texture",
    "noise_field",
    "simulate_low_dose",
]


log = logging.getLogger(__name__)

#: Linear attenuation of water (1/mm) at the effective energy of a 120 kV beam.
MU_WATER_PER_MM = 0.0195
#: HU at or below this are padding / outside the field of view, treated as air.
PADDING_HU = -1500.0
#: Typical noise SD (HU) of a full-dose abdominal CT in soft tissue: the fallback reference.
TYPICAL_FULL_DOSE_NOISE_HU = 10.0
#: Inputs whose own noise is below this (HU) count as noise-free.
NOISELESS_HU = 3.0
#: Texture (Hann cutoff as a fraction of Nyquist) used when it cannot be fitted.
DEFAULT_TEXTURE = 1.0
#: Range searched by the texture fit.
TEXTURE_RANGE = (0.2, 4.0)
#: Forward projection runs on images at most this wide (the noise variance is smooth).
_PROJECTION_SIZE = 256

Texture = Union[str, float]
Spacing = Union[float, Sequence[float]]


@dataclass
class SimulationInfo:
    """What :func:`simulate_low_dose` did: the calibration it used, for logs and reports."""

    dose_fraction: float
    texture: float
    input_noise_hu: Optional[float]
    added_noise_hu: Optional[float]
    photons: List[float] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- validation


def _check_hu(hu: np.ndarray) -> np.ndarray:
    array = np.asarray(hu)
    if array.ndim not in (2, 3):
        raise InputError(f"Low-dose simulation needs a 2D slice or a 3D (z, y, x) volume; got shape {array.shape}.")
    if array.size == 0 or min(array.shape) == 0:
        raise InputError("Low-dose simulation got an empty volume.")
    if min(array.shape[-2:]) < 16:
        raise InputError(f"Slices of {array.shape[-2]}×{array.shape[-1]} pixels are too small to simulate.")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"The volume must hold real numbers (HU); got {array.dtype}.")
    if not np.all(np.isfinite(array)):
        raise InputError("The volume contains NaN or infinite values; fix or mask them before simulating.")
    return array


def check_dose(dose_fraction: float) -> float:
    """The dose fraction as a float in (0, 1], or an InputError that says what a dose fraction is."""
    try:
        dose = float(dose_fraction)
    except (TypeError, ValueError):
        raise InputError(f"The dose fraction must be a number in (0, 1]; got {dose_fraction!r}.") from None
    if not math.isfinite(dose) or not 0.0 < dose <= 1.0:
        raise InputError(
            f"The dose fraction must be in (0, 1] (e.g. 0.25 for a quarter of the dose); got {dose_fraction!r}."
        )
    return dose


def _check_texture(texture: Texture) -> Union[str, float]:
    """``'auto'`` or a valid Hann cutoff (see :func:`_check_texture_value`)."""
    if isinstance(texture, str) and texture == "auto":
        return "auto"
    return _check_texture_value(texture)


def _check_texture_value(texture: Texture) -> float:
    """A Hann cutoff fraction of Nyquist > 0 (``inf`` = ramp filter); 'auto' is refused."""
    if isinstance(texture, str):
        raise InputError(f"texture must be 'auto' or a Hann cutoff fraction of Nyquist > 0; got {texture!r}.")
    try:
        value = float(texture)
    except (TypeError, ValueError):
        raise InputError(f"texture must be 'auto' or a number > 0; got {texture!r}.") from None
    if math.isnan(value) or value <= 0:
        raise InputError(f"texture (Hann cutoff as a fraction of Nyquist) must be > 0; got {texture!r}.")
    return value


def _check_photons(photons: Optional[float]) -> Optional[float]:
    """None (calibrate from the input's noise) or a valid photon count."""
    if photons is None:
        return None
    return _check_photon_count(photons)


def _check_photon_count(photons: float) -> float:
    try:
        value = float(photons)
    except (TypeError, ValueError):
        raise InputError(f"photons must be a positive number; got {photons!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"photons (incident photons per detector bin and view) must be > 0; got {photons!r}.")
    return value


# --------------------------------------------------------------------------- projector


@dataclass
class _Geometry:
    """Parallel-beam geometry for a (ny, nx) slice with pixel size (sx, sy) mm."""

    ny: int
    nx: int
    sx: float
    sy: float
    views: int

    @property
    def bin_width(self) -> float:
        return min(self.sx, self.sy)

    @property
    def bins(self) -> int:
        half = 0.5 * math.hypot(self.nx * self.sx, self.ny * self.sy) / self.bin_width
        return 2 * int(math.ceil(half)) + 3

    def angles(self) -> np.ndarray:
        return np.arange(self.views) * (math.pi / self.views)


def default_views(shape: Tuple[int, int]) -> int:
    """Number of views over 180° used by default: about 0.75 per pixel of the larger side."""
    return max(32, 4 * int(math.ceil(0.75 * max(shape) / 4)))


def _attenuation(hu: np.ndarray) -> np.ndarray:
    """HU to linear attenuation (1/mm); padding and air give 0."""
    hu = np.where(hu <= PADDING_HU, -1000.0, hu)
    return np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)


def _forward_project(mu, geometry: _Geometry):
    """Line integrals p (views, z, bins) of attenuation mu (z, ny, nx) (torch tensors).

    The noise variance exp(p) only needs p at the scale of anatomy, so the image is
    projected at most :data:`_PROJECTION_SIZE` pixels wide and at every fourth view,
    then interpolated onto the detector bins and views.
    """
    import torch
    import torch.nn.functional as F

    nz, ny, nx = mu.shape
    factor = max(1, int(math.ceil(max(ny, nx) / _PROJECTION_SIZE)))
    if factor > 1:
        pad_y, pad_x = (-ny) % factor, (-nx) % factor
        mu = F.avg_pool2d(F.pad(mu[None], (0, pad_x, 0, pad_y)), factor)[0]
    cy, cx = mu.shape[-2:]
    sx, sy = geometry.sx * factor, geometry.sy * factor
    # The padded coarse grid is shifted by half the padding; shift the rays with it.
    shift_x, shift_y = 0.5 * (cx * sx - nx * geometry.sx), 0.5 * (cy * sy - ny * geometry.sy)
    step = min(sx, sy)
    n_t = 2 * int(math.ceil(0.5 * math.hypot(cx * sx, cy * sy) / step)) + 3
    coarse_views = max(8, geometry.views // 4)
    angles = torch.arange(coarse_views, dtype=torch.float32) * (math.pi / coarse_views)
    t = (torch.arange(n_t, dtype=torch.float32) - (n_t - 1) / 2) * step
    # Normalised image coordinates (grid_sample, align_corners=False) of the sample at
    # (view, s, t): x = t cos − s sin, y = t sin + s cos, shifted with the padded grid.
    tx, ty = t * (2.0 / (cx * sx)), t * (2.0 / (cy * sy))
    ox, oy = 2.0 * shift_x / (cx * sx), 2.0 * shift_y / (cy * sy)
    coarse = torch.empty(coarse_views + 1, nz, n_t)
    chunk = 8
    grid = torch.empty(chunk, n_t, n_t, 2)
    for start in range(0, coarse_views, chunk):
        theta = angles[start : start + chunk]
        b = len(theta)
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        grid[:b, ..., 0] = tx[None, None, :] * cos - tx[None, :, None] * sin - ox
        grid[:b, ..., 1] = ty[None, None, :] * sin + ty[None, :, None] * cos - oy
        image = mu[None].expand(b, nz, cy, cx)
        sampled = F.grid_sample(image, grid[:b], mode="bilinear", padding_mode="zeros", align_corners=False)
        coarse[start : start + b] = sampled.sum(dim=2) * step
    coarse[-1] = coarse[0].flip(-1)  # the view at 180° is the view at 0° mirrored
    # Interpolate onto the detector's views and bins.
    position = torch.arange(geometry.views, dtype=torch.float32) * (coarse_views / geometry.views)
    low = position.floor().long()
    weight = (position - low)[:, None, None]
    by_view = coarse[low] * (1 - weight) + coarse[low + 1] * weight
    fine = (torch.arange(geometry.bins, dtype=torch.float32) - (geometry.bins - 1) / 2) * geometry.bin_width
    position = (fine / step + (n_t - 1) / 2).clamp(0, n_t - 1)
    low = position.floor().long().clamp(max=n_t - 2)
    weight = position - low
    return by_view[..., low] * (1 - weight) + by_view[..., low + 1] * weight


def _filter_kernel(geometry: _Geometry, texture: float, length: int):
    """Frequency response (rfft of length ``length``) of ramp × Hann(cutoff = texture·Nyquist)."""
    import torch

    d = geometry.bin_width
    n = np.arange(-(length // 2), length - length // 2)
    h = np.zeros(length)
    h[n == 0] = 1.0 / (4 * d * d)
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd] * d) ** 2
    ramp = np.abs(np.fft.rfft(np.fft.ifftshift(h))) * d  # the discrete ramp, exact at zero frequency
    frac = np.fft.rfftfreq(length) * 2.0  # fraction of Nyquist
    if math.isinf(texture):
        window = np.ones_like(frac)
    else:
        window = np.where(frac < texture, 0.5 * (1 + np.cos(np.pi * np.minimum(frac / texture, 1.0))), 0.0)
    return torch.as_tensor(ramp * window, dtype=torch.float32)


def _back_project(q, geometry: _Geometry):
    """Back-project filtered projections q (views, z, bins) onto (z, ny, nx)."""
    import torch
    import torch.nn.functional as F

    views, nz, bins = q.shape
    angles = torch.as_tensor(geometry.angles(), dtype=torch.float32)
    # Normalised bin coordinate of each pixel (grid_sample, align_corners=False):
    # 2t/(d·bins) with t = x cos + y sin; the row coordinate stays 0.
    scale = 2.0 / (geometry.bin_width * bins)
    x = (torch.arange(geometry.nx, dtype=torch.float32) - (geometry.nx - 1) / 2) * (geometry.sx * scale)
    y = (torch.arange(geometry.ny, dtype=torch.float32) - (geometry.ny - 1) / 2) * (geometry.sy * scale)
    image = torch.zeros(nz, geometry.ny, geometry.nx)
    chunk = 8
    grid = torch.zeros(chunk, geometry.ny, geometry.nx, 2)
    for start in range(0, views, chunk):
        theta = angles[start : start + chunk]
        b = len(theta)
        grid[:b, ..., 0] = x[None, None, :] * torch.cos(theta)[:, None, None] + (
            y[None, :, None] * torch.sin(theta)[:, None, None]
        )
        rows = q[start : start + b, :, None, :]  # (views, z, 1, bins)
        sampled = F.grid_sample(rows, grid[:b], mode="bilinear", padding_mode="zeros", align_corners=False)
        image += sampled.sum(dim=0)
    return image * (math.pi / views)


def noise_field(
    hu: np.ndarray,
    spacing: Spacing,
    texture: float = DEFAULT_TEXTURE,
    photons: float = 1.0,
    seed: Optional[int] = None,
    views: Optional[int] = None,
    slice_batch: int = 4,
) -> np.ndarray:
    """Reconstructed quantum noise (HU, float32, same shape) of a scan with ``photons`` N0.

    Each line integral gets Gaussian noise of variance ``exp(p)/photons`` and the noise
    alone is reconstructed with the ramp × Hann(``texture``) filter.  The low-level
    building block of :func:`simulate_low_dose`: for dose fraction ``a`` the added
    noise is ``noise_field(..., photons=N0) * sqrt(1/a - 1)``, so training code can
    compute a unit field (``photons=1``) once and scale it for any dose and N0.
    """
    import torch

    array = _check_hu(hu)
    sx, sy = spacing_xy(spacing)
    value = _check_texture_value(texture)
    n0 = _check_photon_count(photons)
    volume = array[None] if array.ndim == 2 else array
    nz, ny, nx = volume.shape
    geometry = _Geometry(ny, nx, sx, sy, int(views) if views else default_views((ny, nx)))
    if geometry.views < 8:
        raise InputError(f"At least 8 views are needed; got {views}.")
    length = 1 << int(math.ceil(math.log2(2 * geometry.bins)))
    kernel = _filter_kernel(geometry, value, length)
    rng = np.random.default_rng(seed)
    out = np.empty(volume.shape, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, nz, slice_batch):
            block = np.asarray(volume[start : start + slice_batch], dtype=np.float32)
            mu = torch.from_numpy(_attenuation(block))
            p = _forward_project(mu, geometry)  # (views, z, bins)
            draws = np.stack(
                [rng.standard_normal((geometry.views, geometry.bins), dtype=np.float32) for _ in block], axis=1
            )
            noise = torch.from_numpy(draws) * torch.exp(0.5 * p) / math.sqrt(n0)
            spectrum = torch.fft.rfft(noise, n=length, dim=-1) * kernel
            filtered = torch.fft.irfft(spectrum, n=length, dim=-1)[..., : geometry.bins]
            image = _back_project(filtered.contiguous(), geometry)
            out[start : start + slice_batch] = (image * (1000.0 / MU_WATER_PER_MM)).numpy()
    return out[0] if array.ndim == 2 else out


# --------------------------------------------------------------------------- texture


def _hann(frac: np.ndarray, texture: float) -> np.ndarray:
    if math.isinf(texture):
        return np.ones_like(frac)
    return np.where(frac < texture, 0.5 * (1 + np.cos(np.pi * np.minimum(frac / texture, 1.0))), 0.0)


def _roi_size(shape: Tuple[int, int]) -> int:
    return int(min(64, max(16, min(shape) // 16)))


def fit_texture(
    hu: np.ndarray,
    spacing: Spacing,
    roi_size: Optional[int] = None,
    max_slices: int = 2,
    views: Optional[int] = None,
    seed: int = 0,
) -> Optional[float]:
    """Hann cutoff (fraction of Nyquist) whose noise texture best matches the input's noise.

    The input's radial NPS is measured in flat soft-tissue ROIs of the ``max_slices``
    slices that have most of them.  Unit noise with a plain ramp filter is simulated on
    the same slices and measured in the same ROIs; since the Hann window multiplies
    every projection's spectrum, and so the image spectrum, the NPS for cutoff ``c`` is
    that ramp NPS times ``Hann_c(f)²``.  The cutoff whose normalised NPS shape is
    closest (least squares) to the input's wins.  Returns None when the input has too
    few flat ROIs (fewer than 3) to measure its NPS.
    """
    array = _check_hu(hu)
    sx, sy = spacing_xy(spacing)
    volume = array[None] if array.ndim == 2 else array
    size = int(roi_size) if roi_size else _roi_size(volume.shape[-2:])
    candidates = _sample_slices(volume.shape[0], 5)
    counts = [int(flat_regions(volume[z], size).sum()) for z in candidates]
    order = np.argsort(counts)[::-1][:max_slices]
    chosen = sorted(candidates[i] for i in order if counts[i] > 0)
    if not chosen:
        return None
    sub = np.asarray(volume[chosen], dtype=np.float32)
    rois, positions = flat_rois(sub, size)
    if len(rois) < 3:
        return None
    nyquist = 0.5 / min(sx, sy)
    freq, target = radial_nps(noise_power_spectrum_2d(rois, (sx, sy), detrend="plane"), (sx, sy))
    ramp_noise = noise_field(sub, (sx, sy), texture=math.inf, seed=seed, views=views)
    ramp_rois = np.stack([ramp_noise[z, r : r + size, c : c + size] for z, r, c in positions])
    _, ramp_nps = radial_nps(noise_power_spectrum_2d(ramp_rois, (sx, sy), detrend="plane"), (sx, sy))
    frac = freq / nyquist
    # Anatomy left in the ROIs (texture, faint edges) adds power at low frequencies only;
    # compare the shapes above a fifth of Nyquist, where the kernels differ.
    band = frac >= 0.2
    target = target[band] / target[band].sum()
    grid = np.exp(np.linspace(math.log(TEXTURE_RANGE[0]), math.log(TEXTURE_RANGE[1]), 121))
    errors = []
    for cutoff in grid:
        model = (ramp_nps * _hann(frac, cutoff) ** 2)[band]
        total = model.sum()
        errors.append(np.inf if total <= 0 else float(np.sum((model / total - target) ** 2)))
    return float(grid[int(np.argmin(errors))])


def _sample_slices(nz: int, count: int) -> List[int]:
    """Up to ``count`` evenly spaced slice indices."""
    if nz <= count:
        return list(range(nz))
    return sorted({int(round(i)) for i in np.linspace(0, nz - 1, count)})


# --------------------------------------------------------------------------- simulation


def _unit_sd(unit: np.ndarray, hu_slice: np.ndarray, window: int, sigma: float, noiseless: bool) -> Optional[float]:
    """SD of the unit noise where the input's own noise was measured, or None if too few windows.

    For a noisy input, the windows are the flat ones whose local SD lies within 15% of
    the input's noise mode ``sigma`` (pure-noise windows), and the unit noise's RMS
    local SD there is used; the noise of a real scan is not stationary, so matching it
    where it was measured matters.  For a noise-free input, the mode over all flat
    windows is used, as for ``sigma`` itself.
    """
    flat = flat_regions(hu_slice, window)
    if noiseless:
        if flat.sum() < 50:
            return None
        _, unit_sd = local_mean_sd(unit, window)
        return density_mode(unit_sd[flat])
    _, input_sd = local_mean_sd(hu_slice, window)
    chosen = flat & (np.abs(np.nan_to_num(input_sd) - sigma) <= 0.15 * sigma)
    if chosen.sum() < 50:
        return None
    _, unit_sd = local_mean_sd(unit, window)
    return float(np.sqrt(np.mean(unit_sd[chosen] ** 2)))


def simulate_low_dose(
    hu: np.ndarray,
    spacing: Spacing,
    dose_fraction: float,
    seed: Optional[int] = None,
    photons: Optional[float] = None,
    texture: Texture = "auto",
    input_noise_hu: Optional[float] = None,
    views: Optional[int] = None,
    window: int = 11,
    return_info: bool = False,
):
    """Simulate a scan at ``dose_fraction`` of the input's dose (float32 HU, same shape).

    ``hu`` is a (z, y, x) volume or a 2D slice, ``spacing`` the pixel size (x, y[, z]) in
    mm.  By default the added noise is calibrated on the input's own noise (total noise
    ``σ/sqrt(a)``); ``photons`` fixes N0 instead and ``input_noise_hu`` overrides the
    measured ``σ``.  ``texture`` is 'auto' (fitted to the input's noise power spectrum)
    or a Hann cutoff fraction of Nyquist.  The module docstring explains the physics.
    With ``return_info`` the result is ``(hu, SimulationInfo)``.
    """
    array = _check_hu(hu)
    sx, sy = spacing_xy(spacing)
    dose = check_dose(dose_fraction)
    n0 = _check_photons(photons)
    wanted_texture = _check_texture(texture)
    if input_noise_hu is not None:
        input_noise_hu = float(input_noise_hu)
        if not math.isfinite(input_noise_hu) or input_noise_hu <= 0:
            raise InputError(f"input_noise_hu must be a positive noise SD in HU; got {input_noise_hu!r}.")
    volume = array[None] if array.ndim == 2 else array
    info = SimulationInfo(dose_fraction=dose, texture=float("nan"), input_noise_hu=None, added_noise_hu=None)

    if dose == 1.0:
        out = np.array(array, dtype=np.float32)
        info.notes.append("Dose fraction 1: nothing added.")
        return (out, info) if return_info else out

    sigma = input_noise_hu
    noiseless = False
    if sigma is None and (n0 is None or wanted_texture == "auto"):
        measured = measure_noise(volume[_sample_slices(volume.shape[0], 16)], window)
        if measured.n_windows == 0:
            if n0 is None:
                raise InputError(
                    "Cannot calibrate the simulated dose: the volume has no flat soft-tissue region "
                    f"({SOFT_TISSUE_HU[0]:g} to {SOFT_TISSUE_HU[1]:g} HU) to measure its noise in. "
                    "Check that it is a body CT in HU, or give a fixed photon count (photons=...)."
                )
        elif measured.sd < NOISELESS_HU:
            noiseless = True
            info.notes.append(
                f"The input has almost no noise of its own ({measured.sd:.1f} HU < {NOISELESS_HU:g} HU); "
                f"it is treated as a full-dose scan with the typical {TYPICAL_FULL_DOSE_NOISE_HU:g} HU "
                "of soft-tissue noise."
            )
            sigma = TYPICAL_FULL_DOSE_NOISE_HU if n0 is None else None
        else:
            sigma = measured.sd if n0 is None else None
            info.input_noise_hu = measured.sd
    if sigma is not None:
        info.input_noise_hu = sigma

    if wanted_texture == "auto":
        fitted = None if noiseless else fit_texture(volume, (sx, sy), views=views, seed=0)
        if fitted is None:
            fitted = DEFAULT_TEXTURE
            if not noiseless:
                info.notes.append(
                    f"Too few flat soft-tissue areas to measure the noise texture; using {DEFAULT_TEXTURE:g}."
                )
        info.texture = fitted
    else:
        info.texture = float(wanted_texture)

    unit = noise_field(volume, (sx, sy), texture=info.texture, photons=1.0, seed=seed, views=views)
    gain = math.sqrt(1.0 / dose - 1.0)
    out = np.empty(volume.shape, dtype=np.float32)
    if n0 is not None:
        scales = [gain / math.sqrt(n0)] * volume.shape[0]
        info.photons = [n0] * volume.shape[0]
    else:
        assert sigma is not None  # without photons the input's noise was measured (or refused) above
        by_mode = input_noise_hu is None and not noiseless
        unit_sds = [_unit_sd(unit[z], volume[z], window, sigma, not by_mode) for z in range(volume.shape[0])]
        known = [v for v in unit_sds if v]
        if known:
            pooled = float(np.median(known))
        else:  # no flat tissue anywhere: use the noise SD inside the body
            body = volume > -500
            pooled = float(unit[body].std()) if body.any() else float(unit.std())
        filled = [v if v else pooled for v in unit_sds]
        scales = [gain * sigma / v for v in filled]
        info.photons = [(v / sigma) ** 2 for v in filled]
        info.added_noise_hu = gain * sigma
    for z in range(volume.shape[0]):
        out[z] = volume[z] + scales[z] * unit[z]
    for note in info.notes:
        log.info(note)
    log.info(
        "Simulated %.0f%% dose: texture %.2f of Nyquist, input noise %s HU, added noise %s HU.",
        100 * dose,
        info.texture,
        "n/a" if info.input_noise_hu is None else f"{info.input_noise_hu:.1f}",
        "n/a" if info.added_noise_hu is None else f"{info.added_noise_hu:.1f}",
    )
    result = out[0] if array.ndim == 2 else out
    return (result, info) if return_info else result
