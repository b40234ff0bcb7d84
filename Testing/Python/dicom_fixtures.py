"""Synthetic CT series written with pydicom, for the DICOM reader/writer tests.

Each helper writes real DICOM files (CT Image Storage, Explicit VR Little Endian or
RLE) into a folder and returns what a correct reader must find: the HU array in slice
order and the geometry.  File names and Instance Numbers are deliberately *not* in
slice order, so a reader that sorts by either instead of Image Position fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


@dataclass
class SyntheticSeries:
    """What was written: files, HU in slice order (z, y, x) and the LPS geometry."""

    folder: Path
    paths: List[Path]
    hu: np.ndarray
    spacing: Tuple[float, float, float]  # (x, y, z) mm
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]  # 3x3 row-major, columns = row dir, column dir, normal
    series_uid: str
    study_uid: str
    frame_uid: str
    sop_uids: List[str] = field(default_factory=list)  # in slice order


def oblique_orientation(degrees: float) -> Tuple[float, ...]:
    """Image Orientation (Patient) of an axial plane rotated about the L-R (x) axis."""
    a = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))


def phantom_hu(shape: Tuple[int, int, int], seed: int = 0, noise_hu: float = 15.0) -> np.ndarray:
    """A small body-like HU volume: air, a water ellipse, a bone disc, noise of SD ``noise_hu``."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    bone = ((yy - 0.6 * y) ** 2 + (xx - x / 2) ** 2) <= (0.1 * min(x, y)) ** 2
    hu = np.full(shape, -1000.0)
    for k in range(z):
        hu[k][body] = 40 + 5 * k
        hu[k][bone] = 900
    hu += rng.normal(0, noise_hu, shape)
    return np.clip(np.rint(hu), -1024, 3071)


def _base_dataset(*, study_uid, series_uid, frame_uid, modality, description, series_number,
                  charset, patient_name) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate, ds.StudyTime = "20240102", "101500"
    ds.SeriesDate, ds.SeriesTime = "20240102", "101600"
    ds.ContentDate, ds.ContentTime = "20240102", "101600"
    ds.AccessionNumber = "ACC123"
    ds.Modality = modality
    ds.Manufacturer = "Synthetic"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = "Abdomen"
    ds.SeriesDescription = description
    ds.PatientName = patient_name
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.SliceThickness = "2"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def _save(ds: Dataset, path: Path, compress: bool) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if compress:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)


def write_ct_series(
    folder: os.PathLike,
    shape: Tuple[int, int, int] = (6, 24, 32),
    spacing: Tuple[float, float, float] = (0.75, 0.8, 2.0),
    origin: Tuple[float, float, float] = (-12.0, -10.0, 50.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    unsigned: bool = True,
    modality: str = "CT",
    description: str = "Synthetic abdomen",
    series_number: int = 3,
    study_uid: Optional[str] = None,
    series_uid: Optional[str] = None,
    frame_uid: Optional[str] = None,
    tilt_degrees: float = 0.0,
    compress: bool = False,
    charset: Optional[str] = "ISO_IR 100",
    patient_name: str = "Müller^Anna",
    seed: int = 0,
    prefix: str = "img",
    noise_hu: float = 15.0,
) -> SyntheticSeries:
    """Write a single-frame CT series; file names and Instance Numbers are shuffled.

    ``spacing`` is (x, y, z) mm; ``tilt_degrees`` shears the stack along the column
    direction (gantry tilt); ``compress`` stores RLE Lossless; ``noise_hu`` is the noise SD
    (0: piecewise-constant slices, whose interiors any interpolation leaves unchanged).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    hu = phantom_hu(shape, seed, noise_hu)
    row = np.asarray(orientation[:3], float)
    col = np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    shear = np.tan(np.radians(tilt_degrees)) * spacing[2]
    stored = np.rint((hu - intercept) / slope)
    dtype = np.uint16 if unsigned else np.int16
    assert stored.min() >= np.iinfo(dtype).min and stored.max() <= np.iinfo(dtype).max
    stored = stored.astype(dtype)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(shape[0])  # file k holds slice order[k]
    sop_uids = [generate_uid() for _ in range(shape[0])]
    paths = []
    for k, z in enumerate(order):
        ds = _base_dataset(study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid, modality=modality,
                           description=description, series_number=series_number, charset=charset,
                           patient_name=patient_name)
        ds.SOPInstanceUID = sop_uids[z]
        ds.InstanceNumber = int(shape[0] - k)  # unrelated to the slice order on purpose
        position = np.asarray(origin) + z * spacing[2] * normal + z * shear * col
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.SliceLocation = f"{float(position @ normal):.4f}"
        ds.Rows, ds.Columns = shape[1], shape[2]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        if tilt_degrees:
            ds.GantryDetectorTilt = f"{tilt_degrees:g}"
        ds.PixelData = stored[z].tobytes()
        path = folder / f"{prefix}{(k * 7919) % 10007:05d}.dcm"
        _save(ds, path, compress)
        paths.append(path)
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())
    return SyntheticSeries(folder=folder, paths=paths, hu=hu, spacing=tuple(spacing), origin=tuple(origin),
                           direction=direction, series_uid=series_uid, study_uid=study_uid, frame_uid=frame_uid,
                           sop_uids=sop_uids)


def add_scout(series: SyntheticSeries, name: str = "scout.dcm") -> Path:
    """Add a localizer (ImageType ...\\LOCALIZER, another size) to the series' folder."""
    ds = _base_dataset(study_uid=series.study_uid, series_uid=series.series_uid, frame_uid=series.frame_uid,
                       modality="CT", description="Topogram", series_number=3, charset="ISO_IR 100",
                       patient_name="Müller^Anna")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["-100", "0", "200"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.Rows, ds.Columns = 40, 20
    ds.PixelSpacing = ["2", "2"]
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelData = np.full((40, 20), 1000, np.uint16).tobytes()
    path = series.folder / name
    _save(ds, path, False)
    return path


def write_enhanced_ct(
    path: os.PathLike,
    shape: Tuple[int, int, int] = (5, 20, 24),
    spacing: Tuple[float, float, float] = (0.7, 0.9, 1.5),
    origin: Tuple[float, float, float] = (10.0, -20.0, 30.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    seed: int = 3,
) -> SyntheticSeries:
    """One multi-frame Enhanced CT object with per-frame positions, frames in reverse slice order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hu = phantom_hu(shape, seed)
    stored = np.rint((hu - intercept) / slope).astype(np.int16)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    ds = _base_dataset(study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid, modality="CT",
                       description="Enhanced synthetic", series_number=5, charset="ISO_IR 100",
                       patient_name="Enhanced^Eve")
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = shape[0]
    ds.Rows, ds.Columns = shape[1], shape[2]
    ds.PixelRepresentation = 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
    measures.SliceThickness = f"{spacing[2]:g}"
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    order = list(range(shape[0]))[::-1]  # frame f holds slice order[f]
    for z in order:
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [f"{origin[0]:g}", f"{origin[1]:g}", f"{origin[2] + z * spacing[2]:g}"]
        item.PlanePositionSequence = DicomSequence([plane])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.ascontiguousarray(stored[order]).tobytes()
    _save(ds, path, False)
    return SyntheticSeries(folder=path.parent, paths=[path], hu=hu, spacing=spacing, origin=origin,
                           direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), series_uid=series_uid,
                           study_uid=study_uid, frame_uid=frame_uid, sop_uids=[ds.SOPInstanceUID])


def read_header(path: os.PathLike) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)
