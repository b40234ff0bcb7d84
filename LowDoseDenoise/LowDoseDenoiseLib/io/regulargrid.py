"""A tilted or gapped DICOM series on a regular grid, and the way back to its slices (no torch).

A CT series with a missing slice, uneven slice spacing or gantry tilt is not a regular
3D grid: the reader (:mod:`.dicomread`) stacks it as acquired and warns, and keeps each
slice's true Image Position (Patient) in ``Volume.dicom``.  :func:`regularize` resamples
it onto a regular grid, as dcm2niix does for its ``_Tilt`` and ``_Eq`` images and
Slicer's DICOM module does when it regularizes the acquisition geometry:

* the grid's axes are the slices' row and column directions and their normal (so a
  tilted stack becomes an orthogonal one, each slice shifted in-plane to its true place,
  the grid enlarged to hold every slice, padded with the series' lowest value);
* along the normal it runs from the first to the last slice's true distance with the
  smallest distance between neighbouring slices (dcm2niix's equidistant slices), so a
  series with a missing slice keeps every acquired slice on a grid plane;
* values come from the two acquired slices around each grid plane, linear along the
  normal (by true distance) and in-plane by SimpleITK's resampler with a Lanczos
  windowed-sinc kernel by default.  dcm2niix and Slicer interpolate linearly, but a
  linear half-pixel shift lowers the noise SD by about 30% in that slice (and by less in
  others), so a denoiser would meet a different noise level slice by slice; the sinc
  kernel keeps the noise texture (7% at half a pixel) and halves the round-trip error at
  edges; its weights are normalised to sum to one (ITK's do not quite), so flat regions
  stay exact.  ``interpolation="linear"`` gives the dcm2niix behaviour.

:meth:`RegularGrid.to_source` samples a result on that grid back at each source slice's
own pixels (the same interpolation the other way), so the derived series written by
:mod:`.dicomwrite` has one slice per source slice, at its true position, referencing it.
A series that already is regular passes through untouched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume, as_xyz

__all__ = ["INTERPOLATIONS", "MAX_SLICE_FACTOR", "ON_GRID_MM", "RegularGrid", "irregularity", "regularize"]


logger = logging.getLogger(__name__)

#: Positions within this distance (mm) of a regular grid count as on it (as :mod:`.dicomwrite`).
ON_GRID_MM = 0.01
#: The grid holds at most this many times the source's slices; with closer slices somewhere
#: (overlapping reconstructions) it uses the median distance instead of the smallest.
MAX_SLICE_FACTOR = 4
#: In-plane interpolation choices of :func:`regularize` (SimpleITK interpolator names).
INTERPOLATIONS = {"lanczos": "sitkLanczosWindowedSinc", "linear": "sitkLinear"}


@dataclass
class _Stack:
    """Parallel planes of one orientation: each plane's distance along the normal and in-plane offset.

    ``offsets`` are (along the row direction, along the column direction) in mm of each
    plane's first pixel from a common point, ``spacing`` the (x, y) pixel spacing.
    """

    distances: np.ndarray  # (n,)
    offsets: np.ndarray  # (n, 2)
    shape: Tuple[int, int]  # (rows, columns) of every plane
    spacing: Tuple[float, float]
    interpolation: str = "lanczos"


@dataclass
class RegularGrid:
    """A volume on a regular grid and the source series it was resampled from.

    ``volume`` is what to denoise (float32 HU on the grid; ``volume.dicom`` is None, as its
    slices are no source slices).  ``source`` is the volume as read, whose slices the
    derived series references.  ``resampled`` is False when the source already was
    regular: then ``volume`` is the source itself and :meth:`to_source` returns its input.
    """

    volume: Volume
    source: Volume
    resampled: bool
    notes: List[str] = field(default_factory=list)
    _grid: Optional[_Stack] = None
    _slices: Optional[_Stack] = None

    def to_source(self, on_grid: np.ndarray) -> np.ndarray:
        """``on_grid`` (z, y, x, the grid's shape) sampled at every source slice's pixels: float32, the source's shape.

        The result belongs to ``source``'s geometry: pass it with ``source`` to
        :func:`.dicomwrite.write_derived_series` and each derived slice lies at its source
        slice's true position and references it.
        """
        on_grid = np.asarray(on_grid)
        if on_grid.shape != self.volume.voxels.shape:
            raise InputError(f"The array on the regular grid is {on_grid.shape}, the grid "
                             f"{self.volume.voxels.shape}; they must match.")
        if not self.resampled or self._grid is None or self._slices is None:
            return on_grid
        fill = float(np.min(on_grid)) if on_grid.size else 0.0
        return _resample(on_grid, self._grid, self._slices, fill)


def _axes(volume: Volume) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    row, col = direction[:, 0], direction[:, 1]
    return row, col, np.cross(row, col)


def _source_stack(volume: Volume) -> Optional[_Stack]:
    """The acquired slices as a stack (relative to the first slice), or None without true positions."""
    info = volume.dicom
    if info is None or not info.positions:
        return None
    if len(info.positions) != volume.voxels.shape[0]:
        raise InputError(f"The series has {len(info.positions)} slice positions for {volume.voxels.shape[0]} "
                         "slices, so it cannot be placed on a regular grid; read it again from its folder.")
    row, col, normal = _axes(volume)
    true = np.asarray(info.positions, dtype=float)
    relative = true - true[0]
    return _Stack(distances=relative @ normal, offsets=np.column_stack([relative @ row, relative @ col]),
                  shape=(int(volume.voxels.shape[1]), int(volume.voxels.shape[2])),
                  spacing=(float(volume.spacing[0]), float(volume.spacing[1])))


def irregularity(volume: Volume) -> Tuple[float, float]:
    """How far a volume's slices are off its regular stack: (largest gap error, largest in-plane shift) in mm.

    Both are 0 for image files and regular series; a missing slice or uneven spacing shows
    in the first, gantry tilt in the second.
    """
    stack = _source_stack(volume)
    if stack is None or len(stack.distances) < 2:
        return 0.0, 0.0
    expected = np.arange(len(stack.distances)) * float(volume.spacing[2])
    along = float(np.max(np.abs(stack.distances - expected)))
    shift = float(np.max(np.linalg.norm(stack.offsets, axis=1)))
    return along, shift


def _grid_distances(distances: np.ndarray) -> np.ndarray:
    """Equidistant planes from the first to the last slice: the smallest slice distance (else the median)."""
    gaps = np.diff(distances)
    span = float(distances[-1] - distances[0])
    step = float(np.min(gaps))
    if span / step + 1 > MAX_SLICE_FACTOR * len(distances):
        step = float(np.median(gaps))
    count = int(round(span / step)) + 1
    return distances[0] + np.arange(count) * (span / (count - 1))


def regularize(volume: Volume, interpolation: str = "lanczos") -> RegularGrid:
    """Resample a tilted or gapped DICOM series onto a regular grid (see the module docstring).

    ``volume`` is a series as :func:`.dicomread.read_series` returns it.  A volume whose
    slices already lie on its regular stack (within :data:`ON_GRID_MM`), or one without
    true slice positions (an image file), comes back as it is with ``resampled`` False.
    ``interpolation`` (in-plane): ``"lanczos"`` (default) or ``"linear"``, see :data:`INTERPOLATIONS`.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"Interpolation '{interpolation}' is not known; choose one of {', '.join(INTERPOLATIONS)}.")
    along, shift = irregularity(volume)
    slices = _source_stack(volume)
    if slices is None or max(along, shift) <= ON_GRID_MM:
        return RegularGrid(volume=volume, source=volume, resampled=False)
    if np.any(np.diff(slices.distances) <= 0):
        raise InputError("The series' slices are not in order along their normal; read it with "
                         "dicomread.read_series, which sorts them.")
    row, col, normal = _axes(volume)
    slices.interpolation = interpolation
    sx, sy = slices.spacing
    low = slices.offsets.min(axis=0)
    high = slices.offsets.max(axis=0)
    extra = np.ceil((high - low) / np.array([sx, sy]) - 1e-6).astype(int)
    shape = (slices.shape[0] + int(extra[1]), slices.shape[1] + int(extra[0]))
    distances = _grid_distances(slices.distances)
    grid = _Stack(distances=distances, offsets=np.tile(low, (len(distances), 1)), shape=shape,
                  spacing=slices.spacing, interpolation=interpolation)
    fill = float(np.min(volume.voxels))
    voxels = _resample(volume.voxels, slices, grid, fill)
    first = np.asarray(volume.dicom.positions[0] if volume.dicom else volume.origin, dtype=float)
    origin = first + low[0] * row + low[1] * col + distances[0] * normal
    dz = float(distances[1] - distances[0]) if len(distances) > 1 else float(volume.spacing[2])
    tilt = math.degrees(math.atan2(shift, float(slices.distances[-1] - slices.distances[0])))
    what = []
    if along > ON_GRID_MM:
        what.append(f"slice distances up to {along:.2f} mm off a regular stack (a gap or uneven spacing)")
    if shift > ON_GRID_MM:
        what.append(f"slices shifted in-plane by up to {shift:.2f} mm (gantry tilt of about {tilt:.1f} degrees)")
    message = (f"Regularized the series ({' and '.join(what)}): {volume.voxels.shape[0]} slices of "
               f"{volume.voxels.shape[2]}x{volume.voxels.shape[1]} resampled onto a regular grid of {len(distances)} "
               f"slices of {shape[1]}x{shape[0]} at {dz:.3f} mm, orthogonal to the slices.")
    logger.info(message)
    metadata = dict(volume.metadata)
    metadata["notes"] = [*metadata.get("notes", []), message]
    metadata["regularized"] = True
    regular = replace(volume, voxels=voxels, spacing=(sx, sy, dz), origin=as_xyz(origin),
                      direction=tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()),
                      metadata=metadata, dicom=None)
    return RegularGrid(volume=regular, source=volume, resampled=True, notes=[message], _grid=grid, _slices=slices)


