"""Volumes in and out: image files (NRRD, NIfTI, MHA/MHD) and DICOM series folders.

Everything the engine sees is a :class:`Volume`: a (z, y, x) voxel array plus the
geometry SimpleITK/ITK uses (LPS spacing, origin, direction).  Readers never modify
their input; writers go to a temporary file next to the target and rename it into
place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..volume import Volume

#: File name endings this module reads and writes (lower case).
IMAGE_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")




def is_image_file(path: os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_EXTENSIONS)


def _to_sitk(volume: Volume):
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
        from . import dicomseries

        return dicomseries.read_series(path, series_uid=series_uid, force=force)
    if path.suffix.lower() == ".dcm":
        from . import dicomseries

        return dicomseries.read_series([path], series_uid=series_uid, force=force)
    if not is_image_file(path):
        raise InputError(
            f"{path.name}: unknown image type; give an NRRD, NIfTI (.nii/.nii.gz), MHA/MHD file "
            "or a folder holding a DICOM series."
        )
    import SimpleITK as sitk

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
    """Validate an output file path before any work is done; returns it as a Path."""
    out = Path(out)
    for source in inputs:
        if Path(source).resolve() == out.resolve():
            raise InputError(f"Output {out} is the input itself; choose another output path.")
    if not is_image_file(out):
        raise InputError(
            f"{out.name}: unknown output extension; use .nrrd, .nii, .nii.gz, .mha or .mhd."
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"Output folder {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise InputError(f"Output folder {parent} is not writable; choose another location.")
    if out.exists() and not overwrite:
        raise InputError(f"Output {out} already exists; pass --overwrite to replace it.")
    return out



def _double_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def write_volume(volume: Volume, out: os.PathLike, overwrite: bool = False) -> Path:
    """Write ``volume`` to an image file atomically (temporary file, then rename)."""
    import SimpleITK as sitk

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"Output {out} already exists; pass --overwrite to replace it.")
    suffix = _double_suffix(out)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".partial{suffix}", dir=out.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    written = [tmp]
    try:
        sitk.WriteImage(_to_sitk(volume), str(tmp), useCompression=suffix in (".nrrd", ".nii.gz", ".mha"))
        if suffix == ".mhd":  # the raw data file travels with the header
            raw_tmp = tmp.with_suffix(".raw")
            written.append(raw_tmp)
            raw_out = out.with_suffix(".raw")
            header = tmp.read_text().replace(raw_tmp.name, raw_out.name)
            tmp.write_text(header)
            os.replace(raw_tmp, raw_out)
        os.replace(tmp, out)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return out
