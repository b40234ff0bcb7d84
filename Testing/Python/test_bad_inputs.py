"""Issue 15 bad-input suite (fast cases) and the shared writer/output check (issue 11 item 4).

Every CLI case asserts the exit code, a message without a traceback, inputs
byte-identical and nothing half-written (no ``.partial`` file or folder anywhere).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_fixtures import write_ct_series  # noqa: E402

from LowDoseDenoiseLib import cli  # noqa: E402
from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.io import dicomread, dicomwrite, outputs  # noqa: E402
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume  # noqa: E402
from LowDoseDenoiseLib.volume import Volume  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = {"name": "ldd-test", "version": "0.1.0", "sha256": "ab" * 32, "strength": 1.0}


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` with its SHA-256 (what "byte-identical, nothing added" compares)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _partials(folder: Path) -> list:
    return [p for p in folder.rglob("*") if outputs.PARTIAL in p.name]


def refused(capsys, argv, folder: Path, message: str, code: int = 2) -> str:
    """Run the CLI expecting ``code`` and ``message``; nothing under ``folder`` may change."""
    before = _tree(folder)
    result = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert result == code, err
    assert message in err, err
    assert "Traceback" not in err
    assert _tree(folder) == before
    assert _partials(folder) == []
    return err


@pytest.fixture
def ct(tmp_path, oblique_volume) -> Path:
    return write_volume(oblique_volume, tmp_path / "ct.nrrd")


@pytest.fixture
def dicom_dir(tmp_path) -> Path:
    return write_ct_series(tmp_path / "series", shape=(4, 40, 48)).folder


# ------------------------------------------------------------------ the shared writer


def test_atomic_file_leaves_nothing_on_an_exception_mid_write(tmp_path):
    target = tmp_path / "out.nrrd"
    for error in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(), ValueError("bug")):
        with pytest.raises((InputError, KeyboardInterrupt, ValueError)) as caught:
            with outputs.atomic_file(target) as handle:
                handle.path.write_bytes(b"half a file")
                raise error
        assert list(tmp_path.iterdir()) == []
        if isinstance(error, OSError):
            assert "the disk is full" in str(caught.value) and "Nothing was written" in str(caught.value)


def test_atomic_folder_keeps_the_old_folder_on_failure_and_replaces_it_on_success(tmp_path):
    target = tmp_path / "series"
    target.mkdir()
    (target / "old.dcm").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_folder(target) as tmp:
            (tmp / "new.dcm").write_bytes(b"new")
            raise KeyboardInterrupt
    assert _tree(tmp_path) == {"series/old.dcm": hashlib.sha256(b"old").hexdigest()}
    with outputs.atomic_folder(target) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
    assert [p.name for p in target.iterdir()] == ["new.dcm"]


def test_written_files_and_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        outputs.write_text(tmp_path / "a.json", "{}")
        with outputs.atomic_folder(tmp_path / "dir") as tmp:
            (tmp / "x.dcm").write_bytes(b"x")
        assert outputs.file_mode(tmp_path / "a.json") == 0o644
        assert outputs.file_mode(tmp_path / "dir") == 0o755
        assert outputs.file_mode(tmp_path / "dir" / "x.dcm") == 0o644
        os.umask(0o077)
        outputs.write_text(tmp_path / "b.json", "{}")
        assert outputs.file_mode(tmp_path / "b.json") == 0o600
    finally:
        os.umask(previous)


def test_stale_partials_of_a_killed_run_are_removed_and_reported(tmp_path, ct, test_model_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale_file = tmp_path / f".o.nrrd.partial-{dead}-0badcafe.nrrd"
    stale_file.write_bytes(b"left by SIGKILL")
    stale_dir = tmp_path / f".o.nrrd.partial-{dead}-0badbeef"
    stale_dir.mkdir()
    live = tmp_path / f".o.nrrd.partial-{os.getpid()}-00000001.nrrd"  # a writer that is still running
    live.write_bytes(b"busy")
    with pytest.warns(UserWarning, match=r"Removed 2 unfinished file\(s\) left by an earlier interrupted run"):
        assert cli.main(["denoise", str(ct), str(tmp_path / "o.nrrd"), "--model", str(test_model_path)]) == 0
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_output_check_refuses_the_same_way_for_files_and_folders(tmp_path, dicom_dir, monkeypatch, folder):
    name = "out" if folder else "out.nrrd"
    existing = tmp_path / name
    existing.mkdir() if folder else existing.write_bytes(b"x")
    if folder:
        (existing / "a.dcm").write_bytes(b"x")
    one_file = dicom_dir / sorted(os.listdir(dicom_dir))[0]
    cases = {
        "already exists; pass --overwrite": existing,
        "does not exist; create it first": tmp_path / "missing" / name,
        "is the input": dicom_dir if folder else one_file,
        "lies inside the input folder": dicom_dir / name,
    }
    for message, target in cases.items():
        with pytest.raises(InputError, match=message):
            outputs.check_output(target, [dicom_dir, one_file], folder=folder)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(InputError, match="is not writable"):
        outputs.check_output(locked / name, folder=folder)
    with pytest.raises(InputError, match="would both be written"):
        outputs.check_distinct([(tmp_path / "a" / "x.nrrd", tmp_path / "o" / "x.nrrd"),
                                (tmp_path / "b" / "x.nrrd", tmp_path / "o" / "x.nrrd")])


# ------------------------------------------------------------------ 2-5: inputs never overwritten


def test_evaluate_json_onto_its_input_is_refused_even_with_overwrite(tmp_path, ct, capsys):
    refused(capsys, ["evaluate", "--denoised", ct, "--json", ct, "--overwrite"], tmp_path, "is the input")


def test_denoise_into_its_dicom_input_folder_is_refused(tmp_path, dicom_dir, test_model_path, capsys):
    refused(capsys, ["denoise", dicom_dir, dicom_dir, "--overwrite", "--model", test_model_path], tmp_path,
            "lies inside the input folder")
    refused(capsys, ["denoise", dicom_dir, dicom_dir / "derived", "--model", test_model_path], tmp_path,
            "lies inside the input folder")


def test_colliding_batch_outputs_are_refused_before_starting(tmp_path, oblique_volume, test_model_path, capsys):
    for folder in ("a", "b", "out"):
        (tmp_path / folder).mkdir()
    a = write_volume(oblique_volume, tmp_path / "a" / "x.nrrd")
    b = write_volume(oblique_volume, tmp_path / "b" / "x.nrrd")
    refused(capsys, ["denoise", a, b, tmp_path / "out", "--overwrite", "--model", test_model_path], tmp_path,
            "would both be written to")


def test_compare_has_the_overwrite_rule(tmp_path, ct, capsys):
    existing = tmp_path / "f.png"
    existing.write_bytes(b"an older figure")
    refused(capsys, ["compare", ct, ct, "--out", existing], tmp_path, "already exists; pass --overwrite")
    assert cli.main(["compare", str(ct), str(ct), "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_has_the_overwrite_rule(tmp_path, capsys):
    existing = tmp_path / "m.pt"
    existing.write_bytes(b"keep me")
    refused(capsys, ["export", tmp_path / "checkpoint.pt", existing], tmp_path, "already exists; pass --overwrite")


# ------------------------------------------------------------------ 6-9: wrong output written silently


def test_dicom_with_a_missing_slice_keeps_true_positions_and_references(tmp_path):
    series = write_ct_series(tmp_path / "src", shape=(6, 24, 32), spacing=(0.75, 0.8, 2.0))
    Path(series.paths[3]).unlink()  # a gap: slice 3 of 6 is missing
    with pytest.warns(UserWarning, match="Uneven slice spacing"):
        source = dicomread.read_series(series.folder)
    with pytest.warns(UserWarning, match="true position"):
        out = dicomwrite.write_derived_series(source, None, tmp_path / "out", model_info=MODEL)
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in series.folder.iterdir()}
    derived = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert len(derived) == 5
    for header in derived:
        referenced = by_uid[header.SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose([float(v) for v in header.ImagePositionPatient],
                                   [float(v) for v in referenced.ImagePositionPatient], atol=1e-3)


def test_truncated_nifti_gz_is_refused(tmp_path, oblique_volume, test_model_path, capsys):
    whole = write_volume(oblique_volume, tmp_path / "whole.nii.gz")
    data = whole.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    whole.unlink()
    assert gzip.decompress(gzip.compress(b"ok")) == b"ok"
    refused(capsys, ["denoise", cut, tmp_path / "o.nrrd", "--model", test_model_path], tmp_path, "truncated")


def test_output_format_and_extension_must_agree(tmp_path, ct, test_model_path, capsys):
    refused(capsys, ["denoise", ct, tmp_path / "o.nrrd", "--output-format", "nifti", "--model", test_model_path],
            tmp_path, "--output-format nifti")


def test_compare_refuses_an_all_nan_volume(tmp_path, ct, capsys):
    nan = write_volume(Volume(np.full((5, 40, 48), np.nan, np.float32)), tmp_path / "nan.nrrd")
    refused(capsys, ["compare", ct, nan, "--out", tmp_path / "f.png"], tmp_path, "NaN or infinite")


def test_denoise_refuses_a_non_finite_result(tmp_path, test_model_path, capsys):
    voxels = np.full((2, 40, 48), -1000.0)
    voxels[:, 10:30, 10:30] = np.finfo(np.float64).max
    huge = write_volume(Volume(voxels), tmp_path / "huge.nrrd")
    refused(capsys, ["denoise", huge, tmp_path / "o.nrrd", "--force", "--model", test_model_path], tmp_path,
            "NaN or infinite")


# ------------------------------------------------------------------ 10-11: messages, not tracebacks


@pytest.mark.parametrize("command", ["nrrd", "dicom", "json", "png"])
def test_disk_full_is_a_message_and_leaves_nothing(tmp_path, ct, dicom_dir, test_model_path, monkeypatch,
                                                   capsys, command):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "_fsync_file", full)
    argv = {
        "nrrd": ["denoise", ct, tmp_path / "o.nrrd", "--model", test_model_path],
        "dicom": ["denoise", dicom_dir, tmp_path / "o", "--model", test_model_path],
        "json": ["evaluate", "--denoised", ct, "--json", tmp_path / "m.json"],
        "png": ["compare", ct, ct, "--out", tmp_path / "f.png"],
    }[command]
    refused(capsys, argv, tmp_path, "the disk is full. Nothing was written")


def test_bad_option_values_and_files_are_messages(tmp_path, ct, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["simulate", str(ct), str(tmp_path / "o.nrrd"), "--dose", "0.5", "--texture", "banana"])
    assert caught.value.code == 2 and "texture must be" in capsys.readouterr().err
    existing = tmp_path / "file"
    existing.write_bytes(b"x")
    refused(capsys, ["demo", "--out", existing], tmp_path, "exists and is a file")
    binary = tmp_path / "c.yaml"
    binary.write_bytes(bytes(range(256)))
    refused(capsys, ["train", "--config", binary], tmp_path, "is not a text file")


# ------------------------------------------------------------------ 12-13: leftovers and summaries


_SLOW_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import SimpleITK as sitk
    from LowDoseDenoiseLib import cli
    real = sitk.WriteImage
    def slow_write(image, name, useCompression=False):
        Path(name).write_bytes(b"half")   # a partial that the writer must remove
        Path(sys.argv[1]).write_text("writing")
        time.sleep(60)
    sitk.WriteImage = slow_write
    sys.exit(cli.main(sys.argv[2:]))
""")


