"""DICOM export of a denoised volume node: into the patient and study of its *own* source.

The output node keeps a reference to the volume it was made from
(:data:`~.scene.SOURCE_REFERENCE_ROLE`).  Export starts from that reference, never from
whatever is selected as the input, and refuses when the source is gone or no longer
matches the output's grid, so a result cannot be filed into another patient's study.

Three routes, chosen by :func:`plan_export`:

* ``DERIVED``: the source's DICOM files are at hand (Slicer's DICOM database knows the
  source's instance UIDs).  :func:`write_derived` writes a derived series with
  :mod:`LowDoseDenoiseLib.io.dicomwrite`: same patient, study and frame of reference,
  a Source Image Sequence per slice.
* ``SLICER_EXPORTER``: no files, but the source sits in a patient/study of the subject
  hierarchy.  Slicer's DICOM scalar-volume exporter writes the series; its exportable
  gets the patient and study tags of the hierarchy and the study's UID
  (:func:`exporter_tags`), which only Slicer's export dialog would otherwise fill in.
* ``NEW_STUDY``: neither.  The derived-series writer starts a new anonymous study and
  says so in the plan's notes.

MRML only (no Qt, no ``slicer.app``): the module file runs Slicer's exporter and adds the
written series to Slicer's DICOM database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from .preview import PREVIEW_ATTRIBUTE
from .scene import ATTRIBUTE_PREFIX, SOURCE_REFERENCE_ROLE, ijk_to_ras, volume_array, volume_from_node

__all__ = [
    "DicomExportPlan",
    "ExportRoute",
    "check_source",
    "exporter_folder",
    "exporter_tags",
    "hierarchy_tags",
    "instance_files",
    "plan_export",
    "series_folder",
    "source_instance_uids",
    "write_derived",
]

#: Geometry of source and output must agree to this many mm (IJK-to-RAS elements).
GEOMETRY_TOLERANCE_MM = 1e-3
#: Attribute Slicer's DICOM loader writes on a volume node: its instance UIDs, space-separated.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


class ExportRoute(enum.Enum):
    """How a denoised volume becomes a DICOM series (see the module docstring)."""

    DERIVED = "derived"
    SLICER_EXPORTER = "slicer-exporter"
    NEW_STUDY = "new-study"


@dataclass
class DicomExportPlan:
    """Everything an export needs, gathered on the main thread before anything is written."""

    output_id: str
    source_id: str
    route: ExportRoute
    source_files: List[Path] = field(default_factory=list)
    patient: Dict[str, str] = field(default_factory=dict)  # DICOM tag name -> value (subject hierarchy)
    study: Dict[str, str] = field(default_factory=dict)
    study_uid: str = ""
    series_description: str = ""
    model_info: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def check_source(output_node):
    """The source volume of ``output_node``; InputError when it is gone or no longer matches.

    "Matches" means the same voxel grid: dimensions and IJK-to-RAS matrix (the output is
    made on the source's grid, so any difference means the source was changed or
    replaced since).
    """
    if output_node is None:
        raise InputError("No denoised volume is selected; choose the result to export.")
    name = output_node.GetName()
    if output_node.GetAttribute(PREVIEW_ATTRIBUTE):
        raise InputError(
            f"'{name}' is a preview of part of the volume only ({output_node.GetAttribute(PREVIEW_ATTRIBUTE)}); "
            "it is not filed as a DICOM series. Press Apply to denoise the whole volume, then export the result."
        )
    source = output_node.GetNodeReference(SOURCE_REFERENCE_ROLE)
    if source is None:
        if output_node.GetAttribute(ATTRIBUTE_PREFIX + "ModelName") is None:
            raise InputError(
                f"'{name}' was not made by Low-Dose CT Denoise, so its source study is unknown; "
                "export the result of a denoising run (or use the DICOM module's export)."
            )
        raise InputError(
            f"The volume '{name}' was denoised from is no longer in the scene, so the patient and study "
            "it belongs to are unknown; load the original series and denoise it again before exporting."
        )
    out_image, src_image = output_node.GetImageData(), source.GetImageData()
    if out_image is None or src_image is None:
        raise InputError(f"'{name}' or its source '{source.GetName()}' holds no voxels; nothing to export.")
    same_grid = tuple(out_image.GetDimensions()) == tuple(src_image.GetDimensions()) and np.allclose(
        ijk_to_ras(output_node), ijk_to_ras(source), atol=GEOMETRY_TOLERANCE_MM, rtol=0.0
    )
    if not same_grid:
        raise InputError(
            f"The source volume '{source.GetName()}' no longer matches '{name}' (its size or position changed "
            "since denoising), so the result cannot be filed into its study safely; denoise it again, then export."
        )
    return source


def source_instance_uids(node) -> List[str]:
    """SOP Instance UIDs of the DICOM files a volume was loaded from (Slicer's DICOM loader sets them)."""
    return (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split() if node is not None else []


def _subject_hierarchy(scene):
    return scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")


def hierarchy_tags(scene, node) -> Tuple[Dict[str, str], Dict[str, str], str]:
    """(patient tags, study tags, study UID) of the patient and study ``node`` sits in.

    Read from the subject hierarchy as Slicer's DICOM export dialog does: the items'
    ``DICOM.<tag>`` attributes for the tags Slicer names
    (``vtkMRMLSubjectHierarchyConstants.GetDICOMPatientTagNames``/``GetDICOMStudyTagNames``)
    and the study item's DICOM UID.  Empty when the node is not in a study.
    """
    import slicer

    constants = slicer.vtkMRMLSubjectHierarchyConstants
    sh = _subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node) if sh is not None and node is not None else 0
    study = sh.GetItemParent(item) if item else 0
    if not study or sh.GetItemLevel(study) != constants.GetDICOMLevelStudy():
        return {}, {}, ""
    patient = sh.GetItemParent(study)
    prefix = constants.GetDICOMAttributePrefix()

    def tags(item_id: int, names: Sequence[str]) -> Dict[str, str]:
        if not item_id:
            return {}
        return {name: sh.GetItemAttribute(item_id, prefix + name) for name in names}

    patient_tags = tags(patient, list(constants.GetDICOMPatientTagNames()))
    if patient and not patient_tags.get(constants.GetDICOMPatientNameTagName()):
        patient_tags[constants.GetDICOMPatientNameTagName()] = sh.GetItemName(patient)
    study_tags = tags(study, list(constants.GetDICOMStudyTagNames()))
    uid_tag = constants.GetDICOMStudyInstanceUIDTagName()
    study_uid = sh.GetItemUID(study, constants.GetDICOMUIDName()) or study_tags.get(uid_tag, "")
    study_tags.pop(uid_tag, None)
    if not study_tags.get(constants.GetDICOMStudyDescriptionTagName()):
        study_tags[constants.GetDICOMStudyDescriptionTagName()] = sh.GetItemName(study)
    return patient_tags, study_tags, study_uid


def _model_info(output_node) -> Dict[str, str]:
    def attribute(key: str) -> str:
        return output_node.GetAttribute(ATTRIBUTE_PREFIX + key) or ""

    return {
        "name": attribute("ModelName"),
        "version": attribute("ModelVersion"),
        "sha256": attribute("ModelSHA256"),
        "strength": attribute("Strength"),
        "ensemble": attribute("Ensemble"),  # "" on results made before the self-ensemble was recorded
    }


def plan_export(scene, output_node, source_files: Sequence[Union[str, Path]] = ()) -> DicomExportPlan:
    """Check the output and its source and choose the route; nothing is written.

    ``source_files`` are the source's DICOM files (inside Slicer: looked up in the DICOM
    database by :func:`source_instance_uids`); files that do not exist are ignored.
    """
    source = check_source(output_node)
    files = [Path(f) for f in source_files if f and Path(f).is_file()]
    uids = source_instance_uids(source)
    plan = DicomExportPlan(
        output_id=output_node.GetID(),
        source_id=source.GetID(),
        route=ExportRoute.NEW_STUDY,
        model_info=_model_info(output_node),
        series_description=output_node.GetName() or "denoised",
    )
    if files:
        plan.route, plan.source_files = ExportRoute.DERIVED, files
        if uids and len(files) != len(uids):
            plan.notes.append(
                f"{len(files)} of the source's {len(uids)} DICOM files were found in the database; "
                "the derived series references those."
            )
        return plan
    plan.patient, plan.study, plan.study_uid = hierarchy_tags(scene, source)
    if plan.study:
        plan.route = ExportRoute.SLICER_EXPORTER
        if not plan.study_uid:
            plan.notes.append(
                "The study in the subject hierarchy has no Study Instance UID; Slicer's exporter starts a new one."
            )
        return plan
    plan.notes.append(
        f"'{source.GetName()}' is not DICOM and sits in no patient/study, so the series starts a new anonymous "
        "study; import it next to the right patient with care."
    )
    return plan


def exporter_tags(plan: DicomExportPlan) -> Dict[str, str]:
    """Tags to set on Slicer's scalar-volume exportable (``exportable.setTag``) for this plan."""
    if plan.route is not ExportRoute.SLICER_EXPORTER:
        raise InputError(f"This export takes the {plan.route.value} route, not Slicer's exporter.")
    tags = dict(plan.patient)
    tags.update(plan.study)
    if plan.study_uid:
        tags["StudyInstanceUID"] = plan.study_uid
    tags["SeriesDescription"] = plan.series_description[:64]
    tags["Modality"] = "CT"
    return {name: value for name, value in tags.items() if value is not None}


def exporter_folder(folder: Union[str, Path], item_id: int) -> Path:
    """Where Slicer's scalar-volume exporter writes: ``<folder>/ScalarVolume_<item id>`` (5.6 to 5.12)."""
    return Path(folder) / f"ScalarVolume_{int(item_id)}"


def write_derived(scene, plan: DicomExportPlan, folder: Union[str, Path], overwrite: bool = False) -> Path:
    """Write the plan's output as a derived series (routes DERIVED and NEW_STUDY); return the folder."""
    from ..io import dicomread, dicomwrite

    if plan.route is ExportRoute.SLICER_EXPORTER:
        raise InputError("This export goes through Slicer's DICOM exporter (no source files are at hand).")
    output_node = scene.GetNodeByID(plan.output_id)
    if output_node is None:
        raise InputError("The denoised volume was removed from the scene; nothing was written.")
    check_source(output_node)
    source = dicomread.read_series(plan.source_files) if plan.route is ExportRoute.DERIVED else None
    volume = volume_from_node(output_node, volume_array(output_node))
    if source is not None and tuple(source.voxels.shape) != tuple(volume.voxels.shape):
        raise InputError(
            f"The source DICOM files hold {source.voxels.shape[0]} slices of "
            f"{source.voxels.shape[2]}×{source.voxels.shape[1]}, the denoised volume "
            f"{volume.voxels.shape[0]} of {volume.voxels.shape[2]}×{volume.voxels.shape[1]}; "
            "export refuses to mix them. Reload the series from the DICOM database and denoise it again."
        )
    written = dicomwrite.write_derived_series(
        volume, volume.voxels, Path(folder), source=source, model_info=plan.model_info, overwrite=overwrite
    )
    return Path(written)


def instance_files(database, uids: Sequence[str]) -> List[Path]:
    """Files of ``uids`` in a DICOM database object with ``fileForInstance(uid)`` (ctkDICOMDatabase)."""
    if database is None:
        return []
    found = []
    for uid in uids:
        path = database.fileForInstance(uid)
        if path and Path(path).is_file():
            found.append(Path(path))
    return found



def series_folder(parent: Union[str, Path], name: str) -> Path:
    """A new, not yet existing folder in ``parent`` for one series, named after ``name``."""
    import re

    parent = Path(parent)
    if not parent.is_dir():
        raise InputError(f"Folder {parent} does not exist; choose an existing folder for the DICOM series.")
    stem = re.sub(r"[^\w.-]+", "_", name).strip("._")[:60] or "denoised"
    candidate, number = parent / stem, 2
    while candidate.exists():
        candidate, number = parent / f"{stem}_{number}", number + 1
    return candidate
