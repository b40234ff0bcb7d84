"""DICOM out: write a denoised volume as a derived CT series of its source's study.

:func:`write_derived_series` creates a new series in the *same* patient, study and frame
of reference as the source (a :class:`DicomSource`, from :mod:`.dicomread`), with new
UIDs under :data:`UID_ROOT`, Image Type ``DERIVED\\SECONDARY\\AXIAL``, a derivation
description naming the model, and a Source Image Sequence pointing at every source
slice.  Each derived slice sits at the true Image Position (Patient) of the source slice
it references, so a series with a missing slice or gantry tilt keeps its geometry.
Pixel data is int16 with the source's rescale, Explicit VR Little Endian, uncompressed
or (``compression``) RLE Lossless or JPEG 2000 Lossless.

Each DICOM module (PS3.3) is built by its own small function from a :class:`_SeriesPlan`
computed once per series, as highdicom does by module tables.  The folder is checked by
:func:`.outputs.check_output` and written by :func:`.outputs.atomic_folder`, so a failure
leaves nothing and source files are only ever read.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..volume import Volume, as_xyz
from .dicomsource import (
    CT_IMAGE_STORAGE,
    EQUIPMENT_KEYWORDS,
    PATIENT_KEYWORDS,
    PATIENT_STUDY_KEYWORDS,
    DicomSource,
)
from .dicomsource import note as _note
from .dicomsource import require_pydicom as _pydicom
from .outputs import PathLike, atomic_folder, check_output

__all__ = [
    "COMPRESSIONS",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "JPEG2000_LOSSLESS",
    "JPEG_LS_LOSSLESS",
    "RLE_LOSSLESS",
    "UID_ROOT",
    "new_uid",
    "resolve_compression",
    "source_folders",
    "write_derived_series",
]


logger = logging.getLogger(__name__)

#: Root of every UID this module creates.  ``2.25.`` is the ISO/ITU-T arc for UIDs
#: derived from a random UUID (DICOM PS3.5 B.2): ``2.25.<the UUID as one decimal
#: integer>``, unique without registering an organisation root.  Pass another root
#: (ending in ".") to :func:`write_derived_series` to use your organisation's.
UID_ROOT = "2.25."

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
#: ``compression`` choices of :func:`write_derived_series` and their transfer syntaxes.
COMPRESSIONS = {"none": EXPLICIT_VR_LITTLE_ENDIAN, "rle": RLE_LOSSLESS, "jpeg2000": JPEG2000_LOSSLESS,
                "jpeg-ls": JPEG_LS_LOSSLESS}

#: Body Part Examined values of unpaired structures (DICOM PS3.16 CID 4031, as dciodvfy
#: knows them): for these Laterality must be absent; for any other value (or none) it
#: is type 2, so an empty Laterality is written.
_UNPAIRED_BODY_PARTS = frozenset(
    "ABDOMEN ABDOMENPELVIS AORTA BLADDER BRAIN CEREBELLUM CERVIX CHEST CHESTABDOMEN CHESTABDPELVIS "
    "CIRCLEOFWILLIS COCCYX COLON CORONARYARTERY CSPINE CTSPINE DUODENUM ESOPHAGUS GALLBLADDER HEAD HEADNECK "
    "HEART ILEUM ILIUM JEJUNUM LARYNX LIVER LSPINE LSSPINE MAXILLA MEDIASTINUM MOUTH NECK NECKCHEST "
    "NECKCHESTABDOMEN NECKCHESTABDPELV NOSE PANCREAS PELVIS PENIS PHARYNX PROSTATE RECTUM SCALP SKULL SPINE "
    "SPLEEN SSPINE STERNUM STOMACH THYMUS THYROID TLSPINE TONGUE TRACHEA TSPINE URETER URETHRA UTERUS VAGINA "
    "VULVA WHOLEBODY".split()
)
#: Positions within this distance (mm) of the volume's regular grid count as on it.
_ON_GRID_MM = 0.01


# --------------------------------------------------------------------------- values


def new_uid(uid_root: str = UID_ROOT) -> str:
    """A new globally unique UID: ``2.25.<random UUID as decimal>`` or under ``uid_root``."""
    from pydicom.uid import generate_uid

    if uid_root in ("2.25", "2.25."):
        return generate_uid(prefix=None)
    root = uid_root if uid_root.endswith(".") else uid_root + "."
    if len(root) > 54:
        raise InputError(f"UID root {uid_root!r} is too long; a root leaves room for at least 10 digits.")
    return generate_uid(prefix=root)


def _ds(value: float) -> str:
    """A number as a valid DS string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    value = float(value)
    if value == 0:
        return "0"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format_number_as_ds(value)


