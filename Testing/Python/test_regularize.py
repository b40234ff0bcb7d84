"""``denoise --regularize`` (issue 15 item 6): a gapped or tilted DICOM series on a regular grid and back.

The series come from :mod:`dicom_fixtures` (real DICOM files): a missing slice in the
middle, and an 18.5 degree gantry tilt (the tilt of dcm2niix's GE QA series).  Checked:
the grid is regular and places every acquired slice where it truly is; each written
derived slice lies at its source slice's Image Position (Patient) and references it;
voxel values round-trip (exactly where the grid holds the acquired slice, within the
interpolation's tolerance where it shifts it); dciodvfy and dcm2niix accept the derived
series; the inputs stay byte-identical.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_fixtures import write_ct_series  # noqa: E402

from LowDoseDenoiseLib import cli  # noqa: E402
from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.io import dicomread, regulargrid  # noqa: E402
from LowDoseDenoiseLib.io.imagefiles import read_volume  # noqa: E402
from LowDoseDenoiseLib.volume import Volume  # noqa: E402

TILT_DEGREES = 18.5
SHAPE = (7, 64, 64)
SPACING = (0.75, 0.8, 2.0)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (run scripts/install-dicom-tools)")
    return path


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(folder: Path) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dicomread.read_series(folder)


def _gapped(folder: Path, noise_hu: float = 0.0) -> Path:
    """A 7-slice series with slice 3 (in position order) removed: 6 slices, one 4 mm gap."""
    series = write_ct_series(folder, shape=SHAPE, spacing=SPACING, noise_hu=noise_hu)
    order = np.argsort([float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
                        for p in series.paths])
    series.paths[int(order[3])].unlink()
    return folder


def _tilted(folder: Path, noise_hu: float = 0.0) -> Path:
    write_ct_series(folder, shape=SHAPE, spacing=SPACING, tilt_degrees=TILT_DEGREES, noise_hu=noise_hu)
    return folder


MAKERS = {"gap": _gapped, "tilt": _tilted}


def _unchanged(plane: np.ndarray, radius: int = 7) -> np.ndarray:
    """Pixels whose in-plane neighbourhood (the resampling's reach there and back) is constant."""
    from scipy import ndimage

    size = 2 * radius + 1
    return ndimage.maximum_filter(plane, size, mode="nearest") == ndimage.minimum_filter(plane, size, mode="nearest")


def _contrast(plane: np.ndarray, radius: int = 7) -> np.ndarray:
    """The HU range within the resampling's reach of each pixel."""
    from scipy import ndimage

    size = 2 * radius + 1
    return ndimage.maximum_filter(plane, size, mode="nearest") - ndimage.minimum_filter(plane, size, mode="nearest")


def _plane_points(volume: Volume, k: int, positions=None) -> np.ndarray:
    """Physical (LPS) centre of every pixel of slice k: the true position when given, else the grid's."""
    direction = np.asarray(volume.direction).reshape(3, 3)
    if positions is None:
        corner = np.asarray(volume.origin) + k * volume.spacing[2] * direction[:, 2]
    else:
        corner = np.asarray(positions[k], dtype=float)
    rows, columns = volume.voxels.shape[1:]
    j, i = np.mgrid[0:rows, 0:columns]
    return (corner[None, None] + i[..., None] * volume.spacing[0] * direction[:, 0]
            + j[..., None] * volume.spacing[1] * direction[:, 1])


def _centroid(plane: np.ndarray, points: np.ndarray, threshold: float = 500.0) -> np.ndarray:
    """Physical centroid of the bone disc (HU above ``threshold``) in one plane."""
    weight = np.clip(plane - threshold, 0, None)
    return (points * weight[..., None]).sum(axis=(0, 1)) / weight.sum()


# --------------------------------------------------------------------------- the library


def test_a_regular_series_and_an_image_file_pass_through(tmp_path):
    source = _read(write_ct_series(tmp_path / "ct", shape=(5, 24, 32)).folder)
    grid = regulargrid.regularize(source)
    assert not grid.resampled and grid.volume is source and grid.notes == []
    assert regulargrid.irregularity(source) == (0.0, 0.0)
    assert grid.to_source(source.voxels) is source.voxels
    plain = Volume(np.zeros((3, 8, 8), np.int16))
    assert not regulargrid.regularize(plain).resampled and regulargrid.irregularity(plain) == (0.0, 0.0)
    with pytest.raises(InputError, match="Interpolation 'cubic' is not known"):
        regulargrid.regularize(source, interpolation="cubic")


def test_gapped_series_grid_is_regular_and_holds_every_acquired_slice(tmp_path):
    source = _read(_gapped(tmp_path / "gap", noise_hu=15.0))
    assert source.voxels.shape[0] == 6
    along, shift = regulargrid.irregularity(source)
    assert along == pytest.approx(2.0, abs=1e-4) and shift == pytest.approx(0.0, abs=1e-4)
    grid = regulargrid.regularize(source)
    regular = grid.volume
    assert grid.resampled and regular.dicom is None and regular.voxels.dtype == np.float32
    assert regular.voxels.shape == (7, 64, 64)
    np.testing.assert_allclose(regular.spacing, SPACING, atol=1e-6)
    np.testing.assert_allclose(regular.direction, source.direction, atol=1e-9)
    # Every acquired slice is one grid plane, exactly; the missing one is the mean of its neighbours.
    true = np.asarray(source.dicom.positions)
    grid_origins = [_plane_points(regular, j)[0, 0] for j in range(7)]
    on_plane = [int(np.argmin([np.linalg.norm(g - p) for g in grid_origins])) for p in true]
    assert on_plane == [0, 1, 2, 4, 5, 6]
    assert max(np.linalg.norm(grid_origins[j] - p) for j, p in zip(on_plane, true)) < 1e-6
    for k, j in enumerate(on_plane):
        np.testing.assert_array_equal(regular.voxels[j], source.voxels[k])
    np.testing.assert_allclose(regular.voxels[3], (source.hu()[2] + source.hu()[3]) / 2, atol=1e-3)
    assert "Regularized the series" in grid.notes[0] and "7 slices" in grid.notes[0]
    np.testing.assert_array_equal(grid.to_source(regular.voxels), source.voxels)


def test_tilted_series_grid_is_orthogonal_with_true_slice_distances(tmp_path):
    source = _read(_tilted(tmp_path / "tilt"))
    along, shift = regulargrid.irregularity(source)
    per_slice = SPACING[2] * np.tan(np.radians(TILT_DEGREES))
    assert along == pytest.approx(0.0, abs=1e-4) and shift == pytest.approx(6 * per_slice, abs=1e-3)
    grid = regulargrid.regularize(source)
    regular = grid.volume
    direction = np.asarray(regular.direction).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(direction[:, :2], np.asarray(source.direction).reshape(3, 3)[:, :2], atol=1e-9)
    # Enlarged to hold every shifted slice: 6 x 0.669 mm = 4.0 mm = 5 more rows of 0.8 mm.
    assert regular.voxels.shape == (7, 64 + int(np.ceil(6 * per_slice / SPACING[1])), 64)
    normal = direction[:, 2]
    true = np.asarray(source.dicom.positions)
    for j in range(7):  # grid plane j lies at slice j's true distance along the normal
        assert float(_plane_points(regular, j)[0, 0] @ normal) == pytest.approx(float(true[j] @ normal), abs=1e-6)
        # ... and shows the anatomy where slice j truly has it (the bone disc's physical centroid).
        expected = _centroid(source.hu()[j], _plane_points(source, j, true))
        np.testing.assert_allclose(_centroid(regular.voxels[j], _plane_points(regular, j)), expected, atol=0.05)
        # the same stack taken as regular would put it up to 4 mm away
    stacked = _centroid(source.hu()[6], _plane_points(source, 6))
    assert np.linalg.norm(stacked - _centroid(source.hu()[6], _plane_points(source, 6, true))) > 3.9


# --------------------------------------------------------------------------- the command line


def _derived(out: Path, src: Path):
    """The derived slices, each with the source image it references (by SOP Instance UID)."""
    sources = {}
    for path in src.iterdir():
        ds = pydicom.dcmread(path)
        sources[ds.SOPInstanceUID] = ds
    pairs = []
    for path in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pairs.append((ds, sources[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]))
    return pairs, sources


def _hu(ds) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.mark.parametrize("kind", ["gap", "tilt"])
def test_cli_regularize_writes_true_positions_references_and_round_trips(tmp_path, kind, test_model_path, capsys):
    src = MAKERS[kind](tmp_path / "src")
    before = _tree(src)
    out = tmp_path / "out"
    code = cli.main(["denoise", str(src), str(out), "--model", str(test_model_path), "--regularize",
                     "--strength", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Regularized the series" in err and "sampled back at each source slice" in err
    assert _tree(src) == before
    pairs, sources = _derived(out, src)
    assert len(pairs) == len(sources) == (6 if kind == "gap" else 7)
    assert sorted(ref.SOPInstanceUID for _, ref in pairs) == sorted(sources)  # each source slice once
    for derived, ref in pairs:
        np.testing.assert_allclose([float(v) for v in derived.ImagePositionPatient],
                                   [float(v) for v in ref.ImagePositionPatient], atol=1e-3)
        np.testing.assert_allclose([float(v) for v in derived.ImageOrientationPatient],
                                   [float(v) for v in ref.ImageOrientationPatient], atol=1e-6)
        assert derived.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.SeriesInstanceUID
        assert derived.FrameOfReferenceUID == ref.FrameOfReferenceUID
        # Strength 0: the values must survive the grid and the way back.
        got, want = _hu(derived), _hu(ref)
        if kind == "gap":  # every acquired slice is a grid plane: exact
            assert np.max(np.abs(got - want)) <= 0.5
        else:  # shifted in-plane twice: exact where nothing changes within the kernel's reach
            flat = _unchanged(want)
            assert flat.mean() > 0.1
            assert np.max(np.abs(got - want)[flat]) <= 0.5
            # at edges, the sinc kernel's ringing (there and back, about 6% of a step at half a pixel)
            assert np.all(np.abs(got - want) <= 0.08 * _contrast(want) + 0.5)
    back = _read(out)  # the derived series reads as the source did: same warnings' cause, same grid
    np.testing.assert_allclose(np.asarray(back.dicom.positions), np.asarray(_read(src).dicom.positions), atol=1e-3)


def test_tilt_keeps_the_noise_texture_and_round_trips_within_interpolation_tolerance(tmp_path):
    """The default sinc kernel against dcm2niix's linear interpolation, on the noise of flat regions."""
    clean = _read(_tilted(tmp_path / "clean"))
    noisy = _read(_tilted(tmp_path / "noisy", noise_hu=15.0))  # same anatomy, same geometry, noise SD 15
    flat = np.stack([_unchanged(plane) for plane in clean.hu()])
    body = flat & (clean.hu() > -500)  # soft tissue: no padding, no clipping
    noise = noisy.hu() - clean.hu()
    results = {}
    for interpolation in regulargrid.INTERPOLATIONS:
        grid = regulargrid.regularize(noisy, interpolation=interpolation)
        grid_clean = regulargrid.regularize(clean, interpolation=interpolation)
        grid_body = np.stack([_unchanged(plane) for plane in grid_clean.volume.voxels]) & (
            grid_clean.volume.voxels > -500)
        grid_noise = grid.volume.voxels - grid_clean.volume.voxels
        # noise SD on the grid, in the slices shifted by 0.25-0.75 pixel (where interpolation matters most)
        shifts = np.array([(k * SPACING[2] * np.tan(np.radians(TILT_DEGREES)) / SPACING[1]) % 1 for k in range(7)])
        mid = (shifts > 0.25) & (shifts < 0.75)
        sd = float(np.std(grid_noise[mid][grid_body[mid]]) / np.std(noise[mid][body[mid]]))
        error = grid.to_source(grid.volume.voxels) - noisy.hu()
        results[interpolation] = (sd, float(np.sqrt(np.mean(error[flat] ** 2))), float(np.sqrt(np.mean(error ** 2))))
    sinc, linear = results["lanczos"], results["linear"]
    assert sinc[0] > 0.9 and linear[0] < 0.8, results  # linear smooths the noise the denoiser must see
    assert sinc[1] < 0.4 * 15.0, results  # noise round trip (two shifts)
    assert sinc[2] < 0.5 * linear[2], results  # everywhere, edges included


@pytest.mark.parametrize("kind", ["gap", "tilt"])
def test_regularized_derived_series_passes_dciodvfy_and_dcm2niix(tmp_path, kind, test_model_path, capsys):
    src = MAKERS[kind](tmp_path / "src", noise_hu=15.0)
    out = tmp_path / "out"
    assert cli.main(["denoise", str(src), str(out), "--model", str(test_model_path), "--regularize"]) == 0
    for path in sorted(out.glob("*.dcm")):
        result = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], (path, errors)
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    result = subprocess.run([_tool("dcm2niix"), "-z", "n", "-b", "n", "-f", "%s", "-o", str(nifti), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # One series, one volume of all its slices (dcm2niix may add its own resliced _Tilt/_Eq copy of it).
    volumes = sorted(p.name for p in nifti.glob("*.nii"))
    base = [name for name in volumes if "_Tilt" not in name and "_Eq" not in name]
    assert len(base) == 1, (volumes, result.stdout)
    import SimpleITK as sitk

    size = sitk.ReadImage(str(nifti / base[0])).GetSize()
    assert sorted(size) == sorted((64, 64, 6 if kind == "gap" else 7)), size


def test_image_file_output_holds_the_grid_in_the_input_type(tmp_path, test_model_path, capsys):
    src = _gapped(tmp_path / "src", noise_hu=15.0)
    target = tmp_path / "out.nrrd"
    assert cli.main(["denoise", str(src), str(target), "--model", str(test_model_path), "--regularize"]) == 0
    assert f"{target.name} holds the regular grid" in capsys.readouterr().err
    written = read_volume(target)
    source = _read(src)
    assert written.voxels.shape == (7, 64, 64) and written.voxels.dtype == source.voxels.dtype
    np.testing.assert_allclose(written.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(written.origin, source.origin, atol=1e-4)
    assert not np.array_equal(written.voxels[[0, 1, 2, 4, 5, 6]], source.voxels)  # strength 1 denoised it


def test_without_regularize_the_series_is_stacked_as_acquired(tmp_path, test_model_path, capsys):
    src = _gapped(tmp_path / "src")
    target = tmp_path / "out.nrrd"
    with pytest.warns(UserWarning, match="Uneven slice spacing"):  # warned, as before
        assert cli.main(["denoise", str(src), str(target), "--model", str(test_model_path)]) == 0
    assert "Regularized" not in capsys.readouterr().err
    assert read_volume(target).voxels.shape == (6, 64, 64)


def test_regularize_on_a_regular_input_says_it_resamples_nothing(tmp_path, oblique_volume, test_model_path, capsys):
    from LowDoseDenoiseLib.io.imagefiles import write_volume

    ct = write_volume(oblique_volume, tmp_path / "ct.nrrd")
    target = tmp_path / "out.nrrd"
    assert cli.main(["denoise", str(ct), str(target), "--model", str(test_model_path), "--regularize"]) == 0
    assert "already on a regular grid; --regularize resamples nothing" in capsys.readouterr().err
    assert read_volume(target).voxels.shape == read_volume(ct).voxels.shape
