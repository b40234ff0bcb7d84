"""A headless MRML scene wired like the Slicer application's, for scripts and tests.

With the ``slicer-core`` wheel (real MRML classes, no Qt, no ``slicer.app``) a bare
``vtkMRMLScene`` has no views.  :class:`ApplicationScene` adds what the application
creates at start-up: the application logic, default colour tables, slice orientation
presets, the layout logic (which makes the slice nodes) and one slice logic per slice
node (which makes its composite node and renders the view).  The comparison views of
:class:`~LowDoseDenoiseLib.slicer.scene.DenoiseLogic` then work exactly as in Slicer.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ["ApplicationScene"]


class ApplicationScene:
    """A slicer-core scene with application, colour, layout and slice logics."""

    def __init__(self, view_size: Tuple[int, int] = (160, 120)):
        import slicer
        import vtk

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkMRMLColorLogic()  # default colour tables, as in the application
        self.color_logic.SetMRMLScene(self.scene)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        self.layout_logic = slicer.vtkMRMLLayoutLogic()
        self.layout_logic.SetMRMLScene(self.scene)
        self.slice_logics: Dict[str, Any] = {}  #: vtkMRMLSliceLogic per layout name
        collection = vtk.vtkCollection()
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            slice_node = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            logic.SetSliceNode(slice_node)
            slice_node.SetDimensions(view_size[0], view_size[1], 1)
            self.slice_logics[slice_node.GetLayoutName()] = logic
            collection.AddItem(logic)
        self.app_logic.SetSliceLogics(collection)
        self.sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def composite(self, name: str):
        """The composite node (layers) of the slice view ``name`` (Red, Yellow, Green)."""
        return self.slice_logics[name].GetSliceCompositeNode()

    def slice_node(self, name: str):
        return self.slice_logics[name].GetSliceNode()

    def layout_node(self):
        return self.layout_logic.GetLayoutNode()

    def close(self) -> None:
        """Detach the logics from the scene, then clear it, in the order the application does.

        Left to Python's garbage collector, the scene may be destroyed before the slice
        logics that observe it (a crash at exit); call this when done, or use the
        scene as a context manager.
        """
        if self.scene is None:
            return
        self.app_logic.SetSliceLogics(None)
        for logic in self.slice_logics.values():
            logic.SetMRMLScene(None)
        self.slice_logics.clear()
        self.layout_logic.SetMRMLScene(None)
        self.color_logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(1)
        self.scene = None
        self.sh = None

    def __enter__(self) -> ApplicationScene:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def node_ids(self) -> set:
        """IDs of every node in the scene (to check that nothing was added or left behind)."""
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