def _set(ds, keyword: str, value) -> None:
    """Set ``keyword`` from a plain value, formatting numbers for their VR."""
    from pydicom.datadict import dictionary_VR

    vr = dictionary_VR(keyword)
    if value is None or value == "":
        setattr(ds, keyword, "")
        return
    values = value if isinstance(value, list) else [value]
    if vr == "DS":
        values = [_ds(v) for v in values]
    elif vr == "IS":
        values = [int(float(v)) for v in values]
    setattr(ds, keyword, values if isinstance(value, list) else values[0])


def _copy(ds, attributes: Mapping[str, Any], keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in attributes:
            _set(ds, keyword, attributes[keyword])


def _code_item(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _sequence(items):
    from pydicom.sequence import Sequence as DicomSequence

    return DicomSequence(list(items))


# --------------------------------------------------------------------------- the plan


@dataclass
class _SeriesPlan:
    """Everything the module builders need, computed once for the whole series."""

    source: Optional[DicomSource]
    attributes: Dict[str, Any]
    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int
    description: str
    derivation: str
    slope: float
    intercept: float
    rows: int
    columns: int
    spacing: Tuple[float, float, float]
    row: np.ndarray
    col: np.ndarray
    positions: np.ndarray  # (slices, 3), LPS mm
    per_slice: bool
    date: str
    time: str
    transfer_syntax: str
    sop_uids: List[str] = field(default_factory=list)


def _source_of(volume: Volume, source: Optional[Volume]) -> Optional[DicomSource]:
    for candidate in (source, volume):
        if candidate is not None and candidate.dicom is not None:
            return candidate.dicom
    return None


def _slice_positions(volume: Volume, info: Optional[DicomSource], per_slice: bool,
                     notes: List[str]) -> np.ndarray:
    """Each slice's Image Position: the source slice's own where it references one, else the grid's."""
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    origin = np.asarray(volume.origin, dtype=float)
    k = np.arange(volume.voxels.shape[0])[:, None]
    grid = origin[None, :] + k * float(volume.spacing[2]) * direction[:, 2][None, :]
    if not per_slice or info is None or len(info.positions) != len(grid):
        return grid
    true = np.asarray(info.positions, dtype=float)
    same_plane = np.allclose(np.asarray(info.orientation[:3]), direction[:, 0], atol=1e-4) and np.allclose(
        np.asarray(info.orientation[3:6]), direction[:, 1], atol=1e-4)
    if not same_plane or np.linalg.norm(true[0] - origin) > max(float(volume.spacing[2]), 1.0):
        return grid  # the volume was resampled or moved: its own grid is its geometry
    off = float(np.max(np.linalg.norm(true - grid, axis=1)))
    if off > _ON_GRID_MM:
        _note(f"The source slices are not on a regular grid (up to {off:.2f} mm off it: a gap or gantry tilt); "
              "each derived slice is written at the true position of the source slice it references.", notes)
    return true


def _plan(volume: Volume, hu: np.ndarray, info: Optional[DicomSource], model_info: Mapping[str, Any],
          uid_root: str, transfer_syntax: str, notes: List[str]) -> _SeriesPlan:
    n_slices = hu.shape[0]
    if info is not None and info.slices != n_slices:
        _note(f"The source series has {info.slices} slices, the volume {n_slices}; the derived series cannot "
              "point at each source slice, so it references the series only.", notes)
        per_slice = False
    else:
        per_slice = info is not None
    model = dict(model_info or {})
    model_name = str(model.get("name") or "LowDoseDenoise")
    attributes: Dict[str, Any] = dict(info.attributes) if info else {}
    if info is None:
        _note("The input is not DICOM, so the derived series starts a new anonymous study (placeholder patient "
              "'Anonymous'); it is not linked to any patient. Import it next to the right patient with care.", notes)
        attributes = {"PatientName": "Anonymous", "PatientID": "LOWDOSE-" + new_uid(uid_root)[-10:]}
    study_uid = str(attributes.get("StudyInstanceUID", "") or "")
    if not study_uid:
        if info is not None:
            _note("The source series has no Study Instance UID (de-identified?); the derived series gets a new "
                  "study and will not group with the source in a PACS.", notes)
        study_uid = new_uid(uid_root)
    frame_uid = str(attributes.get("FrameOfReferenceUID", "") or "") or new_uid(uid_root)
    source_number = info.series_number if info else None
    description = f"{(info.series_description if info else '') or 'CT'} denoised ({model_name})"
    if len(description) > 64:
        description = description[:61] + "..."
    sha = str(model.get("sha256") or "")
    derivation = (
        f"Denoised with LowDoseDenoise, model {model_name} version {model.get('version', 'unknown')}"
        f" (sha256 {sha[:12] or 'unknown'}), strength {model.get('strength', 1.0)}"
        + (f", self-ensemble {model['ensemble']}" if model.get("ensemble") else "")
    )[:1024]
    slope = float(info.rescale_slope or 1.0) if info else 1.0
    intercept = float(info.rescale_intercept or 0.0) if info else 0.0
    if info is None:
        intercept = -1024.0 if float(np.min(hu)) >= -1024 - 32768 else 0.0
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    now = datetime.datetime.now()
    return _SeriesPlan(
        source=info, attributes=attributes, study_uid=study_uid, series_uid=new_uid(uid_root), frame_uid=frame_uid,
        series_number=(int(source_number) if source_number is not None else 0) + 1000,
        description=description, derivation=derivation, slope=slope, intercept=intercept,
        rows=int(hu.shape[1]), columns=int(hu.shape[2]), spacing=as_xyz(volume.spacing),
        row=direction[:, 0], col=direction[:, 1],
        positions=_slice_positions(volume, info, per_slice, notes), per_slice=per_slice,
        date=now.strftime("%Y%m%d"), time=now.strftime("%H%M%S"), transfer_syntax=transfer_syntax,
        sop_uids=[new_uid(uid_root) for _ in range(n_slices)],
    )


# --------------------------------------------------------------------------- module builders


def _sop_common(ds, plan: _SeriesPlan, k: int) -> None:
    """SOP Common (C.12.1): class, instance, character set, creation date/time."""
    charset = plan.source.specific_character_set if plan.source else None
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = plan.sop_uids[k]
    ds.InstanceCreationDate, ds.InstanceCreationTime = plan.date, plan.time


def _patient_and_study(ds, plan: _SeriesPlan) -> None:
    """Patient (C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2), copied from the source."""
    a = plan.attributes
    _copy(ds, a, PATIENT_KEYWORDS + PATIENT_STUDY_KEYWORDS)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and "DeidentificationMethod" not in ds:
        ds.DeidentificationMethod = "Source series de-identified; method not recorded"
    ds.StudyInstanceUID = plan.study_uid
    ds.StudyDate = a.get("StudyDate", plan.date if plan.source is None else "")
    ds.StudyTime = a.get("StudyTime", plan.time if plan.source is None else "")
    ds.ReferringPhysicianName = a.get("ReferringPhysicianName", "")
    ds.StudyID = a.get("StudyID", "")
    ds.AccessionNumber = a.get("AccessionNumber", "")
    if "StudyDescription" in a:
        ds.StudyDescription = a["StudyDescription"]


def _general_series(ds, plan: _SeriesPlan) -> None:
    """General Series (C.7.3.1): the new series, in the source's patient position."""
    a = plan.attributes
    ds.Modality = "CT"
    ds.SeriesInstanceUID = plan.series_uid
    ds.SeriesNumber = plan.series_number
    ds.SeriesDate, ds.SeriesTime = plan.date, plan.time
    ds.SeriesDescription = plan.description
    ds.PatientPosition = a.get("PatientPosition", "")
    if "BodyPartExamined" in a:
        _set(ds, "BodyPartExamined", a["BodyPartExamined"])
    if "Laterality" in a or str(ds.get("BodyPartExamined", "")).upper() not in _UNPAIRED_BODY_PARTS:
        _set(ds, "Laterality", a.get("Laterality", ""))


def _frame_of_reference(ds, plan: _SeriesPlan) -> None:
    """Frame of Reference (C.7.4.1): the source's, so the series overlays it."""
    ds.FrameOfReferenceUID = plan.frame_uid
    ds.PositionReferenceIndicator = plan.attributes.get("PositionReferenceIndicator", "")


def _equipment(ds, plan: _SeriesPlan) -> None:
    """General Equipment (C.7.5.1): the scanner the source came from; this software."""
    ds.Manufacturer = plan.attributes.get("Manufacturer", "")
    _copy(ds, plan.attributes, [k for k in EQUIPMENT_KEYWORDS if k != "Manufacturer"])
    ds.SoftwareVersions = "LowDoseDenoise"


def _general_image_and_ct(ds, plan: _SeriesPlan, k: int) -> None:
    """General Image (C.7.6.1), General Acquisition and CT Image (C.8.2.1)."""
    a = plan.attributes
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.ContentDate, ds.ContentTime = plan.date, plan.time
    _copy(ds, a, ("AcquisitionDate", "AcquisitionTime"))
    _set(ds, "AcquisitionNumber", a.get("AcquisitionNumber", ""))
    _copy(ds, a, ("ContrastBolusAgent", "ConvolutionKernel", "XRayTubeCurrent", "Exposure", "ExposureTime",
                  "CTDIvol", "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"))
    if "CTDIPhantomType" in a:
        ds.CTDIPhantomTypeCodeSequence = _sequence([_code_item(*a["CTDIPhantomType"])])
    _set(ds, "KVP", a.get("KVP", ""))
    ds.RescaleIntercept = _ds(plan.intercept)
    ds.RescaleSlope = _ds(plan.slope)
    ds.RescaleType = "HU"


def _image_plane(ds, plan: _SeriesPlan, k: int) -> None:
    """Image Plane (C.7.6.2): orientation, the slice's true position, spacing, thickness."""
    ds.ImageOrientationPatient = [_ds(v) for v in list(plan.row) + list(plan.col)]
    position = plan.positions[k]
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(float(np.dot(position, np.cross(plan.row, plan.col))))
    ds.PixelSpacing = [_ds(plan.spacing[1]), _ds(plan.spacing[0])]
    thickness = plan.attributes.get("SliceThickness")
    ds.SliceThickness = _ds(thickness) if thickness is not None else _ds(plan.spacing[2])


def _image_pixel(ds, plan: _SeriesPlan, stored: np.ndarray) -> None:
    """Image Pixel (C.7.6.3) and VOI LUT (C.11.2): signed 16-bit grey pixels, the source's window."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plan.rows, plan.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    info = plan.source
    center = info.window_center if info else 40
    width = info.window_width if info else 400
    if center is not None and width is not None:
        _set(ds, "WindowCenter", center)
        _set(ds, "WindowWidth", width)
        if info is not None and info.window_explanation is not None:
            ds.WindowCenterWidthExplanation = info.window_explanation
    ds.PixelData = stored.tobytes()


def _derivation_and_references(ds, plan: _SeriesPlan, k: int) -> None:
    """Derivation (General Image: description, code, Source Image Sequence) and Common Instance Reference."""
    from pydicom.dataset import Dataset

    ds.DerivationDescription = plan.derivation
    ds.DerivationCodeSequence = _sequence([_code_item("113087", "DCM", "Smoothing")])
    info = plan.source
    if not plan.per_slice or info is None:
        return
    klass = info.sop_class_uids[k] or CT_IMAGE_STORAGE
    item = Dataset()
    item.ReferencedSOPClassUID = klass
    item.ReferencedSOPInstanceUID = info.sop_instance_uids[k]
    frame_number = info.frame_numbers[k] if k < len(info.frame_numbers) else None
    if frame_number is not None:
        item.ReferencedFrameNumber = frame_number
    item.PurposeOfReferenceCodeSequence = _sequence(
        [_code_item("121322", "DCM", "Source image for image processing operation")])
    ds.SourceImageSequence = _sequence([item])
    if info.series_instance_uid and info.sop_instance_uids[k]:
        ref = Dataset()
        ref.ReferencedSOPClassUID = klass
        ref.ReferencedSOPInstanceUID = info.sop_instance_uids[k]
        series_item = Dataset()
        series_item.SeriesInstanceUID = info.series_instance_uid
        series_item.ReferencedInstanceSequence = _sequence([ref])
        ds.ReferencedSeriesSequence = _sequence([series_item])


def _file_meta(ds, plan: _SeriesPlan, k: int) -> None:
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = plan.sop_uids[k]
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta = meta


def _slice_dataset(plan: _SeriesPlan, k: int, stored: np.ndarray):
    """One derived CT image, module by module."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    _sop_common(ds, plan, k)
    _patient_and_study(ds, plan)
    _general_series(ds, plan)
    _frame_of_reference(ds, plan)
    _equipment(ds, plan)
    _general_image_and_ct(ds, plan, k)
    _image_plane(ds, plan, k)
    _image_pixel(ds, plan, stored)
    _derivation_and_references(ds, plan, k)
    _file_meta(ds, plan, k)
    if plan.transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN:
        try:
            ds.compress(plan.transfer_syntax, stored, generate_instance_uid=False)
        except (RuntimeError, ValueError) as error:
            name = next(k for k, v in COMPRESSIONS.items() if v == plan.transfer_syntax)
            reason = str(error).strip().splitlines()[-1].strip()
            raise InputError(f"Cannot encode the {plan.columns}x{plan.rows} slices as {name} ({reason}); choose "
                             "--dicom-compression none or rle.") from None
    return ds


# --------------------------------------------------------------------------- writing


def _stored_values(hu: np.ndarray, slope: float, intercept: float) -> Tuple[np.ndarray, int]:
    """One slice's HU as int16 stored values under the rescale, and how many had to be clipped."""
    raw = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope)
    info = np.iinfo(np.int16)
    clipped = int(np.count_nonzero((raw < info.min) | (raw > info.max)))
    return np.clip(raw, info.min, info.max).astype(np.int16), clipped


def source_folders(info: Optional[DicomSource]) -> List[Path]:
    """The folders holding the source files: a derived series may not be written into them."""
    if info is None:
        return []
    return sorted({Path(name).parent for name in info.source_files})


def resolve_compression(compression: Optional[str], info: Optional[DicomSource]) -> str:
    """The transfer syntax for ``compression`` (none, rle, jpeg2000, jpeg-ls or None: as the source if lossless).

    Raises :class:`InputError` for an unknown name or an encoder that is not installed.
    """
    if compression is None:
        source_syntax = info.transfer_syntax if info else ""
        lossless = {RLE_LOSSLESS: "rle", JPEG2000_LOSSLESS: "jpeg2000", JPEG_LS_LOSSLESS: "jpeg-ls"}
        compression = lossless.get(source_syntax, "none")
        if compression != "none" and not _can_encode(COMPRESSIONS[compression]):
            compression = "none"
    if compression not in COMPRESSIONS:
        raise InputError(f"DICOM compression '{compression}' is not known; choose one of {', '.join(COMPRESSIONS)}.")
    syntax = COMPRESSIONS[compression]
    if syntax != EXPLICIT_VR_LITTLE_ENDIAN and not _can_encode(syntax):
        raise InputError(f"DICOM compression '{compression}' needs an encoder that is not installed "
                         f"({_encoder_hint(syntax)}); choose another compression or install it.")
    return syntax


def _can_encode(syntax: str) -> bool:
    try:
        from pydicom.pixels import get_encoder
    except ImportError:  # pragma: no cover - pydicom < 3
        return syntax == EXPLICIT_VR_LITTLE_ENDIAN
    try:
        return bool(get_encoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _encoder_hint(syntax: str) -> str:
    return {JPEG_LS_LOSSLESS: "pip install pyjpegls", JPEG2000_LOSSLESS: "pip install pylibjpeg-openjpeg"}.get(
        syntax, "pydicom's encoders")


def write_derived_series(
    volume: Volume,
    hu_or_voxels: Optional[np.ndarray],
    out_folder: PathLike,
    source: Optional[Volume] = None,
    model_info: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    uid_root: str = UID_ROOT,
    inputs: Sequence[PathLike] = (),
    compression: Optional[str] = "none",
) -> Path:
    """Write ``hu_or_voxels`` (z, y, x HU; ``None``: ``volume.voxels``) as a derived CT series.

    ``volume`` gives the geometry; ``source`` (default: ``volume`` itself) the DICOM
    series it derives from (``Volume.dicom``).  The new series joins the source's
    patient, study and frame of reference with new Series/SOP Instance UIDs under
    ``uid_root`` (see :data:`UID_ROOT`), Series Number + 1000, description "<source>
    denoised (<model>)", Image Type DERIVED\\SECONDARY\\AXIAL, derivation
    description/code, a Source Image Sequence per slice and the Referenced Series; each
    slice sits at its source slice's true position.  Without a DICOM source (NRRD,
    NIfTI) it starts a new anonymous study and warns.  ``model_info`` keys: name,
    version, sha256, strength[, ensemble].  ``compression``: see :func:`resolve_compression`.  The
    folder may not be (or lie in) a source folder or one of ``inputs``; an existing
    non-empty folder is refused unless ``overwrite``.  Returns ``out_folder``.
    """
    _pydicom()
    out_folder = Path(out_folder)
    notes: List[str] = []
    hu = np.asarray(volume.voxels if hu_or_voxels is None else hu_or_voxels)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.shape != volume.voxels.shape:
        raise InputError(f"The denoised array is {hu.shape}, the volume {volume.voxels.shape}; they must match.")
    if not np.all(np.isfinite(hu)):
        raise InputError("The denoised volume holds NaN or infinite values; nothing was written.")
    info = _source_of(volume, source)
    check_output(out_folder, [*inputs, *source_folders(info)], overwrite=overwrite, folder=True)
    syntax = resolve_compression(compression, info)
    plan = _plan(volume, hu, info, model_info or {}, uid_root, syntax, notes)
    clipped = 0
    with atomic_folder(out_folder) as tmp:
        for k in range(hu.shape[0]):  # slice by slice: no float64 copy of the volume
            stored, count = _stored_values(hu[k], plan.slope, plan.intercept)
            clipped += count
            _slice_dataset(plan, k, stored).save_as(tmp / f"CT{k + 1:05d}.dcm", enforce_file_format=True)
    if clipped:
        info16 = np.iinfo(np.int16)
        low, high = info16.min * plan.slope + plan.intercept, info16.max * plan.slope + plan.intercept
        _note(f"{clipped} voxel(s) lie outside the range int16 pixels can hold with the source's rescale "
              f"({low:g} to {high:g} HU) and were clipped.", notes)
    logger.info("wrote %d derived slices to %s (series %s)", hu.shape[0], out_folder, plan.series_uid)
    for message in notes:
        logger.debug("derived series note: %s", message)
    return out_folder
