"""Where a preview looks: the slice shown in a slice view, or the voxels inside a markups ROI.

A preview denoises a small part of a study for a quick look before the whole run.  The
part is a :class:`PreviewRegion`, a box of the input's own voxel grid (no resampling):

* **current slice**: the input slice through the centre of a slice view (the Red view
  by default), found through the view's XY-to-RAS matrix and the input's parent
  transform, so it is the slice the radiologist is looking at even on an oblique volume;
* **ROI**: the input voxels whose centres lie in the bounding box, along the input's
  axes, of a ``vtkMRMLMarkupsROINode`` (rotated ROIs and ROIs under a transform
  included), clipped to the volume.

The engine is given the whole slices of the box plus the model's ``k`` neighbouring
slices on each side as context (the 2.5D input), and the result is cut to the box.
Whole slices, not a crop with a margin: the bundled model's receptive field is about
±190 pixels, so on real low-dose CT (512×512) a crop with a 64-pixel margin differs from
a full run by up to 9.6 HU inside a 100×100 ROI and still by 0.07 HU with 160 pixels,
and only about 190 pixels (almost the whole slice) gives the same values.  With whole
slices a preview shows exactly the values a full run gives at those voxels.

MRML only (no Qt, no ``slicer.app``); no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import slicer
import vtk

from ..errors import InputError

__all__ = [
    "PREVIEW_ATTRIBUTE",
    "PREVIEW_REGION_ATTRIBUTE",
    "PreviewRegion",
    "box_ijk_to_ras",
    "node_to_node_points",
    "preview_region_of",
    "roi_region",
    "slice_region",
]

#: Attribute on a preview volume: what it shows ("slice 57", "ROI 'R'").
PREVIEW_ATTRIBUTE = "LowDoseDenoise.Preview"
#: Attribute on a preview volume: its box in the source volume's IJK, "i0 i1 j0 j1 k0 k1" (half-open).
PREVIEW_REGION_ATTRIBUTE = "LowDoseDenoise.PreviewRegion"

Interval = Tuple[int, int]


@dataclass(frozen=True)
class PreviewRegion:
    """A box of the input's voxels (half-open index ranges) and the slices read for it.

    ``z``, ``y``, ``x`` are the box in numpy order (k, j, i); ``read`` is the slice range
    given to the engine: the box's slices plus ``context`` neighbours on each side,
    clipped to the volume (the engine repeats the end slice there, as in a full run).
    """

    kind: str  # "slice" or "roi"
    label: str  # for names and messages: "slice 57", "ROI 'R'"
    z: Interval
    y: Interval
    x: Interval
    read: Interval

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(slices, rows, columns) of the preview."""
        return (self.z[1] - self.z[0], self.y[1] - self.y[0], self.x[1] - self.x[0])

    def cut(self, result: np.ndarray) -> np.ndarray:
        """The box out of the engine's result for the ``read`` slices (whole slices)."""
        z0 = self.z[0] - self.read[0]
        return result[z0 : z0 + self.shape[0], self.y[0] : self.y[1], self.x[0] : self.x[1]]

    def cut_input(self, voxels: np.ndarray) -> np.ndarray:
        """The box out of the whole input's (z, y, x) voxels."""
        return voxels[self.z[0] : self.z[1], self.y[0] : self.y[1], self.x[0] : self.x[1]]

    def attribute(self) -> str:
        """The box as "i0 i1 j0 j1 k0 k1" (IJK, half-open), for :data:`PREVIEW_REGION_ATTRIBUTE`."""
        return " ".join(str(v) for v in (*self.x, *self.y, *self.z))


def _read_range(z: Interval, depth: int, context: int) -> Interval:
    return (max(0, z[0] - context), min(depth, z[1] + context))


def node_to_node_points(source, target, points: Union[np.ndarray, Sequence[Sequence[float]]]) -> np.ndarray:
    """``points`` in the coordinates of ``source``'s parent frame mapped into ``target``'s.

    ``source``/``target`` are transformable nodes, or None for world coordinates; each
    node's parent transform (linear or not) is followed, as Slicer draws the node.
    """
    transform = vtk.vtkGeneralTransform()
    source_parent = source.GetParentTransformNode() if source is not None else None
    target_parent = target.GetParentTransformNode() if target is not None else None
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source_parent, target_parent, transform)
    return np.array([transform.TransformPoint([float(c) for c in point[:3]]) for point in points])


