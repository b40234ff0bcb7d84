"""Slicer versions this extension supports, and the feature tests for newer APIs.

The minimum is :data:`MINIMUM_SLICER` (5.6).  Every Slicer or MRML API that the module
file or this package calls and that appeared after the minimum is listed in
:data:`NEWER_APIS` with the version that added it and how the code handles its absence;
``docs/slicer-api-versions.md`` is the same list for people, and
``Testing/Python/test_slicer_module_files.py`` checks that the two agree and that each
API exists in the slicer-core wheel.  Code calls the helpers here instead of testing
versions, so an older Slicer takes the fallback and a newer one the direct call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = [
    "MINIMUM_SLICER",
    "NEWER_APIS",
    "NewerApi",
    "clear_item_dicom_identity",
    "slicer_version_problem",
]

#: Oldest Slicer release the module is read against and supported on (major, minor).
MINIMUM_SLICER: Tuple[int, int] = (5, 6)


@dataclass(frozen=True)
class NewerApi:
    """An API newer than :data:`MINIMUM_SLICER`: where it lives, since when, and the fallback."""

    owner: str  # class or Python module, e.g. "vtkMRMLSubjectHierarchyNode", "slicer.packaging"
    name: str  # method or attribute; "" for a whole module
    since: str  # first Slicer release that has it
    fallback: str  # what the code does without it


NEWER_APIS: Tuple[NewerApi, ...] = (
    NewerApi(
        "vtkMRMLSubjectHierarchyNode",
        "GetItemUIDNames",
        "5.8.0",
        "clear_item_dicom_identity: without it the known DICOM UID names are read with GetItemUID and an "
        "item that carries one is re-created (RemoveItem without its node, then CreateItem).",
    ),
    NewerApi(
        "vtkMRMLSubjectHierarchyNode",
        "RemoveItemUID",
        "5.8.0",
        "Used together with GetItemUIDNames; same fallback.",
    ),
    NewerApi(
        "slicer.packaging",
        "",
        "5.12.0",
        "Not used: the only extra package, pydicom, ships with Slicer; torch comes through PyTorchUtils.",
    ),
)


def clear_item_dicom_identity(sh, item: int, parent: int) -> int:
    """Remove every UID and DICOM attribute of subject-hierarchy ``item``; return the item id.

    A reused output node must not keep the original series' DICOM identity.  Slicer 5.8
    and newer list and remove UIDs (``GetItemUIDNames``/``RemoveItemUID``); on 5.6 the
    DICOM UIDs Slicer sets (``DICOM`` and ``DICOMInstanceUID``) are checked by name, and an
    item carrying one is re-created under ``parent`` (the data node stays), which is the
    only way to drop a UID there.  The returned id is the item's id afterwards.
    """
    if hasattr(sh, "GetItemUIDNames") and hasattr(sh, "RemoveItemUID"):
        for uid_name in list(sh.GetItemUIDNames(item) or ()):
            sh.RemoveItemUID(item, uid_name)
    else:
        item = _recreate_if_it_has_dicom_uids(sh, item, parent)
    for attribute in list(sh.GetItemAttributeNames(item) or ()):
        if attribute.startswith("DICOM"):
            sh.RemoveItemAttribute(item, attribute)
    return item


def _recreate_if_it_has_dicom_uids(sh, item: int, parent: int) -> int:
    """The Slicer 5.6 path of :func:`clear_item_dicom_identity` (public for its test)."""
    import slicer

    constants = slicer.vtkMRMLSubjectHierarchyConstants
    names = (constants.GetDICOMUIDName(), constants.GetDICOMInstanceUIDName())
    if not any(sh.GetItemUID(item, name) for name in names):
        return item
    node = sh.GetItemDataNode(item)
    if node is None:
        return item
    sh.RemoveItem(item, False, False)  # keep the data node and any children
    return sh.CreateItem(parent, node)


def slicer_version_problem(major: int, minor: int) -> str:
    """A message when Slicer ``major.minor`` is older than :data:`MINIMUM_SLICER`, else ""."""
    if (int(major), int(minor)) >= MINIMUM_SLICER:
        return ""
    return (
        f"Low-Dose CT Denoise needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer; this is "
        f"{major}.{minor}. Install a current Slicer from download.slicer.org."
    )