def test_sigterm_mid_write_exits_143_and_leaves_nothing(tmp_path, ct, test_model_path):
    marker = tmp_path / "writing.flag"
    env = dict(os.environ, PYTHONPATH=str(REPO / "LowDoseDenoise"), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, str(marker), "-q", "denoise", str(ct), str(tmp_path / "o.nrrd"),
         "--model", str(test_model_path)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), process.stderr.read() if process.poll() is not None else "never started writing"
    marker.unlink()
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 143, err
    assert "terminated (SIGTERM); nothing was written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


def test_batch_with_a_failing_input_says_what_was_written(tmp_path, oblique_volume, test_model_path, capsys):
    (tmp_path / "out").mkdir()
    good = write_volume(oblique_volume, tmp_path / "good.nrrd")
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nbroken")
    assert cli.main(["denoise", str(good), str(bad), str(tmp_path / "out"), "--model", str(test_model_path)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 input(s) denoised; failed: " in err and str(bad) in err
    assert "Written: " + str(tmp_path / "out" / "good_denoised.nrrd") in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_denoised.nrrd"]


def test_demo_creates_nothing_before_its_inputs_are_valid(tmp_path, test_model_path, capsys):
    refused(capsys, ["demo", "--out", tmp_path / "d", "--size", "8", "--model", test_model_path], tmp_path,
            "size must be between")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ 14-15, 18: messages about what was typed


def test_tiny_volume_blames_the_size_not_the_value_range(tmp_path, test_model_path, capsys):
    tiny = write_volume(Volume(np.full((1, 1, 1), 7, np.int16)), tmp_path / "tiny.nrrd")
    err = refused(capsys, ["denoise", tiny, tmp_path / "o.nrrd", "--model", test_model_path], tmp_path,
                  "below the model's minimum")
    assert "8-bit" not in err


def test_dicom_file_without_suffix_is_read_as_dicom(tmp_path, test_model_path, capsys):
    series = write_ct_series(tmp_path / "s", shape=(1, 40, 48))
    plain = tmp_path / "IM0001"
    plain.write_bytes(Path(series.paths[0]).read_bytes())
    assert read_volume(plain).voxels.shape == (1, 40, 48)
    code = cli.main(["denoise", str(plain), str(tmp_path / "o.nrrd"), "--model", str(test_model_path)])
    err = capsys.readouterr().err
    assert code == 0 and "unknown output extension" not in err, err


def test_bad_circle_roi_names_the_bad_number(tmp_path, ct, capsys):
    refused(capsys, ["evaluate", "--denoised", ct, "--roi=2,10,10,nan"], tmp_path, "R is 'nan'")


def test_progress_lines_without_a_terminal(tmp_path, ct, test_model_path, capsys):
    assert cli.main(["denoise", str(ct), str(tmp_path / "o.nrrd"), "--model", str(test_model_path)]) == 0
    err = capsys.readouterr().err
    assert "ct.nrrd: 5/5 slices (100%)" in err
    clock = iter([0.0, 1.0, 2.0, 40.0, 41.0])
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    log = cli.ProgressLog(100, "x", stream=Stream(), clock=lambda: next(clock))
    log(1, 100)   # first: printed
    log(2, 100)   # neither 10% nor 30 s later: quiet
    log(3, 100)   # 39 s later: printed
    log(100, 100)  # the end: printed
    assert sum("slices" in line for line in lines) == 3


# ------------------------------------------------------------------ 17, 20: a site's PACS


def test_dicom_output_is_readable_by_colleagues_and_can_be_rle_compressed(tmp_path, dicom_dir, test_model_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "o"
        assert cli.main(["-q", "denoise", str(dicom_dir), str(out), "--model", str(test_model_path),
                         "--dicom-compression", "rle"]) == 0
    finally:
        os.umask(previous)
    assert outputs.file_mode(out) == 0o755
    files = sorted(out.glob("*.dcm"))
    assert all(outputs.file_mode(p) == 0o644 for p in files)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = dicomread.read_series(out)
    assert back.voxels.shape == (4, 40, 48)
    import shutil

    tool = shutil.which("dciodvfy")
    if tool:
        result = subprocess.run([tool, str(files[0])], capture_output=True, text=True, timeout=60)
        assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
