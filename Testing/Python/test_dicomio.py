"""DICOM series in and derived series out (issue 6), checked with real DICOM tools.

dciodvfy (dicom3tools), dcm2niix and dcmdump come from ``scripts/install-dicom-tools``;
tests that need one skip with the reason when it is missing.  Real-data tests use
../shared/data (or $LOWDOSE_SHARED_DATA) and skip when it is absent.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_fixtures import (  # noqa: E402
    add_scout,
    oblique_orientation,
    write_ct_series,
    write_enhanced_ct,
)

from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.io import dicomread, dicomwrite  # noqa: E402
from LowDoseDenoiseLib.io.imagefiles import read_volume  # noqa: E402
from LowDoseDenoiseLib.volume import Volume

MODEL = {"name": "ldd-test", "version": "0.1.0", "sha256": "ab" * 32, "strength": 0.8, "ensemble": 2}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (run scripts/install-dicom-tools)")
    return path


def _hashes(paths) -> dict:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _assert_geometry(volume: Volume, series, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(volume.spacing, series.spacing, atol=atol)
    np.testing.assert_allclose(volume.origin, series.origin, atol=atol)
    np.testing.assert_allclose(volume.direction, series.direction, atol=atol)


def _read(path_or_list, **kwargs):
    """read_series plus the warning messages it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = dicomread.read_series(path_or_list, **kwargs)
    return volume, [str(w.message) for w in caught]


def _dciodvfy_errors(path: Path) -> list:
    result = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def _physical_corners(image) -> np.ndarray:
    size = image.GetSize()
    corners = [(i, j, k) for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    return np.array(sorted(image.TransformIndexToPhysicalPoint(c) for c in corners))


def _to_sitk(volume: Volume):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.hu())
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), oblique_orientation(25.0)],
                         ids=["axial", "oblique"])
def test_reads_shuffled_series_by_position_with_rescale(tmp_path, orientation):
    series = write_ct_series(tmp_path / "ct", orientation=orientation, slope=1.0, intercept=-1024.0)
    # File names, file order and Instance Numbers are all out of slice order.
    shuffled = list(reversed(series.paths))
    for source in (series.folder, shuffled):
        volume, messages = _read(source)
        assert messages == []
        assert volume.voxels.dtype == np.int16
        np.testing.assert_array_equal(volume.voxels, series.hu)
        _assert_geometry(volume, series)
        assert volume.dicom.sop_instance_uids == series.sop_uids
    assert read_volume(series.folder).voxels.shape == series.hu.shape


def test_fractional_rescale_gives_float_voxels(tmp_path):
    series = write_ct_series(tmp_path / "ct", slope=0.5, intercept=-1000.0, unsigned=False)
    volume, _ = _read(series.folder)
    assert volume.voxels.dtype == np.float32
    np.testing.assert_allclose(volume.voxels, np.rint((series.hu + 1000) / 0.5) * 0.5 - 1000, atol=1e-3)


def test_compressed_rle_input_reads(tmp_path):
    series = write_ct_series(tmp_path / "ct", compress=True)
    assert pydicom.dcmread(series.paths[0]).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    volume, _ = _read(series.folder)
    np.testing.assert_array_equal(volume.voxels, series.hu)
    assert volume.dicom.transfer_syntax == pydicom.uid.RLELossless


def test_enhanced_multiframe_ct(tmp_path):
    series = write_enhanced_ct(tmp_path / "enhanced" / "ct.dcm")
    volume, _ = _read(series.folder)
    np.testing.assert_array_equal(volume.voxels, series.hu)
    _assert_geometry(volume, series)
    assert volume.dicom.frame_numbers == [5, 4, 3, 2, 1]  # frames were stored in reverse
    out = dicomwrite.write_derived_series(volume, None, tmp_path / "out", model_info=MODEL)
    headers = sorted((pydicom.dcmread(p) for p in out.glob("*.dcm")), key=lambda h: h.InstanceNumber)
    references = [h.SourceImageSequence[0] for h in headers]
    assert [r.ReferencedFrameNumber for r in references] == [5, 4, 3, 2, 1]
    assert {r.ReferencedSOPClassUID for r in references} == {"1.2.840.10008.5.1.4.1.1.2.1"}
    assert _dciodvfy_errors(sorted(out.glob("*.dcm"))[0]) == []


