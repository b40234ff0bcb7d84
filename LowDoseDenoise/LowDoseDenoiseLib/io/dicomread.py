"""DICOM in: read a CT series robustly into a :class:`Volume` with a typed :class:`DicomSource`.

:func:`read_series` (and :func:`list_series`) takes a folder (searched recursively) or a
list of files, groups them by Series Instance UID, picks one CT series, sorts the slices
by Image Position (Patient) along the slice normal and applies Rescale Slope/Intercept.
Geometry comes from Image Orientation/Position, so oblique series stay correct.
Compressed transfer syntaxes decode through pydicom + pylibjpeg, and multi-frame
Enhanced CT objects are read frame by frame from their functional groups.  Every problem
a radiologist could meet (a missing slice, a scout mixed in, gantry tilt, two series in
one folder...) becomes a warning or an :class:`InputError` that says what to do.
Source files are only ever read.

What the derived-series writer (:mod:`.dicomwrite`) needs travels in ``Volume.dicom``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..volume import Volume, as_xyz
from .dicomsource import COPIED_KEYWORDS, DicomSource
from .dicomsource import note as _note
from .dicomsource import require_pydicom as _pydicom

__all__ = ["SeriesSummary", "list_series", "read_series"]


logger = logging.getLogger(__name__)

#: Positions closer than this along the normal (mm) count as the same position.
_SAME_POSITION_MM = 0.01
#: Relative spread of slice gaps beyond which the spacing counts as uneven.
_UNEVEN_SPACING = 0.05
#: In-plane drift per slice (as a fraction of the gap) beyond which the stack is tilted.
_TILT_TOLERANCE = 0.01



# --------------------------------------------------------------------------- scanning


@dataclass
class _Frame:
    """One image plane: a single-frame file or one frame of a multi-frame object."""

    path: Path
    frame: Optional[int]  # 0-based frame index in a multi-frame object, None for single-frame
    sop_instance_uid: str
    sop_class_uid: str
    rows: int
    columns: int
    orientation: Optional[Tuple[float, ...]]
    position: Optional[Tuple[float, float, float]]
    pixel_spacing: Optional[Tuple[float, float]]
    slope: float
    intercept: float
    is_localizer: bool
    acquisition_number: Optional[str] = None

    @property
    def placed_orientation(self) -> Tuple[float, ...]:
        """Image Orientation (Patient) of a plane that :func:`_check_uniform` accepted (so present)."""
        if self.orientation is None:
            raise ValueError(f"{self.path.name} has no Image Orientation (Patient); _check_uniform refuses it")
        return self.orientation

    @property
    def placed_position(self) -> Tuple[float, float, float]:
        """Image Position (Patient) of a plane that :func:`_check_uniform` accepted (so present)."""
        if self.position is None:
            raise ValueError(f"{self.path.name} has no Image Position (Patient); _check_uniform refuses it")
        return self.position


@dataclass
class _SeriesGroup:
    series_uid: str
    modality: str
    description: str
    series_number: Optional[int]
    first_path: Path
    frames: List[_Frame] = field(default_factory=list)
    localizers: List[_Frame] = field(default_factory=list)
    files: set = field(default_factory=set)

    @property
    def is_ct(self) -> bool:
        return self.modality.upper() == "CT"


@dataclass
class SeriesSummary:
    """One series found in a folder, as :func:`list_series` reports it."""

    series_uid: str
    modality: str
    description: str
    series_number: Optional[int]
    images: int  # image planes, localizers excluded
    localizers: int
    files: int
    rows: Optional[int]
    columns: Optional[int]
    example_file: str

    def line(self) -> str:
        """A one-line description for a table or a message."""
        size = f"{self.columns}x{self.rows}" if self.rows else "?"
        number = "" if self.series_number is None else f"#{self.series_number} "
        scouts = f", {self.localizers} localizer(s)" if self.localizers else ""
        desc = self.description or "(no description)"
        return f"{number}{desc} [{self.modality or '?'}] {self.images} image(s) {size}{scouts}  UID {self.series_uid or '(none)'}"


def _collect_files(path_or_list: Union[os.PathLike, str, Iterable[os.PathLike]]) -> Tuple[List[Path], str]:
    """The candidate files (recursive for a folder) and a label for messages."""
    if isinstance(path_or_list, (str, os.PathLike)):
        root = Path(path_or_list)
        if not root.exists():
            raise InputError(f"Input {root} does not exist; check the path.")
        if root.is_file():
            return [root], str(root)
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        return files, str(root)
    files = [Path(p) for p in path_or_list]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of the given DICOM files do not exist (for example {missing[0]}).")
    label = str(files[0].parent) if files else "the file list"
    return files, label


def _floats(value, count: int) -> Optional[Tuple[float, ...]]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == count else None


def _point(value) -> Optional[Tuple[float, float, float]]:
    """Three floats (an Image Position), or None when the value is not three numbers."""
    out = _floats(value, 3)
    return None if out is None else (out[0], out[1], out[2])


def _pair(value) -> Optional[Tuple[float, float]]:
    """Two floats (a Pixel Spacing), or None when the value is not two numbers."""
    out = _floats(value, 2)
    return None if out is None else (out[0], out[1])


def _first(value):
    """First value of a possibly multi-valued attribute (None if empty)."""
    if value is None or value == "":
        return None
    try:
        from pydicom.multival import MultiValue

        if isinstance(value, (MultiValue, list, tuple)):
            return value[0] if len(value) else None
    except ImportError:  # pragma: no cover
        pass
    return value


def _sop_uids(ds) -> Tuple[str, str]:
    """SOP Instance and Class UIDs, falling back to the file meta (de-identified files)."""
    meta = getattr(ds, "file_meta", None)
    instance = str(ds.get("SOPInstanceUID", "") or "") or str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
    klass = str(ds.get("SOPClassUID", "") or "") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    return instance, klass


def _is_localizer(ds) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type or "SCOUT" in image_type or "TOPOGRAM" in image_type:
        return True
    description = str(ds.get("SeriesDescription", "") or "").upper()
    return ds.get("ImageOrientationPatient") is None and ("SCOUT" in description or "TOPO" in description)


def _rescale(ds) -> Tuple[float, float]:
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    return (float(slope) if slope not in (None, "") else 1.0,
            float(intercept) if intercept not in (None, "") else 0.0)


def _functional(item_or_none, sequence: str, attribute: str):
    """``attribute`` from ``item.<sequence>[0]`` if present."""
    if item_or_none is None:
        return None
    seq = item_or_none.get(sequence)
    if not seq:
        return None
    return seq[0].get(attribute)


def _frames_of(ds, path: Path) -> List[_Frame]:
    """The image planes in one dataset (one, or one per frame of a multi-frame object)."""
    instance, klass = _sop_uids(ds)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    localizer = _is_localizer(ds)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames > 1 or per_frame is not None:
        frames = []
        for index in range(n_frames):
            item = per_frame[index] if per_frame is not None and index < len(per_frame) else None

            def lookup(sequence, attribute, item=item):
                value = _functional(item, sequence, attribute)
                return value if value is not None else _functional(shared, sequence, attribute)

            orientation = lookup("PlaneOrientationSequence", "ImageOrientationPatient")
            orientation = orientation if orientation is not None else ds.get("ImageOrientationPatient")
            position = lookup("PlanePositionSequence", "ImagePositionPatient")
            position = position if position is not None else ds.get("ImagePositionPatient")
            spacing = lookup("PixelMeasuresSequence", "PixelSpacing")
            spacing = spacing if spacing is not None else ds.get("PixelSpacing")
            slope = lookup("PixelValueTransformationSequence", "RescaleSlope")
            intercept = lookup("PixelValueTransformationSequence", "RescaleIntercept")
            base_slope, base_intercept = _rescale(ds)
            frames.append(_Frame(
                path=path, frame=index, sop_instance_uid=instance, sop_class_uid=klass,
                rows=rows, columns=columns,
                orientation=_floats(orientation, 6) if orientation is not None else None,
                position=_point(position) if position is not None else None,
                pixel_spacing=_pair(spacing) if spacing is not None else None,
                slope=float(slope) if slope not in (None, "") else base_slope,
                intercept=float(intercept) if intercept not in (None, "") else base_intercept,
                is_localizer=localizer,
                acquisition_number=str(ds.get("AcquisitionNumber", "") or "") or None,
            ))
        return frames
    slope, intercept = _rescale(ds)
    orientation, position, spacing = (ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"),
                                      ds.get("PixelSpacing"))
    return [_Frame(
        path=path, frame=None, sop_instance_uid=instance, sop_class_uid=klass, rows=rows, columns=columns,
        orientation=_floats(orientation, 6) if orientation is not None else None,
        position=_point(position) if position is not None else None,
        pixel_spacing=_pair(spacing) if spacing is not None else None,
        slope=slope, intercept=intercept, is_localizer=localizer,
        acquisition_number=str(ds.get("AcquisitionNumber", "") or "") or None,
    )]


def _scan(path_or_list, notes: Optional[List[str]] = None) -> Tuple[Dict[str, _SeriesGroup], str]:
    """Read every header once (no pixels) and group the image planes by series."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    files, label = _collect_files(path_or_list)
    if not files:
        raise InputError(f"No files found in {label}; choose the folder that holds the DICOM series.")
    groups: Dict[str, _SeriesGroup] = {}
    not_dicom: List[Path] = []
    unreadable: List[Path] = []
    non_image = 0
    for path in files:
        if path.name.upper() == "DICOMDIR":
            non_image += 1
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            not_dicom.append(path)
            continue
        except Exception:  # truncated or corrupt: pydicom raises many kinds
            unreadable.append(path)
            continue
        if "Rows" not in ds or "Columns" not in ds:
            _, klass = _sop_uids(ds)
            if "Image Storage" in getattr(pydicom.uid.UID(klass), "name", ""):
                unreadable.append(path)  # an image object cut short before its pixel description
            else:
                non_image += 1  # structured report, presentation state, ...
            continue
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        group = groups.get(series_uid)
        if group is None:
            number = ds.get("SeriesNumber", None)
            group = groups[series_uid] = _SeriesGroup(
                series_uid=series_uid,
                modality=str(ds.get("Modality", "") or ""),
                description=str(ds.get("SeriesDescription", "") or ""),
                series_number=int(number) if number not in (None, "") else None,
                first_path=path,
            )
        group.files.add(path)
        try:
            frames = _frames_of(ds, path)
        except Exception as error:  # malformed functional groups and the like
            unreadable.append(path)
            logger.debug("cannot parse %s: %s", path, error)
            continue
        for frame in frames:
            (group.localizers if frame.is_localizer else group.frames).append(frame)
    if unreadable or not_dicom:
        skipped = len(unreadable) + len(not_dicom)
        example = (unreadable or not_dicom)[0]
        if not groups:
            if unreadable:
                raise InputError(
                    f"None of the {len(files)} file(s) in {label} could be read as DICOM ({len(unreadable)} "
                    f"corrupt or truncated, {len(not_dicom)} not DICOM; for example {example.name}). "
                    "Copy the series again from the PACS or CD."
                )
            raise InputError(
                f"No DICOM files in {label}: the {len(files)} file(s) there are not DICOM "
                f"(for example {example.name}). Choose the folder that holds the CT series."
            )
        _note(
            f"Skipped {skipped} of {len(files)} file(s) in {label} that could not be read as DICOM images "
            f"({len(unreadable)} corrupt or truncated, {len(not_dicom)} not DICOM; for example {example.name}).",
            notes,
        )
    if not groups:
        raise InputError(
            f"No DICOM images in {label} ({len(files)} file(s), {non_image} DICOM object(s) without pixel data "
            "such as DICOMDIR or reports). Choose the folder that holds the CT series."
        )
    return groups, label