def _ras_to_ijk(volume_node, ras: np.ndarray) -> np.ndarray:
    """(N, 3) RAS points in the volume's own frame to (N, 3) continuous IJK indices."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return (np.c_[ras, np.ones(len(ras))] @ m.T)[:, :3]


def _dims_zyx(volume_node) -> Tuple[int, int, int]:
    dims = volume_node.GetImageData().GetDimensions()
    return (int(dims[2]), int(dims[1]), int(dims[0]))


def slice_region(input_node, slice_node, context: int, view_name: str = "Red") -> PreviewRegion:
    """The input slice through the centre of ``slice_node``'s view, with ``context`` neighbours read.

    InputError when the view's centre lies before the first or after the last slice.
    """
    dims = slice_node.GetDimensions()
    centre = slice_node.GetXYToRAS().MultiplyPoint((dims[0] / 2.0, dims[1] / 2.0, 0.0, 1.0))
    local = node_to_node_points(None, input_node, [centre[:3]])
    k_float = float(_ras_to_ijk(input_node, local)[0, 2])
    depth, height, width = _dims_zyx(input_node)
    k = int(math.floor(k_float + 0.5))
    if not 0 <= k < depth:
        raise InputError(
            f"The {view_name} view shows no slice of '{input_node.GetName()}' (its position is "
            f"{'before the first' if k < 0 else 'after the last'} of its {depth} slices); scroll the "
            f"{view_name} view to a slice of the volume, or choose an ROI to preview."
        )
    z = (k, k + 1)
    return PreviewRegion("slice", f"slice {k + 1} of {depth}", z, (0, height), (0, width),
                         _read_range(z, depth, context))


def _roi_corners(roi_node) -> np.ndarray:
    """The 8 corners of a markups ROI in its node's coordinates (its parent frame)."""
    size = np.array(roi_node.GetSize(), dtype=float)
    matrix = roi_node.GetObjectToNodeMatrix()
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    corners = signs * size / 2.0
    return (np.c_[corners, np.ones(8)] @ m.T)[:, :3]


def roi_region(input_node, roi_node, context: int) -> PreviewRegion:
    """The input voxels inside ``roi_node``'s bounding box (along the input's axes), with context read.

    InputError when the ROI is not placed, is inside-out, or does not overlap the volume.
    An ROI thinner than a voxel along an axis keeps the voxel nearest to its centre.
    """
    name = roi_node.GetName() or "ROI"
    if not roi_node.IsA("vtkMRMLMarkupsROINode"):
        raise InputError(f"'{name}' is a {roi_node.GetClassName()}, not a markups ROI; choose an ROI (box).")
    if roi_node.GetNumberOfControlPoints() < 1:
        raise InputError(f"The ROI '{name}' is not placed yet; place it on the image (Markups toolbar: ROI) "
                         "or choose the current slice.")
    if roi_node.GetInsideOut():
        raise InputError(f"The ROI '{name}' is set to 'inside out' (everything outside it); turn that off in "
                         "the Markups module to preview the box.")
    ijk = _ras_to_ijk(input_node, node_to_node_points(roi_node, input_node, _roi_corners(roi_node)))
    depth, height, width = _dims_zyx(input_node)
    ranges = []
    for axis, size in ((0, width), (1, height), (2, depth)):  # i, j, k
        low, high = float(ijk[:, axis].min()), float(ijk[:, axis].max())
        first, last = math.ceil(low - 1e-6), math.floor(high + 1e-6)
        if first > last:  # thinner than one voxel: the voxel nearest to its centre
            first = last = int(math.floor((low + high) / 2.0 + 0.5))
        if last < 0 or first > size - 1:
            raise InputError(f"The ROI '{name}' does not overlap '{input_node.GetName()}'; move it onto the "
                             "volume (or choose the current slice).")
        ranges.append((max(first, 0), min(last, size - 1) + 1))
    x, y, z = ranges
    return PreviewRegion("roi", f"ROI '{name}'", z, y, x, _read_range(z, depth, context))


def box_ijk_to_ras(input_node, region: PreviewRegion) -> np.ndarray:
    """IJK-to-RAS of the preview volume: the input's matrix with the origin moved to the box's first voxel."""
    matrix = vtk.vtkMatrix4x4()
    input_node.GetIJKToRASMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    m[:3, 3] = (m @ np.array([region.x[0], region.y[0], region.z[0], 1.0]))[:3]
    return m


def preview_region_of(node, source) -> Optional[Tuple[Interval, Interval, Interval]]:
    """The (z, y, x) box of ``source`` that the preview volume ``node`` shows, or None if it is none.

    None unless ``node`` carries :data:`PREVIEW_REGION_ATTRIBUTE` and the box lies within
    ``source`` and matches ``node``'s size (the caller checks that ``source`` is the
    volume ``node`` was made from).
    """
    text = node.GetAttribute(PREVIEW_REGION_ATTRIBUTE) if node is not None else None
    if not text or source is None or source.GetImageData() is None:
        return None
    try:
        i0, i1, j0, j1, k0, k1 = (int(v) for v in text.split())
    except ValueError:
        return None
    depth, height, width = _dims_zyx(source)
    inside = 0 <= i0 < i1 <= width and 0 <= j0 < j1 <= height and 0 <= k0 < k1 <= depth
    if not inside or node.GetImageData() is None or _dims_zyx(node) != (k1 - k0, j1 - j0, i1 - i0):
        return None
    return ((k0, k1), (j0, j1), (i0, i1))

