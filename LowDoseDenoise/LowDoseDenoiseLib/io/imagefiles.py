"""Volumes in and out: image files (NRRD, NIfTI, MHA/MHD) and DICOM series folders.

Everything the engine sees is a :class:`Volume`: a (z, y, x) voxel array plus the
geometry SimpleITK/ITK uses (LPS spacing, origin, direction).  Readers never modify
their input and refuse a truncated compressed file (SimpleITK would read it
zero-filled); writers go through :mod:`.outputs` (one output check, one atomic writer),
so a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..volume import Volume
from .outputs import atomic_file, check_output

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_output_path",
    "is_dicom_file",
    "is_image_file",
    "read_volume",
    "to_sitk",
    "write_volume",
]


#: File name endings this module reads and writes (lower case).
IMAGE_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")




def is_image_file(path: os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_EXTENSIONS)


def is_dicom_file(path: os.PathLike) -> bool:
    """True for a file with the DICOM preamble ("DICM" at byte 128), whatever its name."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def to_sitk(volume: Volume):
    """A SimpleITK image of ``volume`` (voxels as stored, ITK/LPS geometry), e.g. as a resampling grid."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.voxels)
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in volume.direction))
    return image


def _from_sitk(image, source: str) -> Volume:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector "
            "image); choose a scalar (grey-scale) CT volume."
        )
    dim = image.GetDimension()
    if dim == 4:
        size = image.GetSize()
        raise InputError(
            f"{source} is a 4D image (size {size}); extract one 3D time point or phase first, "
            "for example with SimpleITK's Extract."
        )
    if dim == 2:
        image = sitk.JoinSeries(image)  # a 2D image is one slice
    if dim not in (2, 3):
        raise InputError(f"{source} has {dim} dimensions; a CT volume has 3 (or 2 for one slice).")
    voxels = sitk.GetArrayFromImage(image)
    return Volume(
        voxels=voxels,
        spacing=tuple(image.GetSpacing()),
        origin=tuple(image.GetOrigin()),
        direction=tuple(image.GetDirection()),
        metadata={"source": source},
    )


def _check_complete(path: Path) -> None:
    """Refuse a gzip-compressed file whose stream ends early (a cut download or copy).

    SimpleITK's NIfTI reader fills the missing part with zeros without a word; reading
    the stream to its end (no array kept) costs about a second per 100 MB.
    """
    with open(path, "rb") as stream:
        magic = stream.read(2)
        if magic != b"\x1f\x8b":
            return
        stream.seek(0)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                while chunk:
                    inflater.decompress(chunk, 1 << 24)
                    chunk = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as error:
            raise InputError(f"Cannot read {path}: the compressed data is corrupt ({error}). Copy the file again."
                             ) from None
    if not inflater.eof:
        raise InputError(f"Cannot read {path}: the file is truncated (its compressed data ends early), so part of "
                         "the volume is missing. Copy or download the file again.")


def read_volume(path: os.PathLike, series_uid: Optional[str] = None, force: bool = False) -> Volume:
    """Read an image file or a DICOM series folder into a :class:`Volume`.

    Raises :class:`InputError` with an actionable message for a missing, unreadable,
    multi-component, 4D or empty input.  ``series_uid`` and ``force`` are passed to
    the DICOM reader (choose one series of several; accept a non-CT modality).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input {path} does not exist; check the path.")
    if path.is_dir():
        from . import dicomread

        return dicomread.read_series(path, series_uid=series_uid, force=force)
    if path.suffix.lower() == ".dcm" or (not is_image_file(path) and is_dicom_file(path)):
        from . import dicomread

        return dicomread.read_series([path], series_uid=series_uid, force=force)
    if not is_image_file(path):
        raise InputError(
            f"{path.name}: unknown image type; give an NRRD, NIfTI (.nii/.nii.gz), MHA/MHD file "
            "or a folder holding a DICOM series."
        )
    import SimpleITK as sitk

    _check_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise InputError(f"Cannot read {path}: the file is unreadable or corrupt ({first_line}).") from None
    volume = _from_sitk(image, str(path))
    if volume.voxels.size == 0:
        raise InputError(f"{path} holds no voxels (an empty volume).")
    return volume


def check_output_path(out: os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """Validate an output image file path before any work is done; returns it as a Path.

    The type must be one this module writes; everything else is :func:`.outputs.check_output`
    (existing, missing/unwritable folder, one of the inputs or inside an input folder).
    An .mhd target also checks its .raw data file.
    """
    out = Path(out)
    if not is_image_file(out):
        raise InputError(
            f"{out.name}: unknown output extension; use .nrrd, .nii, .nii.gz, .mha or .mhd."
        )
    check_output(out, inputs, overwrite=overwrite)
    if _double_suffix(out).lower() == ".mhd":
        check_output(out.with_suffix(".raw"), inputs, overwrite=overwrite)
    return out


def _double_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def write_volume(volume: Volume, out: os.PathLike, overwrite: bool = False, inputs=()) -> Path:
    """Write ``volume`` to an image file atomically (:func:`.outputs.atomic_file`).

    The target is checked first (:func:`check_output_path`, with ``inputs``); a failed
    or interrupted write leaves nothing, and the file gets the umask's mode.
    """
    import SimpleITK as sitk

    out = check_output_path(out, inputs, overwrite=overwrite)
    suffix = _double_suffix(out).lower()
    with atomic_file(out) as handle:
        raw_tmp = None
        if suffix == ".mhd":  # the raw data file travels with the header
            raw_tmp = handle.companion(out.with_suffix(".raw"), temporary=handle.path.with_suffix(".raw"))
        try:
            sitk.WriteImage(to_sitk(volume), str(handle.path),
                            useCompression=suffix in (".nrrd", ".nii.gz", ".mha"))
        except RuntimeError as error:
            raise _write_error(out, error) from None
        if raw_tmp is not None:
            header = handle.path.read_text().replace(raw_tmp.name, out.with_suffix(".raw").name)
            handle.path.write_text(header)
    return out


def _write_error(out: Path, error: RuntimeError) -> OSError:
    """SimpleITK's write failure as an OSError the atomic writer reports (disk full, permission)."""
    import errno
    import shutil

    text = str(error).strip().splitlines()
    last = text[-1] if text else "unknown error"
    try:
        full = shutil.disk_usage(out.parent if str(out.parent) else ".").free < 1024 * 1024
    except OSError:
        full = False
    if full or "No space left" in str(error):
        return OSError(errno.ENOSPC, "the disk is full")
    return OSError(errno.EIO, f"the image writer failed ({last})")