def _summary(group: _SeriesGroup) -> SeriesSummary:
    planes = group.frames or group.localizers
    return SeriesSummary(
        series_uid=group.series_uid, modality=group.modality, description=group.description,
        series_number=group.series_number, images=len(group.frames), localizers=len(group.localizers),
        files=len(group.files), rows=planes[0].rows if planes else None,
        columns=planes[0].columns if planes else None, example_file=str(group.first_path),
    )


def _rank(group: _SeriesGroup) -> Tuple[int, int, int]:
    return (int(group.is_ct), len(group.frames), len(group.localizers))


def list_series(path_or_list: Union[os.PathLike, str, Iterable[os.PathLike]]) -> List[SeriesSummary]:
    """All DICOM image series under a folder (recursive), best CT candidate first.

    Backs ``lowdose-denoise series FOLDER``: the first entry is the series that
    :func:`read_series` picks when no ``series_uid`` is given.
    """
    groups, _ = _scan(path_or_list)
    return [_summary(g) for g in sorted(groups.values(), key=_rank, reverse=True)]


def _choose(groups: Dict[str, _SeriesGroup], label: str, series_uid: Optional[str],
            notes: List[str]) -> _SeriesGroup:
    ranked = sorted(groups.values(), key=_rank, reverse=True)
    if series_uid is not None:
        group = groups.get(series_uid)
        if group is None:
            listing = "; ".join(_summary(g).line() for g in ranked)
            raise InputError(
                f"Series {series_uid} is not in {label}. The series found there: {listing}."
            )
        return group
    chosen = ranked[0]
    if len(ranked) > 1:
        others = "; ".join(_summary(g).line() for g in ranked[1:])
        _note(
            f"{label} holds {len(ranked)} series; using {_summary(chosen).line()} (the one with the most CT "
            f"slices). Also found: {others}. Pick another with --series UID; list them with "
            f"`lowdose-denoise series FOLDER`.",
            notes,
        )
    return chosen


