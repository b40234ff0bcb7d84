"""Image-quality metrics for denoised CT: fidelity, ROI noise, NPS, edges and removed structure.

What a reviewer asks of a denoiser, as numbers:

* **Fidelity against a reference** (:func:`rmse`, :func:`psnr`, :func:`ssim`): on the
  full HU range (data range = the reference's max − min, stated in every report) and
  in a display window (default liver W 400 / L 40: both images clipped to the window,
  data range = the window width), since the window is what a radiologist looks at.
* **ROI statistics** (:func:`roi_stats`, :func:`cnr`): mean, SD and bias in HU, and the
  contrast-to-noise ratio between two ROIs.  ROIs are circles given in voxels and mm
  (:func:`circle_roi`) or labels of a label map resampled by physical coordinates
  (:func:`label_rois`).
* **Noise power spectrum** (:func:`noise_power_spectrum`): 2D NPS of flat ROIs of
  (image − reference), or of detrended ROIs when there is no reference, radially
  averaged, in HU²·mm² against mm⁻¹; its integral is the noise variance.  A shift of
  the mean frequency towards zero is the blotchy "plastic look".  The spectra
  themselves come from :mod:`~LowDoseDenoiseLib.quality.noise`.
* **Edge preservation** (:func:`edge_preservation`): Pearson correlation of gradient
  magnitudes with the reference inside the body (1 = edges exactly as in the reference).
* **Removed structure** (:func:`residual_structure`): without a reference, the
  residual (input − denoised) should be noise; when its edges line up with the image's
  edges, anatomy was removed, and the check warns.

Arrays are (z, y, x) HU (or one 2D slice) of any real type (int16 voxels as stored are
fine); spacing is (x, y[, z]) in mm as in :class:`~LowDoseDenoiseLib.volume.Volume` and
:mod:`~LowDoseDenoiseLib.quality.noise`.

Every measure is computed slice by slice (all filters are in-plane) and reduced over the
volume with running sums, so the measures that :func:`evaluate` uses take
``block_slices``: how many slices are converted to float64 at a time (None: the whole
volume at once).  It changes the memory, never the definition: the numbers agree to
rounding (``test_metrics`` checks evaluate with blocks of one slice against one block).
:func:`evaluate` uses :data:`BLOCK_SLICES`, which keeps a 512×512×300 evaluation near
1 GB instead of several float64 copies of each volume.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from . import noise

__all__ = [
    "BLOCK_SLICES",
    "BODY_THRESHOLD_HU",
    "DEFAULT_WINDOW",
    "FLAT_TISSUE_HU",
    "NPS_ROI_SIZE",
    "RESIDUAL_STRUCTURE_THRESHOLD",
    "ROI_SYNTAX",
    "NpsResult",
    "ResidualCheck",
    "Roi",
    "RoiStats",
    "bias",
    "body_mask",
    "check_ct_like",
    "check_same_geometry",
    "circle_roi",
    "cnr",
    "data_range",
    "edge_preservation",
    "evaluate",
    "flat_positions",
    "flat_tissue_roi",
    "format_report",
    "gradient_magnitude",
    "label_rois",
    "noise_power_spectrum",
    "nps_pair",
    "nps_positions",
    "parse_roi",
    "psnr",
    "resample_labels",
    "residual_correlations",
    "residual_structure",
    "rmse",
    "roi_stats",
    "rois_from_spec",
    "ssim",
    "tile_positions",
    "window_bounds",
]

#: The default display window (width, level) in HU: the liver / abdominal soft-tissue window.
DEFAULT_WINDOW: Tuple[float, float] = (400.0, 40.0)
#: Pixels above this HU count as inside the body when no body mask is given.
BODY_THRESHOLD_HU = -500.0
#: Residual-structure correlations above this are flagged as removed anatomy.
RESIDUAL_STRUCTURE_THRESHOLD = 0.25
#: Side of the square ROIs used for noise power spectra (pixels).
NPS_ROI_SIZE = 32
#: Smoothed HU range of the flat-tissue ROI (:func:`flat_tissue_roi`): liver-like soft tissue.
FLAT_TISSUE_HU: Tuple[float, float] = (20.0, 100.0)
#: Slices converted to float64 at a time by :func:`evaluate` (16 × 512² × 8 B = 32 MB per copy).
BLOCK_SLICES = 16

Spacing = Union[float, Sequence[float]]
Window = Union[str, Sequence[float]]


# --------------------------------------------------------------------------- checks


def _image(array: Any, name: str) -> np.ndarray:
    """``array`` checked as a 2D slice or 3D volume of finite real numbers, in its own type (no copy)."""
    image = np.asarray(array)
    if image.ndim not in (2, 3) or image.size == 0:
        raise InputError(f"The {name} must be a 2D slice or a 3D (z, y, x) volume; got shape {image.shape}.")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise InputError(f"The {name} must hold real numbers (HU); got {image.dtype}.")
    if np.issubdtype(image.dtype, np.floating):
        volume = _3d(image)
        for part in _blocks(volume.shape[0], BLOCK_SLICES):
            if not np.isfinite(volume[part]).all():
                raise InputError(f"The {name} contains NaN or infinite values; fix or mask them first.")
    return image


def _as_image(array: Any, name: str) -> np.ndarray:
    """:func:`_image` as float64 (a copy unless it is float64 already)."""
    return np.asarray(_image(array, name), dtype=np.float64)


def _raw_pair(image: Any, reference: Any, names: Tuple[str, str] = ("image", "reference")):
    """Two images checked by :func:`_image` and for the same shape, each in its own type."""
    a, b = _image(image, names[0]), _image(reference, names[1])
    if a.shape != b.shape:
        raise InputError(
            f"The {names[0]} has {a.shape[::-1]} voxels (x, y, z) but the {names[1]} has {b.shape[::-1]}; "
            "compare a volume with a result on the very same grid."
        )
    return a, b


def _pair(image: Any, reference: Any, names: Tuple[str, str] = ("image", "reference")):
    a, b = _raw_pair(image, reference, names)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _3d(array: np.ndarray) -> np.ndarray:
    """A (1, y, x) view of a 2D slice; a volume as it is."""
    return array[None] if array.ndim == 2 else array


def _blocks(depth: int, block_slices: Optional[int]) -> Iterator[slice]:
    """Slices of ``block_slices`` consecutive axial slices covering ``depth`` (None: one block)."""
    step = depth if not block_slices else max(1, int(block_slices))
    for start in range(0, depth, max(step, 1)):
        yield slice(start, min(start + step, depth))


def _slab(array: np.ndarray, part: slice) -> np.ndarray:
    """Slices ``part`` of a 2D or 3D image as a float64 (z, y, x) copy."""
    return np.array(_3d(array)[part], dtype=np.float64)


class _Moments:
    """Count, means, centred sums of squares and co-moment of (paired) samples, merged block by
    block (Chan, Golub and LeVeque's pairwise update): a volume's SD and Pearson correlation
    without holding the volume.  Fed one block, it is the textbook two-pass computation."""

    def __init__(self) -> None:
        self.n = 0
        self.mean_a = self.mean_b = 0.0
        self.m2a = self.m2b = self.cab = 0.0

    def add(self, a: np.ndarray, b: Optional[np.ndarray] = None) -> _Moments:
        a = np.asarray(a, dtype=np.float64).ravel()
        b = a if b is None else np.asarray(b, dtype=np.float64).ravel()
        n = a.size
        if n == 0:
            return self
        mean_a, mean_b = a.mean(), b.mean()
        da, db = a - mean_a, b - mean_b
        m2a, m2b, cab = float((da * da).sum()), float((db * db).sum()), float((da * db).sum())
        if self.n == 0:
            self.n, self.mean_a, self.mean_b, self.m2a, self.m2b, self.cab = n, mean_a, mean_b, m2a, m2b, cab
            return self
        total = self.n + n
        delta_a, delta_b = mean_a - self.mean_a, mean_b - self.mean_b
        weight = self.n * n / total
        self.m2a += m2a + delta_a * delta_a * weight
        self.m2b += m2b + delta_b * delta_b * weight
        self.cab += cab + delta_a * delta_b * weight
        self.mean_a += delta_a * n / total
        self.mean_b += delta_b * n / total
        self.n = total
        return self

    def sd(self, ddof: int = 0) -> float:
        return math.sqrt(self.m2a / (self.n - ddof)) if self.n > ddof else 0.0

    def correlation(self) -> float:
        denominator = math.sqrt(self.m2a * self.m2b)
        return float(self.cab / denominator) if denominator > 0 else float("nan")


def _mask(mask: Any, shape: Tuple[int, ...], name: str = "mask") -> Optional[np.ndarray]:
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.shape != shape:
        raise InputError(f"The {name} has shape {array.shape} but the image has {shape}; they must match.")
    array = array.astype(bool)
    if not array.any():
        raise InputError(f"The {name} is empty (no voxels selected); draw or choose a non-empty region.")
    return array


def _region(mask: Any, shape: Tuple[int, ...], name: str = "mask") -> np.ndarray:
    """:func:`_mask` of a mask that is given (never None)."""
    array = _mask(mask, shape, name)
    if array is None:
        raise InputError(f"The {name} is missing; give a region.")
    return array


def window_bounds(window: Window = DEFAULT_WINDOW) -> Tuple[float, float]:
    """(low, high) HU of a display window given as a name ('liver'), 'W,L' or (W, L)."""
    from .figures import parse_window

    width, level = parse_window(window)
    return level - width / 2.0, level + width / 2.0


def check_ct_like(hu: Any, name: str) -> None:
    """Raise InputError when ``hu`` does not look like CT in Hounsfield units."""
    from ..engine import ct_range_problem

    problem = ct_range_problem(np.asarray(hu))
    if problem:
        raise InputError(f"The {name}: {problem}; these metrics are defined for CT images in HU.")


def check_same_geometry(first, second, names: Tuple[str, str] = ("reference", "denoised"),
                        tolerance: float = 1e-3) -> None:
    """Raise InputError naming every geometry difference between two Volumes.

    Size, spacing, origin and direction must agree (to ``tolerance`` mm, or in the
    direction cosines), because voxel-wise metrics compare voxel by voxel.
    """
    a, b = names
    problems = []
    if first.voxels.shape != second.voxels.shape:
        problems.append(f"size {_xyz(first.voxels.shape[::-1], 'd')} vs {_xyz(second.voxels.shape[::-1], 'd')} "
                        "voxels (x, y, z)")
    if not np.allclose(first.spacing, second.spacing, atol=tolerance, rtol=0):
        problems.append(f"spacing {_xyz(first.spacing)} vs {_xyz(second.spacing)} mm")
    if not np.allclose(first.origin, second.origin, atol=tolerance, rtol=0):
        problems.append(f"origin {_xyz(first.origin)} vs {_xyz(second.origin)} mm")
    if not np.allclose(first.direction, second.direction, atol=1e-4, rtol=0):
        problems.append(f"direction {_xyz(first.direction, '.3f')} vs {_xyz(second.direction, '.3f')}")
    if problems:
        raise InputError(
            f"The {a} and {b} volumes differ in geometry: {'; '.join(problems)}. Metrics need the {b} result of "
            f"that very {a} volume (same grid); resample one onto the other first."
        )


def _xyz(values: Sequence[float], fmt: str = "g") -> str:
    return "(" + ", ".join(format(v if fmt != "d" else int(v), fmt) for v in values) + ")"


# --------------------------------------------------------------------------- fidelity


def data_range(reference: Any) -> float:
    """The full-range data range used for PSNR/SSIM: the reference's max − min (HU)."""
    ref = _image(reference, "reference")
    value = float(ref.max()) - float(ref.min())
    if value <= 0:
        raise InputError("The reference is constant (zero data range); PSNR and SSIM need a real image.")
    return value


def _range_and_clip(reference: np.ndarray, window: Optional[Window],
                    range_: Optional[float]) -> Tuple[float, Optional[Tuple[float, float]]]:
    """(data range, clip bounds or None): the window's width and bounds, else ``range_`` or the reference's."""
    if window is None:
        return (data_range(reference) if range_ is None else float(range_)), None
    lo, hi = window_bounds(window)
    return hi - lo, (lo, hi)


def _blocks_of(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray], clip: Optional[Tuple[float, float]],
               block_slices: Optional[int]) -> Iterator[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
    """(a, b, mask) as float64 (z, y, x) blocks, clipped to ``clip`` when given."""
    for part in _blocks(_3d(a).shape[0], block_slices):
        sa, sb = _slab(a, part), _slab(b, part)
        if clip is not None:
            np.clip(sa, *clip, out=sa)
            np.clip(sb, *clip, out=sb)
        yield sa, sb, (None if mask is None else _3d(mask)[part])


def _mean_squared_error(a: np.ndarray, b: np.ndarray, mask: Optional[np.ndarray],
                        clip: Optional[Tuple[float, float]], block_slices: Optional[int]) -> float:
    total, count = 0.0, 0
    for sa, sb, m in _blocks_of(a, b, mask, clip, block_slices):
        diff = sa - sb if m is None else (sa - sb)[m]
        total += float(np.sum(diff * diff))
        count += diff.size
    return total / count


def rmse(image: Any, reference: Any, mask: Any = None, block_slices: Optional[int] = None) -> float:
    """Root-mean-square error in HU (inside ``mask`` when given)."""
    a, b = _raw_pair(image, reference)
    m = _mask(mask, a.shape)
    return float(np.sqrt(_mean_squared_error(a, b, m, None, block_slices)))


def psnr(image: Any, reference: Any, data_range: Optional[float] = None, window: Optional[Window] = None,
         mask: Any = None, block_slices: Optional[int] = None) -> float:
    """Peak signal-to-noise ratio in dB, 20·log10(R / RMSE).

    With ``window`` both images are clipped to it and R is its width; otherwise R is
    ``data_range`` or the reference's max − min.  Identical images give +inf.
    """
    a, b = _raw_pair(image, reference)
    r, clip = _range_and_clip(b, window, data_range)
    if r <= 0:
        raise InputError(f"The PSNR data range must be positive, got {r:g} HU.")
    error = float(np.sqrt(_mean_squared_error(a, b, _mask(mask, a.shape), clip, block_slices)))
    return float("inf") if error == 0 else float(20.0 * math.log10(r / error))


def ssim(image: Any, reference: Any, data_range: Optional[float] = None, window: Optional[Window] = None,
         mask: Any = None, block_slices: Optional[int] = None) -> float:
    """Mean structural similarity (Wang et al. 2004), slice by slice in 2D.

    Gaussian weights σ 1.5 px, K1 0.01, K2 0.03; with ``window`` both images are
    clipped to it and the data range is its width; the SSIM map is averaged over
    ``mask`` when given.  An image compared with itself gives 1.
    """
    from skimage.metrics import structural_similarity

    a, b = _raw_pair(image, reference)
    m = _mask(mask, a.shape)
    r, clip = _range_and_clip(b, window, data_range)
    if r <= 0:
        raise InputError(f"The SSIM data range must be positive, got {r:g} HU.")
    if min(a.shape[-2:]) < 7:
        raise InputError(f"SSIM needs slices of at least 7×7 pixels; got {a.shape[-2]}×{a.shape[-1]}.")
    total, count = 0.0, 0
    for slices_a, slices_b, part_mask in _blocks_of(a, b, m, clip, block_slices):
        maps = np.stack([
            structural_similarity(sb, sa, data_range=r, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, full=True)[1]
            for sa, sb in zip(slices_a, slices_b)
        ])
        values = maps if part_mask is None else maps[part_mask]
        total += float(values.sum())
        count += values.size
    return float(total / count)


# --------------------------------------------------------------------------- ROIs


@dataclass
class Roi:
    """A named region: a boolean (z, y, x) mask and how it was defined."""

    name: str
    mask: np.ndarray
    definition: str = ""

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass
class RoiStats:
    """Mean and SD (HU) in an ROI, and the bias against a reference when one is given."""

    name: str
    voxels: int
    mean: float
    sd: float
    reference_mean: Optional[float] = None
    bias: Optional[float] = None


_CIRCLE = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*$")

#: The ROI syntax, for help texts and error messages.
ROI_SYNTAX = (
    "[NAME=]Z,Y,X,R (a circle of radius R mm on axial slice Z, centred at row Y, column X; 0-based voxel "
    "indices) or [NAME=]LABELMAP[:L1,L2,...] (a label-map file; one ROI per label, all non-zero labels by default)"
)


def circle_roi(shape: Sequence[int], spacing: Spacing, z: int, y: int, x: int, radius_mm: float,
               name: str = "roi") -> Roi:
    """A circular ROI of ``radius_mm`` on axial slice ``z`` centred at row ``y``, column ``x``.

    The circle must lie inside the image: an ROI that reaches past an edge is refused
    rather than silently cut, since a clipped ROI measures a different region.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (1,) + shape
    nz, ny, nx = shape
    sx, sy = noise.spacing_xy(spacing)
    if not (math.isfinite(radius_mm) and radius_mm > 0):
        raise InputError(f"ROI '{name}': the radius must be a positive number of mm; got {radius_mm:g}.")
    if not (0 <= z < nz and 0 <= y < ny and 0 <= x < nx):
        raise InputError(
            f"ROI '{name}' is centred at (z={z}, y={y}, x={x}), outside the image of {nz} slices × {ny} rows × "
            f"{nx} columns (0-based indices); pick a centre inside the image."
        )
    ry, rx = radius_mm / sy, radius_mm / sx
    if y - ry < -0.5 or y + ry > ny - 0.5 or x - rx < -0.5 or x + rx > nx - 0.5:
        raise InputError(
            f"ROI '{name}' (radius {radius_mm:g} mm around row {y}, column {x}) reaches past the edge of the "
            f"{ny}×{nx} slice; move it inward or make it smaller."
        )
    rows, cols = np.ogrid[0:ny, 0:nx]
    disc = ((rows - y) * sy) ** 2 + ((cols - x) * sx) ** 2 <= radius_mm**2
    mask: np.ndarray = np.zeros(shape, dtype=bool)
    mask[z] = disc
    return Roi(name, mask, f"circle z={z}, y={y}, x={x}, r={radius_mm:g} mm")


def parse_roi(spec: str, default_name: str = "roi") -> Dict[str, Any]:
    """Parse one ``--roi`` value (see :data:`ROI_SYNTAX`) into a dict.

    ``{"kind": "circle", "name", "z", "y", "x", "radius_mm"}`` or
    ``{"kind": "labels", "name", "path", "labels": [int, ...] or None}``.
    """
    text = spec.strip()
    name = default_name
    head, sep, tail = text.partition("=")
    if sep and head and "/" not in head and "\\" not in head and not head.strip().lower().endswith(
            (".nrrd", ".nii", ".gz", ".mha", ".mhd")):
        name, text = head.strip(), tail.strip()
    if not text:
        raise InputError(f"Empty ROI '{spec}'; use {ROI_SYNTAX}.")
    match = _CIRCLE.match(text)
    if match:
        z, y, x = (int(v) for v in match.groups()[:3])
        return {"kind": "circle", "name": name, "z": z, "y": y, "x": x, "radius_mm": float(match.group(4))}
    if re.fullmatch(r"[-0-9.,\s]+", text):
        raise InputError(f"ROI '{spec}' is not understood; use {ROI_SYNTAX}.")
    path, labels = text, None
    base, colon, rest = text.rpartition(":")
    if colon and base and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", rest):
        path, labels = base, [int(v) for v in rest.split(",")]
    return {"kind": "labels", "name": name, "path": path, "labels": labels}


def resample_labels(labels, target) -> np.ndarray:
    """A label map (Volume) resampled onto ``target``'s grid by physical coordinates (nearest neighbour).

    Label maps are often stored on another grid than the CT (a flipped axis, another
    origin); array indices would then point at the wrong anatomy.
    """
    import SimpleITK as sitk

    from ..io.imagefiles import to_sitk

    source = to_sitk(labels)
    grid = to_sitk(target.with_voxels(np.zeros(target.voxels.shape, np.uint8)))
    resampled = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def label_rois(labels, target, wanted: Optional[Sequence[int]] = None, name: str = "label") -> List[Roi]:
    """One ROI per label of a label map (Volume), resampled onto ``target`` by physical coordinates."""
    values = np.asarray(labels.voxels)
    if not np.issubdtype(values.dtype, np.integer):
        if not np.allclose(values, np.rint(values)):
            raise InputError("The label map holds non-integer values; give a segmentation (label map) file.")
    grid: np.ndarray = resample_labels(labels, target).astype(np.int64)
    present = sorted(int(v) for v in np.unique(grid) if v != 0)
    chosen = list(wanted) if wanted else present
    if not chosen:
        raise InputError("The label map has no non-zero label inside the image; is it the segmentation of this scan?")
    rois = []
    for value in chosen:
        mask = grid == value
        if not mask.any():
            where = "in the label map" if value not in np.unique(values) else "inside the image's field of view"
            raise InputError(f"Label {value} is empty {where}; choose one of {present or 'none'}.")
        rois.append(Roi(f"{name} {value}" if len(chosen) > 1 or name == "label" else name, mask, f"label {value}"))
    return rois


def rois_from_spec(spec: str, target, index: int = 0) -> List[Roi]:
    """The ROIs one ``--roi`` value describes, on the grid of ``target`` (a Volume)."""
    parsed = parse_roi(spec, default_name=f"roi{index + 1}")
    if parsed["kind"] == "circle":
        return [circle_roi(target.voxels.shape, target.spacing, parsed["z"], parsed["y"], parsed["x"],
                           parsed["radius_mm"], parsed["name"])]
    from pathlib import Path

    from ..io.imagefiles import read_volume

    path = Path(parsed["path"])
    if not path.exists():
        raise InputError(f"ROI label map {path} does not exist; use {ROI_SYNTAX}.")
    name = parsed["name"] if parsed["name"] != f"roi{index + 1}" else "label"
    return label_rois(read_volume(path), target, parsed["labels"], name=name)


def roi_stats(image: Any, mask: Any, reference: Any = None, name: str = "roi") -> RoiStats:
    """Mean and SD (HU, SD with n − 1) in ``mask``; with a reference also its mean and the bias."""
    data = _image(image, "image")
    m = _mask(mask, data.shape, f"ROI '{name}'")
    values = np.asarray(data[m], dtype=np.float64)
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    stats = RoiStats(name, int(values.size), float(values.mean()), sd)
    if reference is not None:
        ref = _raw_pair(data, reference)[1]
        stats.reference_mean = float(np.asarray(ref[m], dtype=np.float64).mean())
        stats.bias = stats.mean - stats.reference_mean
    return stats


def cnr(image: Any, roi_a: Any, roi_b: Any) -> float:
    """Contrast-to-noise ratio |mean_a − mean_b| / sqrt((SD_a² + SD_b²) / 2) between two ROI masks."""
    a = roi_stats(image, roi_a, name="first")
    b = roi_stats(image, roi_b, name="second")
    pooled = math.sqrt((a.sd**2 + b.sd**2) / 2.0)
    if pooled == 0:
        return float("inf") if a.mean != b.mean else 0.0
    return abs(a.mean - b.mean) / pooled


def bias(image: Any, reference: Any, mask: Any = None) -> float:
    """Mean error (image − reference) in HU, inside ``mask`` when given: the HU shift a method causes."""
    a, b = _pair(image, reference)
    m = _mask(mask, a.shape, "bias mask")
    diff = a - b
    return float(diff.mean() if m is None else diff[m].mean())


def flat_tissue_roi(hu: Any, box: Optional[Tuple[int, int, int, int]] = None,
                    hu_range: Tuple[float, float] = FLAT_TISSUE_HU, smooth_px: int = 9,
                    erode_px: int = 5) -> np.ndarray:
    """A liver-like flat-tissue ROI where no segmentation exists (a real low-dose scan).

    Per slice: pixels whose ``smooth_px`` box-smoothed HU lie in ``hu_range`` (default
    20..100 HU: unenhanced to enhanced liver, spleen, muscle), inside ``box`` (rows
    y0..y1, columns x0..x1; default the whole slice), eroded by ``erode_px`` so that
    organ borders stay out.  Returns a boolean mask of ``hu``'s shape.
    """
    from scipy.ndimage import binary_erosion, uniform_filter

    data = _as_image(hu, "image")
    volume = data[None] if data.ndim == 2 else data
    y0, y1, x0, x1 = box if box is not None else (0, volume.shape[1], 0, volume.shape[2])
    inside = np.zeros(volume.shape[1:], bool)
    inside[y0:y1, x0:x1] = True
    mask = np.zeros(volume.shape, bool)
    for z, image in enumerate(volume):
        smooth = uniform_filter(image, smooth_px)
        tissue = inside & (smooth > hu_range[0]) & (smooth < hu_range[1])
        mask[z] = binary_erosion(tissue, np.ones((erode_px, erode_px), bool))
    return mask[0] if data.ndim == 2 else mask


# --------------------------------------------------------------------------- NPS


@dataclass
class NpsResult:
    """A radially averaged noise power spectrum and its summary numbers.

    ``frequency`` in mm⁻¹, ``nps`` in HU²·mm²; ``variance`` (HU²) is the integral of
    the 2D NPS; ``source`` says what was measured ('image − reference' or
    'detrended image').
    """

    frequency: np.ndarray
    nps: np.ndarray
    variance: float
    mean_frequency: float
    peak_frequency: float
    n_rois: int
    roi_size: int
    source: str
    nps2d: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    @property
    def noise_sd(self) -> float:
        return math.sqrt(self.variance)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source, "rois": self.n_rois, "roi_size_px": self.roi_size,
            "variance_hu2": self.variance, "noise_sd_hu": self.noise_sd,
            "mean_frequency_per_mm": self.mean_frequency, "peak_frequency_per_mm": self.peak_frequency,
            "frequency_per_mm": [round(float(f), 5) for f in self.frequency],
            "nps_hu2_mm2": [round(float(p), 5) for p in self.nps],
        }


def tile_positions(mask: Any, size: int = NPS_ROI_SIZE) -> np.ndarray:
    """(slice, row, column) corners of non-overlapping size × size tiles lying fully inside ``mask``."""
    m = np.asarray(mask, dtype=bool)
    m = m[None] if m.ndim == 2 else m
    nz, ny, nx = m.shape
    corners = [
        (z, r, c)
        for z in range(nz)
        for r in range(0, ny - size + 1, size)
        for c in range(0, nx - size + 1, size)
        if m[z, r : r + size, c : c + size].all()
    ]
    return np.asarray(corners, dtype=np.int64).reshape(-1, 3)


def flat_positions(locate_on: Any, size: int = NPS_ROI_SIZE, mask: Any = None,
                   block_slices: Optional[int] = None) -> np.ndarray:
    """Corners of size × size tiles of flat soft tissue in ``locate_on`` (and inside ``mask``).

    A tile counts when the window centred on it is flat soft tissue
    (:func:`~LowDoseDenoiseLib.quality.noise.flat_regions`) and, when a mask is given, it lies
    inside the mask.  Measure several images at the same positions to compare them.
    """
    image = _3d(_image(locate_on, "image"))
    if size > min(image.shape[-2:]):
        return np.zeros((0, 3), np.int64)
    region = None if mask is None else _mask(np.asarray(mask).reshape(image.shape), image.shape, "NPS mask")
    h = size // 2
    found = []
    for part in _blocks(image.shape[0], block_slices):
        flat = noise.flat_regions(_slab(image, part), size)
        inside = np.ones(flat.shape, bool) if region is None else region[part]
        m = flat if region is None else flat & inside
        tiles = tile_positions(inside, size)
        keep = [bool(m[z, r + h, c + h]) for z, r, c in tiles]
        tiles = tiles[np.asarray(keep, bool)] if len(tiles) else tiles
        tiles[:, 0] += part.start
        found.append(tiles)
    return np.concatenate(found) if found else np.zeros((0, 3), np.int64)


class _Tiles:
    """The NPS ROIs (image − reference, or the image) at ``positions``, cut on demand as float64:
    ``tiles[i:j]`` is an (n, size, size) array, so the spectra are computed a chunk at a time."""

    def __init__(self, image: np.ndarray, reference: Optional[np.ndarray], positions: np.ndarray, size: int):
        self.image, self.reference, self.positions, self.size = image, reference, positions, size
        ny, nx = image.shape[-2:]
        if np.any(positions[:, 1] + size > ny) or np.any(positions[:, 2] + size > nx) or np.any(positions < 0):
            raise InputError(f"An NPS ROI of {size}×{size} pixels reaches past the image edge.")

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, part: slice) -> np.ndarray:
        s = self.size
        tiles = np.stack([np.asarray(self.image[z, r : r + s, c : c + s], dtype=np.float64)
                          for z, r, c in self.positions[part]])
        if self.reference is not None:
            tiles -= np.stack([np.asarray(self.reference[z, r : r + s, c : c + s], dtype=np.float64)
                               for z, r, c in self.positions[part]])
        return tiles


def noise_power_spectrum(image: Any, spacing: Spacing, reference: Any = None, mask: Any = None,
                         positions: Optional[np.ndarray] = None, roi_size: int = NPS_ROI_SIZE,
                         detrend: str = "plane", block_slices: Optional[int] = None) -> NpsResult:
    """Radial NPS of ``image`` − ``reference`` (or of the detrended image) in flat ROIs.

    ROIs are ``roi_size`` squares at ``positions`` ((n, 3) corners), or else at the
    flat soft-tissue tiles of the reference (or image) inside ``mask``.  Each ROI has
    its best-fit plane removed (``detrend``), which without a reference also removes
    the slow anatomy.  Raises InputError when no ROI fits.
    """
    data = _image(image, "image")
    sx, sy = noise.spacing_xy(spacing)
    if reference is not None:
        data, ref = _raw_pair(data, reference)
        source = "image − reference"
    else:
        ref, source = None, "detrended image"
    if positions is None:
        if ref is None:
            positions = nps_positions(data, roi_size, mask, block_slices)
        else:
            positions = flat_positions(ref, roi_size, mask, block_slices)
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 3)
    if len(positions) == 0:
        raise InputError(
            f"No flat soft-tissue region of {roi_size}×{roi_size} pixels was found for the noise power spectrum; "
            "the image may be too small, not CT in HU, or the mask too small."
        )
    rois = _Tiles(_3d(data), None if ref is None else _3d(ref), positions, roi_size)
    nps2d = noise.noise_power_spectrum_2d(rois, (sx, sy), detrend=detrend)
    freq, profile = noise.radial_nps(nps2d, (sx, sy))
    variance = float(nps2d.sum() / (roi_size * sx * roi_size * sy))
    return NpsResult(freq, profile, variance, noise.mean_frequency(freq, profile),
                     noise.peak_frequency(freq, profile), len(positions), roi_size, source, nps2d)


# --------------------------------------------------------------------------- edges


def gradient_magnitude(hu: Any, spacing: Spacing, sigma_mm: float = 1.0) -> np.ndarray:
    """In-plane gradient magnitude (HU/mm) after Gaussian smoothing of ``sigma_mm``, slice by slice."""
    from scipy import ndimage

    data = _as_image(hu, "image")
    sx, sy = noise.spacing_xy(spacing)
    volume = data[None] if data.ndim == 2 else data
    sigma = (0.0, sigma_mm / sy, sigma_mm / sx)
    gy = ndimage.gaussian_filter(volume, sigma, order=(0, 1, 0)) / sy
    gx = ndimage.gaussian_filter(volume, sigma, order=(0, 0, 1)) / sx
    magnitude = np.hypot(gy, gx)
    return magnitude[0] if data.ndim == 2 else magnitude


def body_mask(hu: Any, threshold: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Inside the body: voxels above ``threshold`` HU with holes (bowel gas, lungs) filled, per slice."""
    from scipy import ndimage

    data = _as_image(hu, "image")
    volume = data[None] > threshold if data.ndim == 2 else data > threshold
    filled = np.stack([ndimage.binary_fill_holes(s) for s in volume])
    return filled[0] if data.ndim == 2 else filled


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return _Moments().add(a, b).correlation()


def edge_preservation(image: Any, reference: Any, spacing: Spacing, mask: Any = None,
                      sigma_mm: float = 1.0, window: Optional[Window] = None,
                      block_slices: Optional[int] = None) -> float:
    """Pearson correlation of gradient magnitudes of image and reference inside the body (or ``mask``).

    1 means the edges are where and as strong as in the reference; blurring lowers it,
    and so does residual noise (it adds gradient everywhere).  With ``window`` (e.g.
    'liver') both images are clipped to it first, so that soft-tissue edges count and the
    body outline and bone do not dominate; the benchmarks use the liver window.
    """
    a, b = _raw_pair(image, reference)
    region = None if mask is None else _3d(_region(mask, a.shape))
    bounds = None if window is None else window_bounds(window)
    moments = _Moments()
    for part in _blocks(_3d(a).shape[0], block_slices):
        sa, sb = _slab(a, part), _slab(b, part)
        m = body_mask(sb) if region is None else region[part]  # the body of the unwindowed reference
        if bounds is not None:
            np.clip(sa, *bounds, out=sa)
            np.clip(sb, *bounds, out=sb)
        if m.any():
            moments.add(gradient_magnitude(sa, spacing, sigma_mm)[m], gradient_magnitude(sb, spacing, sigma_mm)[m])
    if moments.n == 0:
        raise InputError("No body found in the reference (nothing above -500 HU); is it CT in HU?")
    return moments.correlation()


@dataclass
class ResidualCheck:
    """How much the removed part (input − denoised) follows the image's edges."""

    correlation: float
    threshold: float
    structured: bool
    residual_sd: float
    message: str = ""


def residual_structure(input_hu: Any, denoised: Any, spacing: Spacing, mask: Any = None,
                       sigma_mm: float = 2.5, threshold: float = RESIDUAL_STRUCTURE_THRESHOLD,
                       block_slices: Optional[int] = None) -> ResidualCheck:
    """Check that what the denoiser removed is noise, not anatomy (no reference needed).

    Correlates the magnitude of the smoothed residual |G_σ * (input − denoised)| with
    the edge map |∇ G_σ * denoised|, inside the body away from the skin (or inside
    ``mask``).  Removed noise averages out under G_σ and, for a Gaussian noise field,
    its local value is independent of the local gradient of any noise left in the
    image, so the correlation stays near 0 at every strength; a residual that shows the
    organ outlines (blurring) lines up with the edges, and ``structured`` is set when
    the correlation exceeds ``threshold``.  A global check: a single small removed
    lesion barely moves it.
    """
    from scipy import ndimage

    before, after = _raw_pair(input_hu, denoised, ("input", "denoised"))
    sx, sy = noise.spacing_xy(spacing)
    region = None if mask is None else _3d(_region(mask, before.shape))
    margin = max(1, int(round(5.0 / min(sx, sy))))
    removed, corr_moments = _Moments(), _Moments()
    for part in _blocks(_3d(before).shape[0], block_slices):
        sb, sa = _slab(before, part), _slab(after, part)
        if region is None:  # inside the body, away from the skin (the erosion is in-plane)
            m = ndimage.binary_erosion(body_mask(sb), structure=np.ones((1, 3, 3), bool), iterations=margin)
        else:
            m = region[part]
        if not m.any():
            continue
        residual = sb - sa
        removed.add(residual[m])
        local = np.abs(ndimage.gaussian_filter(residual, (0.0, sigma_mm / sy, sigma_mm / sx)))
        corr_moments.add(local[m], gradient_magnitude(sa, spacing, sigma_mm)[m])
    if removed.n == 0:
        raise InputError("No body found in the input (nothing above -500 HU); is it CT in HU?")
    residual_sd = removed.sd()
    if residual_sd == 0:
        return ResidualCheck(0.0, threshold, False, 0.0, "nothing was removed")
    corr = corr_moments.correlation()
    structured = bool(corr > threshold)
    message = (
        f"the removed part (input − denoised) follows the image's edges (correlation {corr:.2f} > {threshold:.2f}): "
        "anatomy was removed or blurred, not only noise; check edges and small lesions against the input"
        if structured else f"the removed part looks like noise (edge correlation {corr:.2f} ≤ {threshold:.2f})"
    )
    return ResidualCheck(corr, threshold, structured, residual_sd, message)


def residual_correlations(input_hu: Any, output: Any, anatomy: Any, mask: Any = None,
                          window: Window = DEFAULT_WINDOW) -> Dict[str, float]:
    """Correlations of the removed part (input − output) with the anatomy of ``anatomy``.

    ``anatomy`` is the reference when there is one (else the output).  ``grad``: the local
    residual magnitude (Gaussian σ 2 px of |residual|) against the gradient magnitude (Sobel)
    of the windowed anatomy; ``laplacian``: the signed residual against the Laplacian of the
    windowed anatomy smoothed with σ 1 px (a smoothing filter removes −c·Laplacian, so it
    correlates strongly and negatively).  Both over ``mask`` (default: the body); 0 means pure noise removed.
    """
    from scipy.ndimage import gaussian_filter, laplace, sobel

    before, after = _pair(input_hu, output, ("input", "output"))
    ref = _pair(before, anatomy, ("input", "anatomy"))[1]
    m = body_mask(ref) if mask is None else _region(mask, before.shape)
    lo, hi = window_bounds(window)
    residual, windowed, region = (np.atleast_3d(a.T).T for a in (before - after, np.clip(ref, lo, hi), m))
    energy = np.stack([gaussian_filter(np.abs(r), 2.0) for r in residual])
    grad = np.stack([np.hypot(sobel(s, 0), sobel(s, 1)) for s in windowed])
    lap = np.stack([laplace(gaussian_filter(s, 1.0)) for s in windowed])
    return {"grad": _correlation(energy[region], grad[region]),
            "laplacian": _correlation(residual[region], lap[region])}


# --------------------------------------------------------------------------- evaluation


def _hu_voxels(volume) -> np.ndarray:
    """The voxels as HU without a copy when float32 holds them exactly (int16, float32), else float32 HU,
    so that every measure sees the values it always saw (float32 HU) without a float copy of the volume."""
    voxels = np.asarray(volume.voxels)
    return voxels if np.can_cast(voxels.dtype, np.float32, "safe") else volume.hu()


def evaluate(denoised, reference=None, input=None, rois: Sequence[Roi] = (), window: Window = DEFAULT_WINDOW,
             check_ct: bool = True, block_slices: Optional[int] = BLOCK_SLICES) -> Dict[str, Any]:
    """All metrics for a denoised Volume, with or without a reference; a JSON-ready dict.

    With ``reference`` (a full-dose Volume on the same grid): RMSE, PSNR and SSIM on the
    full range and in ``window``, edge preservation, NPS of (denoised − reference),
    and ROI bias.  Always: ROI mean/SD/noise SD, CNR of the first two ROIs, the NPS of
    the denoised image (and the input's at the same positions); with ``input`` also the
    residual-structure check.  ``warnings`` lists what a reader should look at.

    The volumes are measured ``block_slices`` slices at a time (see the module docstring):
    memory stays near the volumes as stored plus a few float64 blocks.
    """
    volumes = {"denoised": denoised, "reference": reference, "input": input}
    for name, volume in volumes.items():
        if volume is not None:
            _image(volume.voxels, f"{name} volume")
            if check_ct:
                check_ct_like(volume.voxels, f"{name} volume")
    for name in ("reference", "input"):
        if volumes[name] is not None:
            check_same_geometry(volumes[name], denoised, (name, "denoised"))
    width, level = (lambda lo_hi: (lo_hi[1] - lo_hi[0], (lo_hi[0] + lo_hi[1]) / 2))(window_bounds(window))
    den = _hu_voxels(denoised)
    ref = None if reference is None else _hu_voxels(reference)
    inp = None if input is None else _hu_voxels(input)
    blocks = block_slices
    spacing = tuple(float(s) for s in denoised.spacing)
    report: Dict[str, Any] = {
        "mode": "full-reference" if ref is not None else "no-reference",
        "shape_zyx": list(den.shape), "spacing_xyz_mm": list(spacing),
        "window": {"width_hu": width, "level_hu": level}, "warnings": [],
    }
    if ref is not None:
        full = data_range(ref)
        report["fidelity"] = {
            "rmse_hu": rmse(den, ref, block_slices=blocks),
            "psnr_full_db": psnr(den, ref, block_slices=blocks), "ssim_full": ssim(den, ref, block_slices=blocks),
            "data_range_full_hu": full,
            "psnr_window_db": psnr(den, ref, window=(width, level), block_slices=blocks),
            "ssim_window": ssim(den, ref, window=(width, level), block_slices=blocks), "data_range_window_hu": width,
        }
        if inp is not None:
            report["fidelity_input"] = {
                "rmse_hu": rmse(inp, ref, block_slices=blocks),
                "psnr_window_db": psnr(inp, ref, window=(width, level), block_slices=blocks),
                "ssim_window": ssim(inp, ref, window=(width, level), block_slices=blocks),
            }
        report["edge_preservation"] = edge_preservation(den, ref, spacing, block_slices=blocks)
    report["rois"] = []
    for roi in rois:
        stats = roi_stats(den, roi.mask, ref, roi.name)
        entry = {k: v for k, v in asdict(stats).items() if v is not None}
        entry["definition"] = roi.definition
        entry["noise_sd"] = noise.estimate_noise_sd(den, mask=roi.mask)
        if inp is not None:
            entry["input_mean"] = float(np.asarray(inp[roi.mask], dtype=np.float64).mean())
            entry["input_noise_sd"] = noise.estimate_noise_sd(inp, mask=roi.mask)
        report["rois"].append(entry)
    if len(rois) >= 2:
        report["cnr"] = {"rois": [rois[0].name, rois[1].name], "denoised": cnr(den, rois[0].mask, rois[1].mask)}
        if inp is not None:
            report["cnr"]["input"] = cnr(inp, rois[0].mask, rois[1].mask)
    report["nps"] = _nps_section(den, ref, inp, spacing, blocks)
    if inp is not None:
        check = residual_structure(inp, den, spacing, block_slices=blocks)
        report["residual"] = asdict(check)
        if check.structured:
            report["warnings"].append(check.message)
    if "input" in report["nps"] and "denoised" in report["nps"]:
        f_in = report["nps"]["input"]["mean_frequency_per_mm"]
        f_out = report["nps"]["denoised"]["mean_frequency_per_mm"]
        report["nps"]["mean_frequency_ratio"] = f_out / f_in if f_in else float("nan")
        if f_in and f_out / f_in < 0.7:
            report["warnings"].append(
                f"the noise texture shifted to low frequencies (NPS mean frequency {f_in:.2f} → {f_out:.2f} mm⁻¹): "
                "expect a blotchy, 'plastic' look"
            )
    return report


def _nps_section(den: np.ndarray, ref: Optional[np.ndarray], inp: Optional[np.ndarray],
                 spacing: Tuple[float, ...], block_slices: Optional[int] = None) -> Dict[str, Any]:
    """NPS of the denoised image (and of the input at the same ROIs).

    With a reference: of (image − reference) at the reference's flat tiles, so anatomy
    cannot leak in; without one: of the detrended images at edge-free flat tiles.
    """
    section: Dict[str, Any] = {}
    try:
        if ref is not None:
            positions = flat_positions(ref, NPS_ROI_SIZE, block_slices=block_slices)
            section["denoised"] = noise_power_spectrum(den, spacing, ref, positions=positions).to_dict()
            if inp is not None:
                section["input"] = noise_power_spectrum(inp, spacing, ref, positions=positions).to_dict()
        else:
            positions = nps_positions(inp if inp is not None else den, NPS_ROI_SIZE, block_slices=block_slices)
            section["denoised"] = noise_power_spectrum(den, spacing, positions=positions).to_dict()
            if inp is not None:
                section["input"] = noise_power_spectrum(inp, spacing, positions=positions).to_dict()
    except InputError as error:
        section["not_measured"] = str(error)
    return section


def nps_positions(locate_on: Any, size: int = NPS_ROI_SIZE, mask: Any = None,
                  block_slices: Optional[int] = None) -> np.ndarray:
    """Flat tiles of ``locate_on`` without edges, for NPS without a reference (the flat-tissue
    NPS ROIs of every benchmark: measure several images at the same positions).

    A tile is dropped when the strongest gradient of the image smoothed with σ 3 px
    inside it exceeds 1.5 × that of the flattest quarter of tiles: smoothing shrinks
    noise gradients (∝ σ⁻²) much faster than organ edges (∝ σ⁻¹), so even 40 HU edges
    stand out at CT noise levels, and a plane fit cannot remove a step.
    """
    from scipy import ndimage

    positions = flat_positions(locate_on, size, mask, block_slices)
    if len(positions) <= 2:
        return positions
    volume = _3d(np.asarray(locate_on))
    strongest = np.empty(len(positions))
    for z in np.unique(positions[:, 0]):  # only the slices that hold a tile
        smooth = ndimage.gaussian_gradient_magnitude(np.asarray(volume[z], np.float64), 3.0)
        for i in np.flatnonzero(positions[:, 0] == z):
            r, c = positions[i, 1:]
            strongest[i] = smooth[r : r + size, c : c + size].max()
    return positions[strongest <= 1.5 * np.percentile(strongest, 25)]


def nps_pair(original: np.ndarray, denoised: np.ndarray, spacing: Spacing,
             roi_size: int = NPS_ROI_SIZE) -> Tuple[NpsResult, NpsResult]:
    """Detrended NPS of an original and its denoised result at the same flat ROIs (located on the original)."""
    a, b = _pair(original, denoised, ("original", "denoised"))
    positions = nps_positions(a, roi_size)
    return (noise_power_spectrum(a, spacing, positions=positions, roi_size=roi_size),
            noise_power_spectrum(b, spacing, positions=positions, roi_size=roi_size))


def format_report(report: Dict[str, Any]) -> List[str]:
    """Human-readable lines for an :func:`evaluate` report."""
    lines = [f"{report['mode']} evaluation, window W {report['window']['width_hu']:g} / L "
             f"{report['window']['level_hu']:g} HU"]
    fid = report.get("fidelity")
    if fid:
        lines.append(f"RMSE {fid['rmse_hu']:.2f} HU")
        lines.append(f"PSNR {fid['psnr_full_db']:.2f} dB, SSIM {fid['ssim_full']:.4f} "
                     f"(full range, data range {fid['data_range_full_hu']:g} HU)")
        lines.append(f"PSNR {fid['psnr_window_db']:.2f} dB, SSIM {fid['ssim_window']:.4f} "
                     f"(in the window, data range {fid['data_range_window_hu']:g} HU)")
        if "fidelity_input" in report:
            fi = report["fidelity_input"]
            lines.append(f"input for comparison: RMSE {fi['rmse_hu']:.2f} HU, PSNR {fi['psnr_window_db']:.2f} dB, "
                         f"SSIM {fi['ssim_window']:.4f} (in the window)")
        lines.append(f"edge preservation (gradient correlation inside the body) {report['edge_preservation']:.3f}")
    for roi in report.get("rois", []):
        text = f"ROI {roi['name']} ({roi['definition']}, {roi['voxels']} voxels): mean {roi['mean']:.1f} HU, " \
               f"SD {roi['sd']:.1f} HU, noise SD {roi['noise_sd']:.1f} HU"
        if "bias" in roi:
            text += f", bias {roi['bias']:+.1f} HU"
        if "input_noise_sd" in roi:
            text += f" (input: mean {roi['input_mean']:.1f} HU, noise SD {roi['input_noise_sd']:.1f} HU)"
        lines.append(text)
    if "cnr" in report:
        c = report["cnr"]
        extra = f" (input {c['input']:.2f})" if "input" in c else ""
        lines.append(f"CNR {c['rois'][0]} vs {c['rois'][1]}: {c['denoised']:.2f}{extra}")
    nps_section = report.get("nps", {})
    if "not_measured" in nps_section:
        lines.append(f"NPS not measured: {nps_section['not_measured']}")
    for key in ("denoised", "input"):
        if key in nps_section:
            n = nps_section[key]
            label = f"NPS of {key} − reference" if n["source"] == "image − reference" else f"NPS of {key} (detrended)"
            lines.append(f"{label}: noise SD {n['noise_sd_hu']:.1f} HU, mean frequency "
                         f"{n['mean_frequency_per_mm']:.3f} mm⁻¹, peak {n['peak_frequency_per_mm']:.3f} mm⁻¹ "
                         f"({n['rois']} ROIs of {n['roi_size_px']} px)")
    if "residual" in report:
        lines.append(f"residual check: {report['residual']['message']}")
    for warning in report.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    return lines