def test_missing_slice_warns(tmp_path):
    series = write_ct_series(tmp_path / "ct", shape=(7, 16, 16))
    order = [int(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in series.paths]
    series.paths[int(np.argsort(order)[3])].unlink()  # a slice in the middle
    volume, messages = _read(series.folder)
    assert volume.voxels.shape[0] == 6
    assert any("Uneven slice spacing" in m and "1 slice(s) seem to be missing" in m for m in messages)


def test_scout_is_skipped_with_a_note(tmp_path):
    series = write_ct_series(tmp_path / "ct")
    add_scout(series)
    volume, messages = _read(series.folder)
    np.testing.assert_array_equal(volume.voxels, series.hu)
    assert any("Skipped 1 localizer/scout" in m for m in messages)


def test_two_series_picks_the_ct_with_most_slices_and_lists_them(tmp_path):
    big = write_ct_series(tmp_path / "study" / "a", shape=(6, 16, 16), description="Abdomen 2mm")
    small = write_ct_series(tmp_path / "study" / "b", shape=(3, 16, 16), description="Abdomen 5mm",
                            study_uid=big.study_uid, seed=4)
    volume, messages = _read(tmp_path / "study")
    assert volume.dicom.series_instance_uid == big.series_uid
    assert any("holds 2 series" in m and "--series" in m for m in messages)
    summaries = dicomread.list_series(tmp_path / "study")
    assert [s.series_uid for s in summaries] == [big.series_uid, small.series_uid]
    assert summaries[1].images == 3 and "Abdomen 5mm" in summaries[1].line()
    picked, _ = _read(tmp_path / "study", series_uid=small.series_uid)
    np.testing.assert_array_equal(picked.voxels, small.hu)
    with pytest.raises(InputError, match="is not in"):
        dicomread.read_series(tmp_path / "study", series_uid="1.2.3.4")


def test_non_ct_refused_unless_forced(tmp_path):
    series = write_ct_series(tmp_path / "mr", modality="MR")
    with pytest.raises(InputError, match="modality MR, not CT.*--force"):
        dicomread.read_series(series.folder)
    volume, messages = _read(series.folder, force=True)
    assert volume.voxels.shape == series.hu.shape and any("--force" in m for m in messages)


def test_empty_and_unreadable_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No files found"):
        dicomread.read_series(tmp_path / "empty")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    with pytest.raises(InputError, match="No DICOM files"):
        dicomread.read_series(notes)
    series = write_ct_series(tmp_path / "ct")
    broken = tmp_path / "broken"
    broken.mkdir()
    data = series.paths[0].read_bytes()
    (broken / "cut.dcm").write_bytes(data[:300])
    with pytest.raises(InputError, match="could be read as DICOM"):
        dicomread.read_series(broken)
    # Unreadable files beside a good series: skipped with a count.
    (series.folder / "cut.dcm").write_bytes(data[:300])
    (series.folder / "notes.txt").write_text("x")
    volume, messages = _read(series.folder)
    np.testing.assert_array_equal(volume.voxels, series.hu)
    assert any("Skipped 2 of" in m and "1 corrupt" in m and "1 not DICOM" in m for m in messages)
    # A slice cut short inside its pixel data: skipped, and the gap it leaves is reported.
    cut = write_ct_series(tmp_path / "cut", shape=(5, 16, 16))
    middle = sorted(cut.paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[2]
    middle.write_bytes(middle.read_bytes()[:-100])
    volume, messages = _read(cut.folder)
    assert volume.voxels.shape == (4, 16, 16)
    assert any("pixel data could not be read" in m for m in messages)
    assert any("1 slice(s) seem to be missing" in m for m in messages)


def test_mixed_sizes_orientations_duplicates_and_tilt(tmp_path):
    series = write_ct_series(tmp_path / "sizes", shape=(4, 16, 16))
    write_ct_series(tmp_path / "sizes", shape=(2, 20, 16), series_uid=series.series_uid, prefix="other")
    with pytest.raises(InputError, match="mixes image sizes"):
        dicomread.read_series(series.folder)

    series = write_ct_series(tmp_path / "orient", shape=(4, 16, 16))
    write_ct_series(tmp_path / "orient", shape=(2, 16, 16), series_uid=series.series_uid, prefix="other",
                    orientation=oblique_orientation(30))
    with pytest.raises(InputError, match="mixes image orientations"):
        dicomread.read_series(series.folder)

    series = write_ct_series(tmp_path / "dup", shape=(4, 16, 16))
    write_ct_series(tmp_path / "dup", shape=(2, 16, 16), series_uid=series.series_uid, prefix="other")
    with pytest.raises(InputError, match="share a slice position"):
        dicomread.read_series(series.folder)

    series = write_ct_series(tmp_path / "tilt", shape=(4, 16, 16), tilt_degrees=15)
    volume, messages = _read(series.folder)
    assert volume.voxels.shape == (4, 16, 16)
    assert any("gantry tilt of about 15.0 degrees" in m for m in messages)


# --------------------------------------------------------------------------- writing


def _denoised(volume: Volume) -> np.ndarray:
    rng = np.random.default_rng(7)
    return volume.hu() * 0.9 + rng.normal(0, 3, volume.voxels.shape).astype(np.float32)


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), oblique_orientation(-20.0)],
                         ids=["axial", "oblique"])
