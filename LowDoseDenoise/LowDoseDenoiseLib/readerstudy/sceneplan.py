"""Plan a reader study from volume nodes of a Slicer scene (MRML, no Qt).

The Slicer module's "Plan a study" section calls :func:`plan_study_from_nodes`; it
turns every chosen node into a :class:`~.plan.CaseSource` (voxels and geometry copied
from the node when the case is planned) and hands them to the same
:func:`~.plan.plan_study` the command line runs, so a study planned in Slicer and one
planned with ``lowdose-denoise reader-study plan`` are made and blinded alike.  The
node names go only to the key; the nodes themselves are never modified.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from ..errors import InputError
from ..volume import Volume
from . import protocol as p
from .plan import CaseSource, StudyPlan, plan_study

__all__ = ["check_case_node", "node_case", "plan_study_from_nodes"]


def check_case_node(node: Any, scene: Any = None) -> None:
    """Raise :class:`InputError` unless ``node`` is a scalar (grey-scale) volume with voxels, in ``scene``."""
    if node is None:
        raise InputError("A chosen case is empty; choose the CT volumes to read.")
    name = node.GetName() or node.GetID()
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{name}' is a {node.GetClassName()}, not a CT volume; choose scalar volumes as cases.")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"'{name}' is a label map (a segmentation), not a CT image; choose the CT volume itself.")
    if node.IsA("vtkMRMLVectorVolumeNode"):
        raise InputError(f"'{name}' is a colour or vector image; choose a scalar (grey-scale) CT volume.")
    if scene is not None and node.GetScene() is not scene:
        raise InputError(f"'{name}' belongs to another scene.")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"'{name}' holds no voxels; load the image data first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel; choose a scalar CT volume."
        )


def node_case(node: Any) -> CaseSource:
    """A :class:`CaseSource` for a checked volume node: its voxels and geometry are copied when planned."""
    from ..slicer.scene import volume_from_node

    name, node_id = node.GetName() or "", node.GetID() or ""

    def load() -> Volume:
        volume = volume_from_node(node)  # a copy of the voxels; the node is not touched
        return Volume(voxels=volume.voxels, spacing=volume.spacing, origin=volume.origin,
                      direction=volume.direction)

    return CaseSource(source=f"Slicer volume '{name}' ({node_id})", load=load, identity=f"mrml:{node_id}")


def plan_study_from_nodes(
    nodes: Sequence[Any],
    methods: Union[str, Sequence[str]],
    out: Union[str, os.PathLike],
    readers: Union[int, Sequence[str]] = 2,
    seed: int = 0,
    pairs: str = "reference",
    window: Tuple[float, float] = p.DEFAULT_WINDOW,
    device: str = "auto",
    overwrite: bool = False,
    force: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    scene: Any = None,
    cancel: Any = None,
) -> StudyPlan:
    """:func:`~.plan.plan_study` with scene volume nodes as the cases (arguments as there).

    ``scene``, when given, is the scene every node must belong to.  Usable from
    Slicer's Python console and scripts as well as from the module.
    """
    node_list: List[Any] = list(nodes)
    if not node_list:
        raise InputError("Choose at least one volume as a case (Cases: the scene's CT volumes to read).")
    for node in node_list:
        check_case_node(node, scene)
    return plan_study([node_case(node) for node in node_list], methods, out, readers=readers, seed=seed,
                      pairs=pairs, window=window, device=device, overwrite=overwrite, force=force,
                      progress=progress, cancel=cancel)
