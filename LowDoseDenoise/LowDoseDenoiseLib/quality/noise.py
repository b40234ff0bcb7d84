"""Noise measurement on CT images: noise SD in flat soft tissue, and noise power spectra.

Shared by the low-dose simulator (which calibrates itself on the input's own noise)
and by the quality metrics.  Pure numpy, HU in, HU out.

How the noise SD is measured (:func:`measure_noise`, the one noise estimator of the
project: the simulator's calibration, the metrics, the benchmarks, the model card and
training validation all use it):

* The local mean and SD are computed in every ``window`` × ``window`` square
  (default 11 × 11 pixels) of each slice (box filter; SD with n − 1).
* The candidate windows are either the windows lying wholly inside a given ``mask``
  (a liver ROI, a drawn region), or, without a mask, the *flat soft-tissue regions*:
  windows whose mean is soft-tissue-like (fat to enhanced liver, ``hu_range``) and whose
  pixels all stay in a body-tissue band (no air, no bone).
* Windows that straddle an organ edge, a vessel or a lesion have an inflated SD, so a
  mean or median over windows is biased upwards.  Pure-noise windows form a narrow
  peak at the lowest SDs, so the estimate is the *mode* of the distribution of local
  SDs (as in the "global noise index" of Christianson et al., AJR 2015), found with a
  kernel density estimate.  It ignores edges without needing a segmentation.
* A window's SD is taken around its own mean, which removes the noise power at
  frequencies below about 1/window; for the fine-grained noise of CT this costs a few
  percent at most.
* A mask narrower than a window (fewer than :data:`MIN_WINDOWS` windows fit) gets the
  plain SD of its voxels instead, and the estimate says so.

Noise power spectra follow the usual definition: ``NPS(fx, fy) = (Δx Δy / (Nx Ny))
· <|DFT(ROI − trend)|²>`` in HU²·mm², so that its integral over frequency equals the
noise variance.  Spacings are given in the (x, y) = (column, row) order of
:class:`~LowDoseDenoiseLib.volume.Volume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError

__all__ = [
    "MIN_WINDOWS",
    "NOISE_WINDOW",
    "NPS_CHUNK",
    "SOFT_TISSUE_HU",
    "TISSUE_BAND_HU",
    "NoiseEstimate",
    "density_mode",
    "detrend_rois",
    "estimate_noise_sd",
    "flat_regions",
    "flat_rois",
    "local_mean_sd",
    "mean_frequency",
    "measure_noise",
    "noise_power_spectrum_2d",
    "nps_frequencies",
    "peak_frequency",
    "radial_nps",
    "sliding_extreme",
    "spacing_xy",
]

#: Local means inside this HU range count as soft tissue (fat to enhanced parenchyma).
SOFT_TISSUE_HU = (-150.0, 250.0)
#: Every pixel of a flat window must lie inside this band (excludes air and bone).
TISSUE_BAND_HU = (-500.0, 500.0)
#: The default window of the local SDs (pixels).
NOISE_WINDOW = 11
#: Fewer candidate windows than this in a mask: the plain SD of the mask is reported.
MIN_WINDOWS = 10

Spacing = Union[float, Sequence[float]]


@dataclass
class NoiseEstimate:
    """The result of :func:`measure_noise`.

    ``sd`` is the noise SD in HU (NaN when no candidate window was found); ``n_windows``
    the number of candidate windows it rests on; ``flat`` the boolean map of their
    centres (same shape as the input); ``method`` says how ``sd`` was obtained.
    """

    sd: float
    n_windows: int
    window: int
    flat: np.ndarray
    method: str = "mode of local SDs"


def _checked_array(hu: np.ndarray) -> np.ndarray:
    """``hu`` as an array of 2 or 3 dimensions with voxels, in its own type."""
    array = np.asarray(hu)
    if array.ndim not in (2, 3):
        raise InputError(
            f"Noise measurement needs a 2D slice or a 3D (z, y, x) volume; got an array of shape {array.shape}."
        )
    if array.size == 0:
        raise InputError("Noise measurement got an empty image.")
    return array


def _as_float_array(hu: np.ndarray) -> np.ndarray:
    return np.asarray(_checked_array(hu), dtype=np.float64)


def _check_window(window: int, shape: Tuple[int, ...]) -> int:
    window = int(window)
    if window < 3:
        raise InputError(f"The noise window must be at least 3 pixels wide; got {window}.")
    if window > min(shape[-2:]):
        raise InputError(
            f"The noise window ({window} pixels) is larger than the slice ({shape[-2]}×{shape[-1]}); "
            "use a smaller window."
        )
    return window


def _box_sum(image: np.ndarray, window: int) -> np.ndarray:
    """Sums over every window × window square of the last two axes ('valid' positions)."""
    c = np.cumsum(np.cumsum(image, axis=-2), axis=-1)
    c = np.pad(c, [(0, 0)] * (image.ndim - 2) + [(1, 0), (1, 0)])
    w = window
    return c[..., w:, w:] - c[..., :-w, w:] - c[..., w:, :-w] + c[..., :-w, :-w]


def sliding_extreme(image: np.ndarray, window: int, func) -> np.ndarray:
    """Running min or max over window × window squares ('valid' positions), separably."""
    view = np.lib.stride_tricks.sliding_window_view(image, window, axis=-1)
    rows = func(view, axis=-1)
    view = np.lib.stride_tricks.sliding_window_view(rows, window, axis=-2)
    return func(view, axis=-1)


def _to_centres(valid: np.ndarray, window: int, shape: Tuple[int, ...], fill) -> np.ndarray:
    """Place 'valid' window results at their window centres in a full-size array."""
    out = np.full(shape, fill, dtype=valid.dtype)
    h = window // 2
    out[..., h : h + valid.shape[-2], h : h + valid.shape[-1]] = valid
    return out


def local_mean_sd(hu: np.ndarray, window: int = 11,
                  offset: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and SD (HU) of the window × window square centred on each pixel.

    Works slice by slice on 2D or 3D (z, y, x) arrays.  Pixels closer than window/2 to
    the border get NaN.  ``offset`` (default: the median) is subtracted first to keep the
    sums of squares well conditioned; give the whole volume's when measuring part of it.
    """
    image = _as_float_array(hu)
    window = _check_window(window, image.shape)
    offset = np.median(image) if offset is None else offset
    image = image - offset
    n = float(window * window)
    mean = _box_sum(image, window) / n
    var = _box_sum(image * image, window) / n - mean * mean
    sd = np.sqrt(np.maximum(var * n / (n - 1.0), 0.0))
    return (
        _to_centres(mean + offset, window, image.shape, np.nan),
        _to_centres(sd, window, image.shape, np.nan),
    )


