"""MRML side of reading: one item's two images in linked side-by-side views, nothing that names them.

:class:`ReadingViews` works on any ``vtkMRMLScene`` (Slicer's, or a slicer-core scene
in tests).  The images are read from the study's files into volume nodes named only
"Image A" and "Image B": no storage node (so no file name travels with them), hidden
from node selectors, not saved with the scene.  Both views show the same orientation
and window and are linked, so panning, zooming and scrolling move both.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError, LowDoseDenoiseError
from ..volume import Volume
from . import protocol as p
from .scores import ReadingItem

__all__ = ["ROLE_ATTRIBUTE", "VIEW_NAMES", "ReadingViews", "item_summary", "node_name"]


#: Slice views that show image A (left) and image B (right) in Slicer's side-by-side layout.
VIEW_NAMES = ("Red", "Yellow")
#: Node attribute that marks a reading image (value "A" or "B"), so the module finds its own nodes.
ROLE_ATTRIBUTE = "LowDoseReaderStudy.Image"


def node_name(side: str) -> str:
    """The only name a reading image node has."""
    return f"Image {side}"


class ReadingViews:
    """Shows :class:`~.scores.ReadingItem` pairs in the scene's Red and Yellow slice views."""

    def __init__(self, scene, application_logic=None):
        self.scene = scene
        self.application_logic = application_logic
        self._node_ids: List[str] = []

    @property
    def nodes(self) -> list:
        """The current item's nodes (A, B), or an empty list."""
        return [self.scene.GetNodeByID(node_id) for node_id in self._node_ids if self.scene.GetNodeByID(node_id)]

    def show(self, item: ReadingItem, window: Tuple[float, float] = p.DEFAULT_WINDOW, orientation: str = "Axial"):
        """Replace the previous item's images with ``item``'s and show them side by side; returns (A, B)."""
        from ..io.imagefiles import read_volume

        width, level = _check_window(window)
        volumes = [read_volume(item.image_a), read_volume(item.image_b)]  # read both before touching the scene
        if volumes[0].voxels.shape != volumes[1].voxels.shape:
            raise InputError(f"The two images of {item.id} differ in size; the study folder is damaged, re-plan it.")
        composites = [self._composite_node(name) for name in VIEW_NAMES]
        slice_nodes = [self._slice_node(name) for name in VIEW_NAMES]
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        self.clear()
        created = []
        try:
            for side, volume in zip(p.SIDES, volumes):
                created.append(self._add_node(side, volume))
        except BaseException:
            for node in created:
                self._remove(node)
            raise
        self._node_ids = [node.GetID() for node in created]
        if layout is not None:
            layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for composite, slice_node, node in zip(composites, slice_nodes, created):
            composite.SetBackgroundVolumeID(node.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            slice_node.SetOrientation(orientation)
        self.set_window(width, level)
        self._fit()
        for composite in composites:
            composite.SetLinkedControl(1)
            composite.SetHotLinkedControl(1)
        return tuple(created)

    def set_window(self, width: float, level: float) -> None:
        """The same fixed window (HU) on both images."""
        width, level = _check_window((width, level))
        for node in self.nodes:
            display = node.GetDisplayNode()
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(width, level)

    def clear(self) -> None:
        """Remove the reading images (and any left by an earlier session) from the scene."""
        stale = [self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        for node in stale:
            if node is not None and node.GetAttribute(ROLE_ATTRIBUTE):
                self._remove(node)
        self._node_ids = []

    # -- helpers ----------------------------------------------------------------------------------
    def _add_node(self, side: str, volume: Volume):
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", node_name(side))
        try:
            node.SetAttribute(ROLE_ATTRIBUTE, side)
            node.SetHideFromEditors(1)
            node.SetSaveWithScene(0)
            node.SetIJKToRASMatrix(_ijk_to_ras(volume))
            node.SetAndObserveImageData(_image_data(volume.voxels))
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
            display.SetSaveWithScene(0)
        except BaseException:
            self._remove(node)
            raise
        return node

    def _remove(self, node) -> None:
        display_ids = [node.GetNthDisplayNodeID(i) for i in range(node.GetNumberOfDisplayNodes())]
        self.scene.RemoveNode(node)
        for display_id in display_ids:
            display = self.scene.GetNodeByID(display_id) if display_id else None
            if display is not None:
                self.scene.RemoveNode(display)

    def _find(self, class_name: str, layout_name: str):
        for i in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(i, class_name)
            if node.GetLayoutName() == layout_name:
                return node
        return None

    def _slice_node(self, name: str):
        node = self._find("vtkMRMLSliceNode", name)
        if node is None:
            raise LowDoseDenoiseError(f"The {name} slice view does not exist in this scene; reset the layout.")
        return node

    def _composite_node(self, name: str):
        node = self._find("vtkMRMLSliceCompositeNode", name)
        if node is None:
            raise LowDoseDenoiseError(f"The {name} slice view has no layers (composite node); reset the layout.")
        return node

    def _fit(self) -> None:
        if self.application_logic is None:
            return
        for name in VIEW_NAMES:
            logic = self.application_logic.GetSliceLogicByLayoutName(name)
            if logic is not None:
                logic.FitSliceToAll()


def _check_window(window) -> Tuple[float, float]:
    try:
        width, level = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"The window is (width, level) in HU, got {window!r}.") from None
    if not width > 0:
        raise InputError(f"The window width must be positive, got {width:g} HU.")
    return width, level


def _image_data(voxels: np.ndarray):
    """A vtkImageData holding a copy of (z, y, x) voxels."""
    image = vtk.vtkImageData()
    depth, height, width = voxels.shape
    image.SetDimensions(width, height, depth)
    array = numpy_support.numpy_to_vtk(np.ascontiguousarray(voxels).ravel(), deep=True,
                                       array_type=numpy_support.get_vtk_array_type(voxels.dtype))
    image.GetPointData().SetScalars(array)
    return image


def _ijk_to_ras(volume: Volume):
    """The IJK-to-RAS matrix of a Volume (ITK/LPS geometry)."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(np.asarray(volume.spacing, dtype=float))
    lps[:3, 3] = np.asarray(volume.origin, dtype=float)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(ras[row, column]))
    return matrix


def item_summary(item: Optional[ReadingItem]) -> str:
    """What the reader sees about an item: its position only ('Pair 3 of 12')."""
    return "All pairs scored" if item is None else f"Pair {item.index + 1} of {item.total}"