# --------------------------------------------------------------------------- geometry


def _orientation_axes(orientation: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:6], dtype=float)
    row /= np.linalg.norm(row) or 1.0
    col /= np.linalg.norm(col) or 1.0
    normal = np.cross(row, col)
    return row, col, normal


def _check_uniform(frames: List[_Frame], label: str) -> None:
    """Refuse a series whose planes differ in size, orientation or pixel spacing."""
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        counts = {s: sum(1 for f in frames if (f.rows, f.columns) == s) for s in sizes}
        listing = ", ".join(f"{c} of {s[1]}x{s[0]}" for s, c in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise InputError(
            f"The series in {label} mixes image sizes ({listing}); a volume needs one size. It probably holds "
            "several reconstructions: pick the files of one of them, or export that series alone from the PACS."
        )
    missing = [f for f in frames if f.orientation is None or f.position is None]
    if missing:
        raise InputError(
            f"{len(missing)} image(s) in {label} lack Image Orientation/Position (Patient) (for example "
            f"{missing[0].path.name}), so they cannot be placed in 3D. Is this a secondary capture or screenshot "
            "rather than the CT series?"
        )
    reference = np.asarray(frames[0].orientation)
    tilted = [f for f in frames if np.max(np.abs(np.asarray(f.orientation) - reference)) > 1e-4]
    if tilted:
        raise InputError(
            f"The series in {label} mixes image orientations ({len(tilted)} of {len(frames)} images differ from "
            f"{frames[0].path.name}, for example {tilted[0].path.name}); a volume needs one orientation. It "
            "probably holds reformats in several planes: pick the files of one plane."
        )
    spacings = {tuple(round(v, 4) for v in f.pixel_spacing) for f in frames if f.pixel_spacing}
    if len(spacings) > 1:
        raise InputError(
            f"The series in {label} mixes pixel spacings ({', '.join(str(s) for s in sorted(spacings))} mm); "
            "a volume needs one. Pick the files of one reconstruction."
        )


def _sort_and_check(frames: List[_Frame], label: str, notes: List[str]) -> Tuple[List[_Frame], float, np.ndarray]:
    """Sort along the slice normal; warn about duplicates, gaps and tilt. Returns (frames, dz, normal)."""
    _, _, normal = _orientation_axes(frames[0].placed_orientation)
    # The same instance twice (a copied file): keep one silently-ish.
    seen: Dict[Tuple[str, Optional[int]], _Frame] = {}
    for frame in frames:
        key = (frame.sop_instance_uid, frame.frame)
        if frame.sop_instance_uid and key in seen:
            continue
        seen[key] = frame
    if len(seen) < len(frames):
        _note(f"{len(frames) - len(seen)} file(s) in {label} are copies of the same image (same SOP Instance "
              "UID); each image is used once.", notes)
    frames = list(seen.values())
    distance = {id(f): float(np.dot(np.asarray(f.position), normal)) for f in frames}
    frames.sort(key=lambda f: distance[id(f)])
    d = np.array([distance[id(f)] for f in frames])
    if len(frames) < 2:
        return frames, 0.0, normal
    gaps = np.diff(d)
    duplicates = int(np.sum(gaps < _SAME_POSITION_MM))
    if duplicates:
        index = int(np.argmax(gaps < _SAME_POSITION_MM))
        a, b = frames[index], frames[index + 1]
        acquisitions = sorted({f.acquisition_number for f in frames if f.acquisition_number})
        hint = (f" (Acquisition Numbers {', '.join(acquisitions)})" if len(acquisitions) > 1 else "")
        raise InputError(
            f"{duplicates} image(s) in {label} share a slice position with another image (for example "
            f"{a.path.name} and {b.path.name} at {d[index]:.2f} mm). The series mixes several acquisitions or "
            f"reconstructions{hint}: pick the files of one of them."
        )
    dz = float(np.median(gaps))
    spread = float(gaps.max() - gaps.min())
    if spread > max(_UNEVEN_SPACING * dz, 0.01):
        big = np.flatnonzero(gaps > dz * (1 + _UNEVEN_SPACING))
        missing = int(round(float(np.sum(gaps[big] / dz - 1)))) if big.size else 0
        where = (f"; the largest gap is {gaps.max():.2f} mm after {frames[int(np.argmax(gaps))].path.name}"
                 if big.size else "")
        guess = f" About {missing} slice(s) seem to be missing{where}." if missing else where
        _note(
            f"Uneven slice spacing in {label}: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm (median "
            f"{dz:.3f} mm).{guess} The volume uses the median spacing, so positions beyond a gap are off; "
            "export the complete series from the PACS for measurements (denoise --regularize resamples it onto a "
            "regular grid).",
            notes,
        )
    positions = np.array([f.position for f in frames])
    step = np.diff(positions, axis=0)
    along = step @ normal
    drift = step - np.outer(along, normal)
    drift_per_mm = np.linalg.norm(drift, axis=1) / np.maximum(np.abs(along), 1e-6)
    if float(np.median(drift_per_mm)) > _TILT_TOLERANCE:
        angle = float(np.degrees(np.arctan(np.median(drift_per_mm))))
        _note(
            f"The slices in {label} are sheared (gantry tilt of about {angle:.1f} degrees): each slice is shifted "
            "in-plane against the previous one. The volume stacks them along the slice normal, so anatomy is "
            "sheared in 3D views and distances across slices are off; use a tilt-corrected reconstruction "
            "for measurements (denoise --regularize resamples it onto a regular grid).",
            notes,
        )
    return frames, dz, normal


# --------------------------------------------------------------------------- pixels


def _decode(ds, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as error:  # missing decoder plugin, corrupt codestream
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"Cannot decode the pixel data of {path.name} (transfer syntax {name}): {error}. Compressed DICOM "
            "needs the pylibjpeg, pylibjpeg-openjpeg and pylibjpeg-libjpeg packages (pip install them), or "
            "convert the series to uncompressed first (for example with dcmdjpeg or gdcmconv --raw)."
        ) from None


class _Voxels:
    """The volume being filled plane by plane, in int16 while every plane's rescaled values are whole
    numbers that int16 holds, else float32 (the planes so far converted once, exactly): what reading the
    whole series as float64 and choosing the type at the end gave, without a float64 copy of it."""

    def __init__(self, shape: Tuple[int, int, int]) -> None:
        self.array: np.ndarray = np.empty(shape, dtype=np.int16)

    def put(self, index: int, plane: np.ndarray, slope: float, intercept: float) -> None:
        hu = np.asarray(plane, dtype=np.float64) * slope + intercept
        if self.array.dtype == np.int16:
            info = np.iinfo(np.int16)
            whole = float(slope) % 1 == 0 and float(intercept) % 1 == 0
            if whole and hu.min() >= info.min and hu.max() <= info.max:
                self.array[index] = hu.astype(np.int16)
                return
            self.array = self.array.astype(np.float32)
        self.array[index] = hu.astype(np.float32)


def _pixels(frames: List[_Frame], label: str, notes: List[str]) -> Tuple[np.ndarray, Any, List[_Frame]]:
    """Decode the planes (each file once) and apply rescale, plane by plane.

    Files whose pixel data cannot be decoded are skipped with a count; if none decode,
    the first file's error (usually a missing decoder plugin) is raised.  Returns
    (voxels, the first kept plane's dataset, the kept planes in order).  Only the
    volume and one file's planes are held at a time.
    """
    pydicom = _pydicom()
    by_file: Dict[Path, List[int]] = {}
    for index, frame in enumerate(frames):
        by_file.setdefault(frame.path, []).append(index)
    rows, columns = frames[0].rows, frames[0].columns
    voxels = _Voxels((len(frames), rows, columns))
    kept: np.ndarray = np.zeros(len(frames), dtype=bool)
    first_dataset: Any = None  # of the first file read (by_file follows the slice order): the first kept plane's
    failures: List[InputError] = []
    monochrome1 = 0
    for path, indices in by_file.items():
        try:
            ds = pydicom.dcmread(path)
            if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
                raise InputError(
                    f"{path.name} is a colour image ({ds.get('PhotometricInterpretation')}); a CT series is "
                    "grey-scale. Is this a screen capture?"
                )
            array = _decode(ds, path)
            planes = {}
            for index in indices:
                frame = frames[index]
                plane = array[frame.frame] if frame.frame is not None and array.ndim == 3 else array
                if plane.shape != (rows, columns):
                    raise InputError(f"{path.name}: the pixel data is {plane.shape}, the header says "
                                     f"{rows}x{columns}.")
                planes[index] = plane
        except InputError as error:
            failures.append(error)
            continue
        except Exception as error:  # truncated file and the like
            failures.append(InputError(f"Cannot read the pixels of {path.name}: {error}"))
            continue
        for index, plane in planes.items():
            voxels.put(index, plane, frames[index].slope, frames[index].intercept)
            kept[index] = True
        if first_dataset is None:
            first_dataset = ds
        monochrome1 += str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if not kept.any():
        raise failures[0]
    if failures:
        _note(f"Skipped {len(failures)} file(s) in {label} whose pixel data could not be read (for example: "
              f"{failures[0]}). The volume has a gap there.", notes)
    if monochrome1:
        _note(f"{monochrome1} image(s) in {label} are MONOCHROME1 (inverted grey scale); values are used as "
              "stored, with rescale applied.", notes)
    kept_frames = [f for f, k in zip(frames, kept) if k]
    result = voxels.array if kept.all() else voxels.array[kept]
    return result, first_dataset, kept_frames


# --------------------------------------------------------------------------- reading


def _plain(value) -> Any:
    """A header value as plain Python (str, float, int, list) for :class:`DicomSource`."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat, PersonName

    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def _optional_plain(ds, keyword: str) -> Any:
    value = ds.get(keyword)
    return None if value is None else _plain(value)


def read_series(
    path_or_list: Union[os.PathLike, str, Iterable[os.PathLike]],
    series_uid: Optional[str] = None,
    force: bool = False,
) -> Volume:
    """Read one DICOM CT series (folder, searched recursively, or list of files) into a Volume.

    With several series the CT series with the most slices is used (with a note);
    ``series_uid`` picks one.  A non-CT modality is refused unless ``force``.  Voxels
    are HU (rescale applied): int16 when the values fit, else float32.  Geometry comes
    from Image Orientation/Position (LPS), columns of ``direction`` being the row
    direction, the column direction and the slice normal.  ``Volume.dicom`` holds what
    :func:`.dicomwrite.write_derived_series` needs (per-slice SOP UIDs and positions in sorted order,
    patient and study attributes, rescale, window, character set, source paths, the notes issued).
    """
    notes: List[str] = []
    groups, label = _scan(path_or_list, notes)
    group = _choose(groups, label, series_uid, notes)
    if group.modality.upper() != "CT":
        if not force:
            raise InputError(
                f"The series {group.description or group.series_uid or ''} in {label} has modality "
                f"{group.modality or 'unknown'}, not CT. The denoiser is trained on CT (HU); pass --force to use "
                "it anyway, or choose the CT series."
            )
        _note(f"Using a {group.modality or 'unknown'}-modality series as if it were CT (--force).", notes)
    if group.localizers:
        _note(
            f"Skipped {len(group.localizers)} localizer/scout image(s) mixed into the series in {label} (for "
            f"example {group.localizers[0].path.name}); they are not part of the volume.",
            notes,
        )
    frames = group.frames
    if not frames:
        raise InputError(
            f"The series in {label} holds only localizer/scout images ({len(group.localizers)}); choose the "
            "axial CT series."
        )
    _check_uniform(frames, label)
    frames, dz, normal = _sort_and_check(frames, label, notes)
    voxels, ds, kept = _pixels(frames, label, notes)
    if len(kept) < len(frames):  # re-check the spacing around the skipped slices
        frames, dz, normal = _sort_and_check(kept, label, notes)

    row, col, _ = _orientation_axes(frames[0].placed_orientation)
    row_spacing, column_spacing = frames[0].pixel_spacing or (1.0, 1.0)
    if frames[0].pixel_spacing is None:
        _note(f"No Pixel Spacing in {label}; assuming 1 mm pixels, so sizes in mm are unreliable.", notes)
    if dz <= 0:
        thickness = ds.get("SliceThickness") or _first(ds.get("SpacingBetweenSlices"))
        dz = float(thickness) if thickness not in (None, "") and float(thickness) > 0 else 1.0
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())
    gantry_tilt = ds.get("GantryDetectorTilt")
    if gantry_tilt not in (None, "") and abs(float(gantry_tilt)) > 0.01 and not any("tilt" in n for n in notes):
        _note(f"The header reports a gantry tilt of {float(gantry_tilt):.1f} degrees in {label}; check the "
              "geometry before measuring across slices.", notes)

    attributes = {k: _plain(ds.get(k)) for k in COPIED_KEYWORDS if ds.get(k) not in (None, "")}
    phantom = ds.get("CTDIPhantomTypeCodeSequence")
    if phantom:  # CTDIvol means nothing without its phantom
        item = phantom[0]
        attributes["CTDIPhantomType"] = [str(item.get(k, "")) for k in ("CodeValue", "CodingSchemeDesignator",
                                                                       "CodeMeaning")]
    elif "CTDIvol" in attributes:
        del attributes["CTDIvol"]
    source = DicomSource(
        series_instance_uid=group.series_uid,
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        modality=group.modality,
        series_description=group.description,
        series_number=group.series_number,
        sop_instance_uids=[f.sop_instance_uid for f in frames],
        sop_class_uids=[f.sop_class_uid for f in frames],
        frame_numbers=[None if f.frame is None else f.frame + 1 for f in frames],
        source_files=[str(f.path) for f in frames],
        positions=[as_xyz(f.placed_position) for f in frames],
        orientation=tuple(float(v) for v in frames[0].placed_orientation),
        rescale_slope=frames[0].slope,
        rescale_intercept=frames[0].intercept,
        window_center=_optional_plain(ds, "WindowCenter"),
        window_width=_optional_plain(ds, "WindowWidth"),
        window_explanation=_optional_plain(ds, "WindowCenterWidthExplanation"),
        specific_character_set=_optional_plain(ds, "SpecificCharacterSet"),
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", 16) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        transfer_syntax=str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""),
        attributes=attributes,
        notes=notes,
    )
    return Volume(
        voxels=voxels,
        spacing=(float(column_spacing), float(row_spacing), float(dz)),
        origin=as_xyz(frames[0].placed_position),
        direction=direction,
        metadata={"source": label, "format": "dicom", "notes": notes},
        dicom=source,
    )