# --------------------------------------------------------------------------- resampling


def _plane(planes: np.ndarray, index: int, stack: _Stack, offset: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Plane ``index`` of ``planes`` sampled on a lattice of ``shape`` whose first pixel is at ``offset``.

    Interpolated in-plane (SimpleITK, the stack's ``interpolation``); NaN where the lattice
    lies outside the plane.  The same lattice is copied exactly.
    """
    plane = np.asarray(planes[index], dtype=np.float32)
    start = stack.offsets[index]
    if tuple(shape) == tuple(plane.shape) and np.all(np.abs(offset - start) <= 1e-6):
        return plane
    values = _sitk_resample(plane, start, offset, shape, stack)
    if stack.interpolation == "linear":
        return values
    # ITK's windowed-sinc weights do not sum to one (-1000 HU comes out as -998.7 at half a pixel):
    # divide by their sum, so flat regions stay exact.  The sum depends only on the sub-pixel shift
    # (the edge is extended, not cut), so a small plane of ones gives it.
    fraction = np.mod((np.asarray(offset) - start) / np.asarray(stack.spacing), 1.0) * np.asarray(stack.spacing)
    ones = _sitk_resample(np.ones((16, 16), np.float32), np.zeros(2), fraction, (16, 16), stack)
    return values / ones[8, 8]


def _sitk_resample(plane: np.ndarray, start: np.ndarray, offset: np.ndarray, shape: Tuple[int, int],
                   stack: _Stack) -> np.ndarray:
    """One plane (first pixel at ``start``) resampled by SimpleITK onto a lattice at ``offset``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(plane)
    image.SetSpacing(stack.spacing)
    image.SetOrigin((float(start[0]), float(start[1])))
    out = sitk.Resample(image, (int(shape[1]), int(shape[0])), sitk.Transform(2, sitk.sitkIdentity),
                        getattr(sitk, INTERPOLATIONS[stack.interpolation]), (float(offset[0]), float(offset[1])),
                        stack.spacing, (1.0, 0.0, 0.0, 1.0), float("nan"), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _resample(planes: np.ndarray, source: _Stack, target: _Stack, fill: float) -> np.ndarray:
    """``planes`` (on ``source``) sampled on every plane of ``target``: float32 (len(target), rows, columns).

    Each target plane comes from the two source planes around it, weighted by distance
    along the normal (one plane where it lies on one); a point only one of them covers
    takes that one's value, a point neither covers ``fill``.
    """
    out = np.empty((len(target.distances), *target.shape), dtype=np.float32)
    d = source.distances
    cache: dict = {}

    def sampled(k: int, j: int) -> np.ndarray:
        key = (k, j if not np.allclose(target.offsets, target.offsets[0]) else 0)
        if key not in cache:
            if len(cache) > 4:
                cache.pop(next(iter(cache)))
            cache[key] = _plane(planes, k, source, target.offsets[j], target.shape)
        return cache[key]

    for j, t in enumerate(target.distances):
        k = int(np.clip(np.searchsorted(d, t, side="right") - 1, 0, len(d) - 1))
        if k == len(d) - 1 or abs(t - d[k]) <= ON_GRID_MM:
            value = sampled(k, j)
        elif abs(d[k + 1] - t) <= ON_GRID_MM:
            value = sampled(k + 1, j)
        else:
            w = float((t - d[k]) / (d[k + 1] - d[k]))
            a, b = sampled(k, j), sampled(k + 1, j)
            value = np.where(np.isnan(a), b, np.where(np.isnan(b), a, (1 - w) * a + w * b))
        out[j] = np.where(np.isnan(value), fill, value)
    return out
