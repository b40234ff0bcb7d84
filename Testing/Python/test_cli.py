"""`lowdose-denoise` end to end: geometry and type kept, and every bad input refused cleanly.

Each refusal must exit 2 with a one-line reason, write nothing and leave the input as it was.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import save_test_model
from LowDoseDenoiseLib import cli
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume
from LowDoseDenoiseLib.volume import Volume


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def ct_file(tmp_path, oblique_volume):
    return write_volume(oblique_volume, tmp_path / "ct.nrrd")


def run_refused(capsys, argv, folder: Path, *inputs: Path, message: str):
    """Run the CLI expecting exit 2 and `message`; the folder and inputs must be unchanged."""
    before = _listing(folder)
    digests = [_digest(p) for p in inputs]
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.count("\n") <= 2  # a one-line reason (plus warnings at most)
    assert _listing(folder) == before
    assert [_digest(p) for p in inputs] == digests


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_denoise_keeps_geometry_and_pixel_type(tmp_path, ct_file, oblique_volume, test_model_path, suffix):
    out = tmp_path / f"out{suffix}"
    digest = _digest(ct_file)
    assert cli.main(["-q", "denoise", str(ct_file), str(out), "--model", str(test_model_path), "--device", "cpu"]) == 0
    result = read_volume(out)
    assert result.voxels.dtype == np.int16
    assert result.voxels.shape == oblique_volume.voxels.shape
    np.testing.assert_allclose(result.spacing, oblique_volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(result.origin, oblique_volume.origin, atol=1e-4)
    np.testing.assert_allclose(result.direction, oblique_volume.direction, atol=1e-6)
    assert not np.array_equal(result.voxels, oblique_volume.voxels)
    assert _digest(ct_file) == digest
    assert _listing(tmp_path) == sorted(["ct.nrrd", out.name])  # no temporary files left


def test_strength_zero_writes_the_input_voxels(tmp_path, ct_file, oblique_volume, test_model_path):
    out = tmp_path / "same.nrrd"
    assert cli.main(["-q", "denoise", str(ct_file), str(out), "--model", str(test_model_path), "--strength", "0"]) == 0
    np.testing.assert_array_equal(read_volume(out).voxels, oblique_volume.voxels)


def test_batch_of_inputs_into_a_folder(tmp_path, oblique_volume, test_model_path):
    a = write_volume(oblique_volume, tmp_path / "a.nii.gz")
    b = write_volume(oblique_volume, tmp_path / "b.mha")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["-q", "denoise", str(a), str(b), str(out), "--model", str(test_model_path)]) == 0
    assert _listing(out) == ["a_denoised.nii.gz", "b_denoised.mha"]


def test_overwrite(tmp_path, ct_file, test_model_path, capsys):
    out = tmp_path / "out.nrrd"
    out.write_text("old")
    run_refused(capsys, ["denoise", ct_file, out, "--model", test_model_path], tmp_path, ct_file, out,
                message="already exists; pass --overwrite")
    assert cli.main(["-q", "denoise", str(ct_file), str(out), "--model", str(test_model_path), "--overwrite"]) == 0
    assert read_volume(out).voxels.dtype == np.int16


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path, ct_file, test_model_path, monkeypatch, capsys):
    from LowDoseDenoiseLib import engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "denoise_volume", interrupted)
    before = _listing(tmp_path)
    assert cli.main(["denoise", str(ct_file), str(tmp_path / "o.nrrd"), "--model", str(test_model_path)]) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert _listing(tmp_path) == before


def test_failed_write_leaves_nothing(tmp_path, ct_file, test_model_path, monkeypatch, capsys):
    def broken_write(image, name, useCompression=False):
        Path(name).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    before = _listing(tmp_path)
    assert cli.main(["-q", "denoise", str(ct_file), str(tmp_path / "o.nrrd"), "--model", str(test_model_path)]) == 2
    err = capsys.readouterr().err
    assert "Could not write" in err and "o.nrrd" in err and "Nothing was written" in err and "Traceback" not in err
    assert _listing(tmp_path) == before


# ------------------------------------------------------------------ bad input


def test_missing_input(tmp_path, test_model_path, capsys):
    run_refused(capsys, ["denoise", tmp_path / "nope.nrrd", tmp_path / "o.nrrd"], tmp_path, message="does not exist")


def test_corrupt_image(tmp_path, capsys):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n\x00\x01")
    run_refused(capsys, ["denoise", bad, tmp_path / "o.nrrd"], tmp_path, bad, message="unreadable or corrupt")


def test_rgb_image(tmp_path, capsys):
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([32, 32, 2], sitk.sitkVectorUInt8, 3), str(rgb))
    run_refused(capsys, ["denoise", rgb, tmp_path / "o.nrrd"], tmp_path, rgb, message="3 components")


def test_4d_image(tmp_path, capsys):
    four = tmp_path / "four.nrrd"
    sitk.WriteImage(sitk.Image([32, 32, 3, 2], sitk.sitkInt16), str(four))
    run_refused(capsys, ["denoise", four, tmp_path / "o.nrrd"], tmp_path, four, message="4D image")


def test_not_ct_like_is_refused_unless_forced(tmp_path, test_model_path, capsys):
    rng = np.random.default_rng(0)
    picture = tmp_path / "picture.nrrd"
    write_volume(Volume(voxels=rng.integers(0, 256, size=(2, 32, 32)).astype(np.uint8)), picture)
    run_refused(capsys, ["denoise", picture, tmp_path / "o.nrrd", "--model", test_model_path], tmp_path, picture,
                message="pass --force")
    assert cli.main(["-q", "denoise", str(picture), str(tmp_path / "o.nrrd"), "--model", str(test_model_path),
                     "--force"]) == 0
    assert read_volume(tmp_path / "o.nrrd").voxels.dtype == np.uint8


def test_nan_values(tmp_path, test_model_path, capsys):
    voxels = np.full((2, 32, 32), 40.0, np.float32)
    voxels[0, :16] = -1000
    voxels[1, 5, 5] = np.nan
    nan = write_volume(Volume(voxels=voxels), tmp_path / "nan.nrrd")
    run_refused(capsys, ["denoise", nan, tmp_path / "o.nrrd", "--model", test_model_path], tmp_path, nan,
                message="NaN or infinite")


def test_in_plane_size_below_minimum(tmp_path, test_model_path, capsys):
    voxels = np.where(np.arange(6)[None, :, None] < 3, -1000, 60).repeat(40, axis=2).astype(np.int16)
    small = write_volume(Volume(voxels=np.repeat(voxels, 2, axis=0)), tmp_path / "small.nrrd")
    run_refused(capsys, ["denoise", small, tmp_path / "o.nrrd", "--model", test_model_path], tmp_path, small,
                message="below the model's minimum")


def test_output_paths(tmp_path, ct_file, capsys):
    run_refused(capsys, ["denoise", ct_file, ct_file, "--overwrite"], tmp_path, ct_file, message="itself; inputs are never overwritten")
    run_refused(capsys, ["denoise", ct_file, tmp_path / "missing" / "o.nrrd"], tmp_path, ct_file,
                message="does not exist; create it first")
    run_refused(capsys, ["denoise", ct_file, tmp_path / "o.png"], tmp_path, ct_file, message="unknown output extension")
    run_refused(capsys, ["denoise", ct_file, ct_file, tmp_path / "not-a-folder"], tmp_path, ct_file,
                message="must be an existing folder")


def test_output_folder_not_writable(tmp_path, ct_file, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Permission bits do not stop root (CI runs as root), so the access check itself is made to say no.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    run_refused(capsys, ["denoise", ct_file, locked / "o.nrrd"], tmp_path, ct_file, message="not writable")


def test_bad_model_files(tmp_path, ct_file, capsys):
    run_refused(capsys, ["denoise", ct_file, tmp_path / "o.nrrd", "--model", tmp_path / "none.pt"], tmp_path,
                ct_file, message="not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 broken zip")
    run_refused(capsys, ["denoise", ct_file, tmp_path / "o.nrrd", "--model", corrupt], tmp_path, ct_file,
                message="not a TorchScript model file")
    newer = save_test_model(tmp_path / "newer.pt", format_version=99)
    run_refused(capsys, ["denoise", ct_file, tmp_path / "o.nrrd", "--model", newer], tmp_path, ct_file,
                message="update LowDoseDenoise")
    wrong = save_test_model(tmp_path / "wrong.pt", hu_normalisation={"scale": 1})
    run_refused(capsys, ["denoise", ct_file, tmp_path / "o.nrrd", "--model", wrong], tmp_path, ct_file,
                message="hu_normalisation needs")


def test_bad_options(tmp_path, ct_file, test_model_path, capsys):
    import torch

    base = ["denoise", ct_file, tmp_path / "o.nrrd", "--model", test_model_path]
    run_refused(capsys, base + ["--device", "tpu"], tmp_path, ct_file, message="Unknown device")
    if not torch.cuda.is_available():
        run_refused(capsys, base + ["--device", "cuda"], tmp_path, ct_file, message="no CUDA GPU")
    for argv, message in (
        (["--strength", "1.5"], "strength must be a number in [0, 1], got 1.5"),
        (["--strength", "lots"], "strength must be a number in [0, 1], got 'lots'"),
        (["--batch-size", "0"], "batch size must be 'auto' or a whole number of at least 1, got 0"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(a) for a in base + argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_info_shows_sha256(test_model_path, capsys):
    assert cli.main(["info", str(test_model_path)]) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(test_model_path.read_bytes()).hexdigest() in out


# ------------------------------------------------------------------ DICOM in, DICOM out


def test_dicom_series_in_gives_a_derived_series_out(tmp_path, test_model_path):
    from dicom_fixtures import oblique_orientation, write_ct_series

    series = write_ct_series(tmp_path / "series", orientation=oblique_orientation(15.0))
    digests = {p: _digest(p) for p in series.paths}
    out = tmp_path / "denoised"
    assert cli.main(["-q", "denoise", str(series.folder), str(out), "--model", str(test_model_path)]) == 0
    derived = read_volume(out)
    assert derived.dicom is not None
    assert derived.voxels.shape == series.hu.shape
    np.testing.assert_allclose(derived.origin, series.origin, atol=1e-3)
    np.testing.assert_allclose(derived.direction, series.direction, atol=1e-5)
    assert derived.dicom.study_instance_uid == series.study_uid
    assert derived.dicom.series_instance_uid != series.series_uid
    assert {p: _digest(p) for p in series.paths} == digests
    # the same input to a file when asked for one
    nrrd = tmp_path / "denoised.nrrd"
    assert cli.main(["-q", "denoise", str(series.folder), str(nrrd), "--model", str(test_model_path)]) == 0
    np.testing.assert_allclose(read_volume(nrrd).voxels, derived.voxels, atol=1)


def test_demo_runs_end_to_end_on_a_small_phantom(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["-q", "demo", "--out", str(out), "--size", "96", "--slices", "2"]) == 0
    assert _listing(out) == ["comparison.png", "denoised.nrrd", "input_low_dose.nrrd", "reference_full_dose.nrrd"]
    printed = capsys.readouterr().out
    assert "liver error SD" in printed and str(out / "comparison.png") in printed
    low, denoised = read_volume(out / "input_low_dose.nrrd"), read_volume(out / "denoised.nrrd")
    assert low.voxels.shape == denoised.voxels.shape == (2, 96, 96)
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phantom_and_simulate_commands(tmp_path):
    phantom_file, low_file = tmp_path / "phantom.nrrd", tmp_path / "low.nrrd"
    assert cli.main(["-q", "phantom", str(phantom_file), "--slices", "2", "--size", "64"]) == 0
    assert cli.main(["-q", "simulate", str(phantom_file), str(low_file), "--dose", "0.25", "--seed", "3"]) == 0
    clean, low = read_volume(phantom_file), read_volume(low_file)
    assert low.voxels.dtype == clean.voxels.dtype == np.int16
    assert low.spacing == clean.spacing
    assert np.std(low.hu() - clean.hu()) > 5.0


def test_thick_slices_are_denoised_one_by_one_unless_asked(tmp_path, capsys):
    """The bundled model saw neighbours 2–5 mm apart: an 8 mm series is denoised slice by slice
    (with a warning), as --neighbours off does; --neighbours on gives it the neighbours anyway."""
    from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom
    from LowDoseDenoiseLib.volume import Volume

    _, low, spacing = make_low_dose_phantom(size=96, slices=3, seed=4, spacing=(0.8, 0.8, 8.0))
    thick = write_volume(Volume(voxels=np.rint(low).astype(np.int16), spacing=spacing), tmp_path / "thick.nrrd")
    outputs = {}
    for mode in ("auto", "off", "on"):
        outputs[mode] = tmp_path / f"{mode}.nrrd"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli.main(["denoise", str(thick), str(outputs[mode]), "--device", "cpu", "--neighbours", mode]) == 0
        capsys.readouterr()
        said = [str(w.message) for w in caught if "8.00 mm apart" in str(w.message)]
        assert bool(said) == (mode == "auto"), (mode, said)
    voxels = {mode: read_volume(path).voxels for mode, path in outputs.items()}
    assert np.array_equal(voxels["auto"], voxels["off"])
    assert not np.array_equal(voxels["auto"], voxels["on"])


def test_self_ensemble_option_reaches_the_engine(tmp_path, capsys):
    """--ensemble 1 is one pass of the network, the default (engine.DEFAULT_ENSEMBLE) averages it with
    its transposed twin, --ensemble 8 with every symmetry of the square; a size off the list is refused."""
    from LowDoseDenoiseLib import engine
    from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom
    from LowDoseDenoiseLib.volume import Volume

    _, low, spacing = make_low_dose_phantom(size=96, slices=3, seed=5, spacing=(0.8, 0.8, 2.0))
    source = write_volume(Volume(voxels=low.astype(np.float32), spacing=spacing), tmp_path / "low.nrrd")
    voxels = {}
    for size in ("1", "default", "8"):
        out = tmp_path / f"e{size}.nrrd"
        extra = [] if size == "default" else ["--ensemble", size]
        assert cli.main(["-q", "denoise", str(source), str(out), "--device", "cpu", *extra]) == 0
        voxels[size] = read_volume(out).voxels
    model = engine.Predictor.of(None)
    for size, key in ((1, "1"), (engine.DEFAULT_ENSEMBLE, "default"), (8, "8")):
        expected = engine.denoise_volume(low.astype(np.float32), model, device="cpu", spacing=spacing, ensemble=size)
        np.testing.assert_allclose(voxels[key], expected, atol=1e-3)
    assert np.abs(voxels["1"] - voxels["default"]).max() > 0.05
    with pytest.raises(SystemExit):
        cli.main(["-q", "denoise", str(source), str(tmp_path / "bad.nrrd"), "--ensemble", "3"])
    assert "invalid choice" in capsys.readouterr().err