def test_derived_series_round_trip_uids_and_sources_untouched(tmp_path, orientation):
    series = write_ct_series(tmp_path / "src", shape=(5, 24, 32), orientation=orientation)
    before = _hashes(series.paths)
    source = dicomread.read_series(series.folder)
    hu = _denoised(source)
    out = dicomwrite.write_derived_series(source, hu, tmp_path / "out", model_info=MODEL)
    assert _hashes(series.paths) == before

    files = sorted(out.glob("*.dcm"))
    assert len(files) == 5 and not list(tmp_path.glob(".out*"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    # Same patient, study and frame of reference; everything else new and unique.
    assert str(first.PatientName) == "Müller^Anna" and first.PatientID == "PID-0001"
    assert first.PatientBirthDate == "19600101" and first.PatientSex == "F"
    assert first.SpecificCharacterSet == "ISO_IR 100"
    assert first.StudyInstanceUID == series.study_uid and first.AccessionNumber == "ACC123"
    assert first.StudyDate == "20240102" and str(first.ReferringPhysicianName) == "Referrer^Rita"
    assert first.FrameOfReferenceUID == series.frame_uid
    series_uids = {h.SeriesInstanceUID for h in headers}
    sop_uids = [h.SOPInstanceUID for h in headers]
    assert len(series_uids) == 1 and series.series_uid not in series_uids
    assert len(set(sop_uids)) == 5 and not set(sop_uids) & set(series.sop_uids)
    for uid in list(series_uids) + sop_uids:
        assert uid.startswith(dicomwrite.UID_ROOT) and len(uid) <= 64 and re.fullmatch(r"[0-9.]+", uid)
    assert first.SeriesNumber == 1003
    assert first.SeriesDescription == "Synthetic abdomen denoised (ldd-test)"
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert "ldd-test" in first.DerivationDescription and "0.1.0" in first.DerivationDescription
    assert "abababababab" in first.DerivationDescription and "0.8" in first.DerivationDescription
    assert "self-ensemble 2" in first.DerivationDescription
    assert first.DerivationCodeSequence[0].CodeValue == "113087"
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.WindowCenter == 40 and first.WindowWidth == 400
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    referenced = sorted((h.InstanceNumber, h.SourceImageSequence[0].ReferencedSOPInstanceUID) for h in headers)
    assert [uid for _, uid in referenced] == series.sop_uids  # each slice points at its source slice

    back, messages = _read(out)
    assert messages == []
    assert back.voxels.dtype == np.int16
    assert np.max(np.abs(back.hu() - hu)) <= 0.5 + 1e-3
    _assert_geometry(back, series)


def test_derived_series_passes_dciodvfy_and_dcm2niix(tmp_path):
    series = write_ct_series(tmp_path / "src", shape=(5, 24, 32), orientation=oblique_orientation(15.0))
    source = dicomread.read_series(series.folder)
    hu = _denoised(source)
    out = dicomwrite.write_derived_series(source, hu, tmp_path / "out", model_info=MODEL)
    for path in sorted(out.glob("*.dcm")):
        assert _dciodvfy_errors(path) == [], path

    import SimpleITK as sitk

    nifti = tmp_path / "nifti"
    nifti.mkdir()
    result = subprocess.run([_tool("dcm2niix"), "-z", "n", "-b", "n", "-f", "%s", "-o", str(nifti), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    volumes = list(nifti.glob("*.nii"))
    assert len(volumes) == 1, (result.stdout, volumes)
    image = sitk.ReadImage(str(volumes[0]))
    expected = _to_sitk(source.with_voxels(source.voxels))
    assert image.GetSize() == expected.GetSize() or sorted(image.GetSize()) == sorted(expected.GetSize())
    np.testing.assert_allclose(sorted(image.GetSpacing()), sorted(expected.GetSpacing()), atol=1e-3)
    np.testing.assert_allclose(_physical_corners(image), _physical_corners(expected), atol=1e-2)
    # Same voxels at the same physical places (dcm2niix may flip axes in the file).
    resampled = sitk.Resample(image, expected, sitk.Transform(), sitk.sitkNearestNeighbor, -5000.0)
    assert np.max(np.abs(sitk.GetArrayFromImage(resampled) - hu)) <= 0.5 + 1e-3


def test_existing_output_refused_unless_overwrite_and_never_into_source(tmp_path):
    series = write_ct_series(tmp_path / "src", shape=(3, 16, 16))
    source = dicomread.read_series(series.folder)
    out = dicomwrite.write_derived_series(source, None, tmp_path / "out", model_info=MODEL)
    first_uids = {pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")}
    with pytest.raises(InputError, match="--overwrite"):
        dicomwrite.write_derived_series(source, None, out, model_info=MODEL)
    dicomwrite.write_derived_series(source, None, out, model_info=MODEL, overwrite=True)
    second_uids = {pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")}
    assert len(second_uids) == 3 and not first_uids & second_uids
    with pytest.raises(InputError, match="is the input .* itself"):
        dicomwrite.write_derived_series(source, None, series.folder, model_info=MODEL, overwrite=True)
    with pytest.raises(InputError, match="must match"):
        dicomwrite.write_derived_series(source, np.zeros((2, 16, 16)), tmp_path / "bad", model_info=MODEL)
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no leftovers


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    series = write_ct_series(tmp_path / "src", shape=(4, 16, 16))
    source = dicomread.read_series(series.folder)
    calls = []
    original = pydicom.dataset.Dataset.save_as

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing_save)
    with pytest.raises(InputError, match="disk full.*Nothing was written"):
        dicomwrite.write_derived_series(source, None, tmp_path / "out", model_info=MODEL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_derived_from_non_dicom_volume_is_a_new_anonymous_study(tmp_path):
    rng = np.random.default_rng(1)
    volume = Volume(voxels=rng.normal(0, 50, (4, 20, 18)).astype(np.float32), spacing=(0.6, 0.7, 3.0),
                    origin=(1.0, 2.0, 3.0), metadata={"source": "x.nrrd"})
    with pytest.warns(UserWarning, match="not linked to any patient"):
        out = dicomwrite.write_derived_series(volume, None, tmp_path / "out", model_info=MODEL)
    headers = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert str(headers[0].PatientName) == "Anonymous" and headers[0].StudyInstanceUID.startswith("2.25.")
    assert "SourceImageSequence" not in headers[0]
    for path in sorted(out.glob("*.dcm")):
        assert _dciodvfy_errors(path) == [], path
    back, _ = _read(out)
    assert np.max(np.abs(back.hu() - volume.voxels)) <= 0.5 + 1e-3
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)


def test_custom_uid_root(tmp_path):
    uid = dicomwrite.new_uid("1.2.826.0.1.3680043.10.999.")
    assert uid.startswith("1.2.826.0.1.3680043.10.999.") and len(uid) <= 64
    assert dicomwrite.new_uid() != dicomwrite.new_uid()


# --------------------------------------------------------------------------- real data


def test_real_jpeg2000_series(shared_data, tmp_path):
    folder = shared_data / "totalseg-abdomen-ct" / "dicom"
    files = sorted(folder.iterdir())
    before = _hashes(files)
    started = time.perf_counter()
    volume, messages = _read(folder)
    seconds = time.perf_counter() - started
    assert volume.voxels.shape == (20, 512, 512), messages
    np.testing.assert_allclose(volume.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert volume.voxels.dtype == np.int16 and volume.voxels.min() == -1024
    assert volume.dicom.transfer_syntax == "1.2.840.10008.1.2.4.90"
    print(f"totalseg (20 JPEG 2000 slices) read in {seconds:.2f} s")
    # These files were de-identified down to empty Study/Series UIDs: a derived series
    # still validates, in a new study, with SOP UIDs taken from the file meta.
    subset = dicomread.read_series(files[:4])
    with pytest.warns(UserWarning, match="no Study Instance UID"):
        out = dicomwrite.write_derived_series(subset, subset.hu(), tmp_path / "out", model_info=MODEL)
    for path in sorted(out.glob("*.dcm")):
        assert _dciodvfy_errors(path) == [], path
    assert _hashes(files) == before


def test_real_jpegls_lowdose_series_subset(shared_data, tmp_path):
    folder = shared_data / "ccth-a01-lowdose-ct" / "dicom"
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 296
    subset = files[100:112]  # reading all 296 JPEG-LS slices takes ~15 s on two cores
    before = _hashes(subset)
    started = time.perf_counter()
    volume, messages = _read(list(reversed(subset)))
    print(f"ccth 12 JPEG-LS slices read in {time.perf_counter() - started:.2f} s")
    assert messages == []
    assert volume.voxels.shape == (12, 512, 512)
    np.testing.assert_allclose(volume.spacing, (0.935547, 0.935547, 2.5), atol=1e-4)
    assert volume.voxels.min() == -3024  # padding outside the reconstruction circle
    out = dicomwrite.write_derived_series(volume, _denoised(volume), tmp_path / "out", model_info=MODEL)
    for path in sorted(out.glob("*.dcm"))[:4]:
        assert _dciodvfy_errors(path) == [], path
    first = pydicom.dcmread(sorted(out.glob("*.dcm"))[0], stop_before_pixels=True)
    source = pydicom.dcmread(subset[0], stop_before_pixels=True)
    assert first.StudyInstanceUID == source.StudyInstanceUID
    assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert first.SeriesInstanceUID != source.SeriesInstanceUID and first.SeriesNumber == 1003
    assert first.SeriesDescription == "CT 2.5MM STD denoised (ldd-test)"
    back = dicomread.read_series(out)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    assert _hashes(subset) == before


@pytest.mark.parametrize("compression, syntax", [("rle", pydicom.uid.RLELossless),
                                                 ("jpeg2000", pydicom.uid.JPEG2000Lossless),
                                                 ("jpeg-ls", pydicom.uid.JPEGLSLossless)])
def test_compressed_derived_series_is_lossless_and_valid(tmp_path, compression, syntax):
    series = write_ct_series(tmp_path / "src", shape=(2, 128, 128))
    source = dicomread.read_series(series.folder)
    out = dicomwrite.write_derived_series(source, None, tmp_path / "out", model_info=MODEL, compression=compression)
    files = sorted(out.glob("*.dcm"))
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    assert _dciodvfy_errors(files[0]) == []
    np.testing.assert_array_equal(dicomread.read_series(out).voxels, source.voxels)


def test_jpegls_source_gives_a_jpegls_derived_series_by_default(tmp_path):
    """Issue 15 item 20: the default is 'as the source' (here JPEG-LS Lossless, via pyjpegls)."""
    series = write_ct_series(tmp_path / "src", shape=(3, 64, 64), unsigned=False, intercept=0.0)
    for path in series.paths:
        ds = pydicom.dcmread(path)
        ds.compress(pydicom.uid.JPEGLSLossless)
        ds.save_as(path)
    before = _hashes(series.paths)
    source = dicomread.read_series(series.folder)
    assert source.dicom.transfer_syntax == pydicom.uid.JPEGLSLossless
    assert source.voxels.min() < 0  # signed pixels, as real CT stores them
    out = dicomwrite.write_derived_series(source, None, tmp_path / "out", model_info=MODEL, compression=None)
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 3
    for path in files:
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
        assert _dciodvfy_errors(path) == [], path
    np.testing.assert_array_equal(dicomread.read_series(out).voxels, source.voxels)
    assert _hashes(series.paths) == before


def test_unencodable_compression_is_refused_before_writing(tmp_path):
    series = write_ct_series(tmp_path / "src", shape=(2, 16, 16))
    source = dicomread.read_series(series.folder)
    with pytest.raises(InputError, match="jpeg-ls|Cannot encode"):
        dicomwrite.write_derived_series(source, None, tmp_path / "out", compression=(
            "jpeg-ls" if not dicomwrite._can_encode(dicomwrite.JPEG_LS_LOSSLESS) else "jpeg2000"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_values_beyond_int16_are_clipped_slice_by_slice_and_counted(tmp_path):
    series = write_ct_series(tmp_path / "src", shape=(3, 32, 32), intercept=-1024.0)
    source = dicomread.read_series(series.folder)
    hu = source.voxels.astype(np.float32)
    hu[0, :2, :3] = 40000.0  # above 32767 - 1024 HU
    hu[2, 5, 5] = -40000.0
    with pytest.warns(UserWarning, match=r"7 voxel\(s\) lie outside .* \(-33792 to 31743 HU\) and were clipped"):
        out = dicomwrite.write_derived_series(source, hu, tmp_path / "out", model_info=MODEL)
    back = dicomread.read_series(out).voxels
    assert back[0, 0, 0] == 31743 and back[2, 5, 5] == -33792
    np.testing.assert_array_equal(back[1], source.voxels[1])


def test_one_fractional_rescale_makes_the_whole_volume_float(tmp_path):
    """Planes are rescaled one at a time; a later plane with slope 0.5 turns the volume float32 exactly."""
    series = write_ct_series(tmp_path / "ct", shape=(4, 24, 32), intercept=-1024.0)
    last = series.paths[int(np.argmax([pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]
                                       for p in series.paths]))]
    ds = pydicom.dcmread(last)
    ds.RescaleSlope = "0.5"
    ds.save_as(last)
    volume, _ = _read(series.folder)
    assert volume.voxels.dtype == np.float32
    np.testing.assert_array_equal(volume.voxels[:3], series.hu[:3])
    np.testing.assert_array_equal(volume.voxels[3], (series.hu[3] + 1024.0) * 0.5 - 1024.0)