def flat_regions(
    hu: np.ndarray,
    window: int = 11,
    hu_range: Tuple[float, float] = SOFT_TISSUE_HU,
    tissue_band: Tuple[float, float] = TISSUE_BAND_HU,
) -> np.ndarray:
    """Boolean map of the centres of soft-tissue windows free of air and bone.

    A pixel is marked when the window × window square around it has a mean inside
    ``hu_range`` and every pixel inside ``tissue_band``.  Edges between soft tissues
    are not excluded here; :func:`measure_noise` deals with them statistically.
    """
    image = _as_float_array(hu)
    window = _check_window(window, image.shape)
    mean = _box_sum(image, window) / float(window * window)
    low = sliding_extreme(image, window, np.min)
    high = sliding_extreme(image, window, np.max)
    valid = (mean >= hu_range[0]) & (mean <= hu_range[1]) & (low >= tissue_band[0]) & (high <= tissue_band[1])
    return _to_centres(valid, window, image.shape, False)


def density_mode(values: np.ndarray) -> float:
    """Mode of a sample, from a Gaussian kernel density estimate (Silverman bandwidth).

    Used on local SDs: the pure-noise windows pile up at the mode, edge windows form
    a tail above it.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    if values.size == 1:
        return float(values[0])
    high = np.percentile(values, 95)
    core = values[values <= high]
    q25, q75 = np.percentile(core, [25, 75])
    spread = min(np.std(core), (q75 - q25) / 1.349) if q75 > q25 else np.std(core)
    if spread <= 0:
        return float(np.median(core))
    bandwidth = 0.9 * spread * core.size ** (-0.2)
    grid = np.linspace(core.min(), high, 512)
    hist, edges = np.histogram(core, bins=2048, range=(core.min(), high + 1e-12))
    centres = 0.5 * (edges[:-1] + edges[1:])
    density = np.zeros_like(grid)
    for start in range(0, grid.size, 128):  # chunks keep the kernel matrix small
        part = grid[start : start + 128, None]
        density[start : start + 128] = (hist * np.exp(-0.5 * ((part - centres) / bandwidth) ** 2)).sum(axis=1)
    return float(grid[int(np.argmax(density))])


def measure_noise(
    hu: np.ndarray,
    window: int = NOISE_WINDOW,
    hu_range: Tuple[float, float] = SOFT_TISSUE_HU,
    tissue_band: Tuple[float, float] = TISSUE_BAND_HU,
    max_windows: int = 200_000,
    seed: int = 0,
    mask: Optional[np.ndarray] = None,
) -> NoiseEstimate:
    """Noise SD (HU) of a slice or volume, with the windows used (see the module docstring).

    Without ``mask`` the candidates are the flat soft-tissue windows; with it, the
    windows lying wholly inside the mask (same shape as ``hu``).  The estimate is the
    mode of their local SDs; at most ``max_windows`` of them, drawn with ``seed``, enter it.
    """
    if mask is not None:
        return _measure_in_mask(hu, mask, window, max_windows, seed)
    image = _as_float_array(hu)
    window = _check_window(window, image.shape)
    candidates = flat_regions(image, window, hu_range, tissue_band)
    count = int(candidates.sum())
    if count == 0:
        return NoiseEstimate(float("nan"), 0, window, candidates)
    _, sd_map = local_mean_sd(image, window)
    values = sd_map[candidates]
    if values.size > max_windows:
        values = np.random.default_rng(seed).choice(values, max_windows, replace=False)
    return NoiseEstimate(density_mode(values), count, window, candidates)


def _median(values: np.ndarray) -> float:
    """np.median of ``values`` as float64 would give it, without a float64 copy of an int16 or float32 volume."""
    flat = np.ravel(values)
    middle = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, middle)[middle])
    part = np.partition(flat, [middle - 1, middle])
    return float(np.mean(np.asarray(part[middle - 1 : middle + 1], dtype=np.float64)))


def _measure_in_mask(hu: np.ndarray, mask: np.ndarray, window: int, max_windows: int, seed: int) -> NoiseEstimate:
    """:func:`measure_noise` inside ``mask``, on the slices the mask touches only (the windows are in-plane),
    converted to float64 there alone: an ROI on a 300-slice series costs its slices, not the volume."""
    image = _checked_array(hu)
    window = _check_window(window, image.shape)
    region = np.asarray(mask)
    if region.shape != image.shape:
        raise InputError(f"The noise mask has shape {region.shape} but the image has {image.shape}; they must match.")
    region = region.astype(bool)
    if not region.any():
        raise InputError("The noise mask is empty (no voxels selected); draw or choose a non-empty region.")
    volume, region3 = (image[None], region[None]) if image.ndim == 2 else (image, region)
    touched = np.flatnonzero(region3.reshape(region3.shape[0], -1).any(axis=1))
    part = slice(int(touched[0]), int(touched[-1]) + 1)
    inside = _windows_inside(region3[part], window)
    candidates = np.zeros(region3.shape, bool)
    candidates[part] = inside
    candidates = candidates[0] if image.ndim == 2 else candidates
    count = int(inside.sum())
    if count < MIN_WINDOWS:
        values = np.asarray(image[region], dtype=np.float64)
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return NoiseEstimate(sd, count, window, candidates, "plain SD of the region (narrower than a window)")
    _, sd_map = local_mean_sd(np.asarray(volume[part], dtype=np.float64), window, offset=_median(image))
    values = sd_map[inside]
    if values.size > max_windows:
        values = np.random.default_rng(seed).choice(values, max_windows, replace=False)
    return NoiseEstimate(density_mode(values), count, window, candidates)


def _windows_inside(region: np.ndarray, window: int) -> np.ndarray:
    """Centres of the window × window squares lying wholly inside ``region`` (slice by slice)."""
    inside = _box_sum(region.astype(np.float64), window) >= window * window - 0.5
    return _to_centres(inside, window, region.shape, False)


def estimate_noise_sd(
    hu: np.ndarray,
    window: int = NOISE_WINDOW,
    hu_range: Tuple[float, float] = SOFT_TISSUE_HU,
    tissue_band: Tuple[float, float] = TISSUE_BAND_HU,
    mask: Optional[np.ndarray] = None,
) -> float:
    """Noise SD in HU of a 2D slice or 3D volume: :func:`measure_noise`'s estimate.

    In flat soft tissue found automatically, or inside ``mask`` (a liver ROI, say).
    Raises :class:`InputError` when there is nothing to measure in.
    """
    estimate = measure_noise(hu, window, hu_range, tissue_band, mask=mask)
    if estimate.n_windows == 0 and mask is None:
        raise InputError(
            "Cannot measure the image noise: no flat soft-tissue region "
            f"({hu_range[0]:g} to {hu_range[1]:g} HU over {window}×{window} pixels) was found. "
            "Check that this is a CT image in Hounsfield units that contains the body."
        )
    return estimate.sd


def spacing_xy(spacing: Spacing) -> Tuple[float, float]:
    """The in-plane (x, y) pixel size in mm from a scalar, (x, y) or (x, y, z) spacing.

    Shared by the simulator and the metrics so every function refuses bad spacing alike.
    """
    try:
        values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        raise InputError(f"Pixel spacing must be numbers in mm, (x, y[, z]); got {spacing!r}.") from None
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.size not in (2, 3) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"Pixel spacing must be positive millimetres, (x, y[, z]); got {spacing!r}.")
    return float(values[0]), float(values[1])


def flat_rois(
    hu: np.ndarray,
    size: int = 32,
    hu_range: Tuple[float, float] = SOFT_TISSUE_HU,
    tissue_band: Tuple[float, float] = TISSUE_BAND_HU,
    max_sd_ratio: float = 1.3,
) -> Tuple[np.ndarray, np.ndarray]:
    """Non-overlapping size × size ROIs of flat soft tissue, for noise power spectra.

    The slices are tiled into size × size squares; a square is kept when it is a flat
    region (see :func:`flat_regions`) and its SD is at most ``max_sd_ratio`` times the
    mode of the squares' SDs (which drops squares with edges).  Returns the ROIs as an
    (n, size, size) array and their (slice, row, column) corner positions as (n, 3).
    """
    image = _as_float_array(hu)
    if image.ndim == 2:
        image = image[None]
    size = _check_window(size, image.shape)
    flat = flat_regions(image, size, hu_range, tissue_band)
    nz, ny, nx = image.shape
    h = size // 2
    corners = []
    for z in range(nz):
        for r in range(0, ny - size + 1, size):
            for c in range(0, nx - size + 1, size):
                if flat[z, r + h, c + h]:
                    corners.append((z, r, c))
    if not corners:
        return np.zeros((0, size, size), np.float64), np.zeros((0, 3), np.int64)
    positions = np.asarray(corners, dtype=np.int64)
    rois = np.stack([image[z, r : r + size, c : c + size] for z, r, c in corners])
    sds = rois.reshape(len(rois), -1).std(axis=1)
    keep = sds <= max_sd_ratio * density_mode(sds)
    return rois[keep], positions[keep]


def detrend_rois(rois: np.ndarray, method: str = "plane") -> np.ndarray:
    """ROIs with their mean ('mean') or best-fit plane ('plane') removed."""
    if method == "mean":
        return rois - rois.mean(axis=(-2, -1), keepdims=True)
    if method == "plane":
        ny, nx = rois.shape[-2:]
        yy, xx = np.mgrid[0:ny, 0:nx]
        design = np.stack([np.ones(ny * nx), yy.ravel(), xx.ravel()], axis=1)
        flat = rois.reshape(len(rois), -1).T
        coef, *_ = np.linalg.lstsq(design, flat, rcond=None)
        return (flat - design @ coef).T.reshape(rois.shape)
    raise InputError(f"Unknown detrend '{method}'; use 'mean' or 'plane'.")


#: ROIs detrended and transformed at a time by :func:`noise_power_spectrum_2d`.
NPS_CHUNK = 256


def noise_power_spectrum_2d(rois: Any, spacing: Spacing, detrend: str = "plane") -> np.ndarray:
    """2D noise power spectrum (HU²·mm²) averaged over ROIs, zero frequency at the centre.

    ``rois`` is (n, ny, nx) or one (ny, nx) ROI of noise-containing HU, or a sequence
    whose slices ``rois[i:j]`` are such arrays (ROIs cut from a volume on demand); each
    ROI has its mean ('mean') or best-fit plane ('plane') removed first.  ``spacing`` is
    the pixel size (x, y) in mm.  Frequencies follow ``np.fft.fftshift(np.fft.fftfreq(n,
    d))``; the sum of the result times Δfx·Δfy equals the ROIs' noise variance.  The ROIs
    are transformed :data:`NPS_CHUNK` at a time and their power summed in order, which is
    the mean over all of them at once, number for number, without their spectra in memory.
    """
    if isinstance(rois, np.ndarray) or not hasattr(rois, "__getitem__") or not hasattr(rois, "__len__"):
        rois = np.asarray(rois, dtype=np.float64)
        if rois.ndim == 2:
            rois = rois[None]
        if rois.ndim != 3 or rois.shape[0] == 0 or min(rois.shape[1:]) < 4:
            raise InputError(f"NPS needs at least one ROI of 4×4 pixels or more; got shape {rois.shape}.")
    count = len(rois)
    total: Optional[np.ndarray] = None
    for start in range(0, count, NPS_CHUNK):
        part = np.asarray(rois[start : start + NPS_CHUNK], dtype=np.float64)
        if part.ndim != 3 or part.shape[0] == 0 or min(part.shape[1:]) < 4:
            raise InputError(f"NPS needs at least one ROI of 4×4 pixels or more; got ROIs of shape {part.shape[1:]}.")
        power = np.abs(np.fft.fft2(detrend_rois(part, detrend))) ** 2
        for roi_power in power:  # in order, as numpy's mean over the first axis adds them
            if total is None:
                total = roi_power.copy()
            else:
                total += roi_power
    if total is None:
        raise InputError("NPS needs at least one ROI of 4×4 pixels or more; got none.")
    sx, sy = spacing_xy(spacing)
    ny, nx = total.shape
    return np.fft.fftshift(total / count * (sx * sy) / (nx * ny))


def nps_frequencies(shape: Tuple[int, int], spacing: Spacing) -> Tuple[np.ndarray, np.ndarray]:
    """(fy, fx) in cycles/mm for a centred 2D NPS of the given (ny, nx) shape."""
    sx, sy = spacing_xy(spacing)
    fy = np.fft.fftshift(np.fft.fftfreq(shape[0], sy))
    fx = np.fft.fftshift(np.fft.fftfreq(shape[1], sx))
    return fy, fx


def radial_nps(nps2d: np.ndarray, spacing: Spacing, bin_width: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS: (frequency in mm⁻¹, NPS in HU²·mm²) up to the Nyquist frequency.

    Annuli are ``bin_width`` wide (default: the coarser frequency step of the grid);
    the zero-frequency bin is left out.
    """
    nps2d = np.asarray(nps2d, dtype=np.float64)
    if nps2d.ndim != 2:
        raise InputError(f"radial_nps needs a 2D NPS; got shape {nps2d.shape}.")
    sx, sy = spacing_xy(spacing)
    fy, fx = nps_frequencies(nps2d.shape, (sx, sy))
    radius = np.hypot(fy[:, None], fx[None, :])
    step = bin_width or max(1.0 / (nps2d.shape[0] * sy), 1.0 / (nps2d.shape[1] * sx))
    nyquist = min(0.5 / sx, 0.5 / sy)
    index = np.floor(radius / step + 0.5).astype(np.int64)
    n_bins = int(np.floor(nyquist / step + 0.5)) + 1
    inside = index < n_bins
    sums = np.bincount(index[inside], weights=nps2d[inside], minlength=n_bins)
    counts = np.bincount(index[inside], minlength=n_bins)
    freq = np.arange(n_bins) * step
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = sums / counts
    keep = (counts > 0) & (freq > 0)
    return freq[keep], profile[keep]


def mean_frequency(freq: np.ndarray, nps: np.ndarray) -> float:
    """NPS-weighted mean frequency (mm⁻¹) of a radial NPS: ∫ f·NPS(f) df / ∫ NPS(f) df, on evenly spaced bins.

    Smooth reconstruction kernels give low values, sharp kernels high ones; it is a
    one-number summary of noise texture.
    """
    freq = np.asarray(freq, dtype=np.float64)
    nps = np.asarray(nps, dtype=np.float64)
    total = float(np.sum(nps))  # the radial bins are evenly spaced, so sums stand for integrals
    first = float(np.sum(nps * freq))
    return float(first / total) if total > 0 else float("nan")


def peak_frequency(freq: np.ndarray, nps: np.ndarray) -> float:
    """Frequency (mm⁻¹) at which a radial NPS peaks."""
    return float(np.asarray(freq)[int(np.argmax(nps))])
