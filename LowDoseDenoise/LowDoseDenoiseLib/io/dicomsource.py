"""The typed hand-off between the DICOM reader and the derived-series writer.

:class:`DicomSource` describes the series a volume was read from: what
:mod:`.dicomwrite` needs to place a derived series in the same patient, study and frame
of reference and to point each derived slice at its source image.  :mod:`.dicomread`
fills it (``Volume.dicom``); nothing else does.  The attribute tables below say which
header attributes are copied, module by module (DICOM PS3.3), as highdicom's
``copy_patient_and_study_information`` does.

This module imports neither the reader nor the writer, so the two never import each other.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import InputError

__all__ = [
    "ACQUISITION_KEYWORDS",
    "COPIED_KEYWORDS",
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "EQUIPMENT_KEYWORDS",
    "FRAME_OF_REFERENCE_KEYWORDS",
    "PATIENT_KEYWORDS",
    "PATIENT_STUDY_KEYWORDS",
    "STUDY_KEYWORDS",
    "DicomSource",
    "note",
    "require_pydicom",
]


logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

#: Patient module (C.7.1.1) attributes copied into a derived series.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "PatientIdentityRemoved", "DeidentificationMethod")
#: Patient Study module (C.7.2.2).
PATIENT_STUDY_KEYWORDS = ("PatientAge", "PatientSize", "PatientWeight")
#: General Study module (C.7.2.1).
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                  "ReferringPhysicianName", "StudyID", "StudyDescription")
#: Frame of Reference module (C.7.4.1).
FRAME_OF_REFERENCE_KEYWORDS = ("FrameOfReferenceUID", "PositionReferenceIndicator")
#: General Equipment module (C.7.5.1).
EQUIPMENT_KEYWORDS = ("Manufacturer", "ManufacturerModelName", "InstitutionName")
#: General Series (C.7.3.1), General Acquisition and CT Image (C.8.2.1) attributes that
#: describe the acquisition the derived images still come from.
ACQUISITION_KEYWORDS = ("Laterality", "BodyPartExamined", "PatientPosition", "KVP", "AcquisitionNumber",
                        "AcquisitionDate", "AcquisitionTime", "SliceThickness", "ConvolutionKernel",
                        "XRayTubeCurrent", "Exposure", "ExposureTime", "CTDIvol", "ContrastBolusAgent",
                        "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
COPIED_KEYWORDS = (PATIENT_KEYWORDS + PATIENT_STUDY_KEYWORDS + STUDY_KEYWORDS + FRAME_OF_REFERENCE_KEYWORDS
                   + EQUIPMENT_KEYWORDS + ACQUISITION_KEYWORDS)


@dataclass
class DicomSource:
    """The DICOM series a volume was read from, slice lists in the volume's slice order.

    ``attributes`` holds the header attributes of :data:`COPIED_KEYWORDS` that the first
    slice carries, as plain Python values (and ``CTDIPhantomType`` as a code triple).
    ``positions`` are the true Image Position (Patient) of each slice in mm (LPS): with
    a gap or gantry tilt they are not on the volume's regular grid, and the derived
    series uses them so that positions and references agree with the source.
    """

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    series_description: str = ""
    series_number: Optional[int] = None
    sop_instance_uids: List[str] = field(default_factory=list)
    sop_class_uids: List[str] = field(default_factory=list)
    frame_numbers: List[Optional[int]] = field(default_factory=list)
    source_files: List[str] = field(default_factory=list)
    positions: List[Tuple[float, float, float]] = field(default_factory=list)
    orientation: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window_center: Any = None
    window_width: Any = None
    window_explanation: Any = None
    specific_character_set: Any = None
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    transfer_syntax: str = ""
    attributes: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def slices(self) -> int:
        return len(self.sop_instance_uids)

    def attribute(self, keyword: str, default: Any = None) -> Any:
        """A copied header attribute (see :data:`COPIED_KEYWORDS`) or ``default``."""
        return self.attributes.get(keyword, default)

    def copied(self, keywords: Tuple[str, ...]) -> Mapping[str, Any]:
        """The copied attributes of one module table, in table order."""
        return {k: self.attributes[k] for k in keywords if k in self.attributes}


def note(message: str, notes: Optional[List[str]] = None, stacklevel: int = 3) -> None:
    """Warn the user (``warnings``) and log it; keep it in ``notes`` for the record."""
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=stacklevel)
    if notes is not None:
        notes.append(message)


def require_pydicom():
    """The pydicom module, or an InputError that says how to install it."""
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a declared dependency
        raise InputError("Reading DICOM needs the pydicom package; install it with: pip install pydicom") from None
    return pydicom
