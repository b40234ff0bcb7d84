"""`lowdose-denoise evaluate` and `compare`: reports, JSON, figures, and bad input refused cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from LowDoseDenoiseLib import cli
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume
from LowDoseDenoiseLib.quality import metrics
from LowDoseDenoiseLib.quality.noise import estimate_noise_sd
from LowDoseDenoiseLib.volume import Volume

SPACING = (0.8, 0.8, 2.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """reference, low-dose input, a noise-only 'denoised', a blurred one, a label map (flipped y)."""
    folder = tmp_path_factory.mktemp("evaluate")
    z, y, x = np.mgrid[0:4, 0:160, 0:160]
    body = ((y - 80) / 68.0) ** 2 + ((x - 80) / 75.0) ** 2 < 1
    liver = ((y - 66) / 32.0) ** 2 + ((x - 58) / 29.0) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[liver] = 100.0
    clean[((y - 100) / 9.0) ** 2 + ((x - 105) / 9.0) ** 2 < 1] = 300.0
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, clean.shape), (0, 0.7, 0.7))
    noisy = clean + noise * 35.0 / noise[body].std()
    out = {}
    for name, array in (("reference", clean), ("input", noisy), ("denoised", clean + 0.4 * (noisy - clean)),
                        ("blurred", ndimage.gaussian_filter(noisy, (0, 3, 3)))):
        out[name] = write_volume(Volume(np.rint(array).astype(np.int16), spacing=SPACING), folder / f"{name}.nrrd")
    labels = (liver * 5).astype(np.uint8)[:, ::-1, :]  # stored flipped in y, like TotalSegmentator's output
    out["labels"] = write_volume(Volume(np.ascontiguousarray(labels), spacing=SPACING, origin=(0.0, 159 * 0.8, 0.0),
                                        direction=(1, 0, 0, 0, -1, 0, 0, 0, 1)), folder / "labels.nrrd")
    return out


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_with_reference_writes_json(files, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code, text, err = run(capsys, "evaluate", "--denoised", files["denoised"], "--reference", files["reference"],
                          "--input", files["input"], "--roi", f"{files['labels']}:5", "--roi", "muscle=2,130,60,6",
                          "--json", out)
    assert code == 0, err
    assert "full-reference" in text and "data range 1300 HU" in text and "data range 400 HU" in text
    assert "ROI label 5" in text and "CNR label 5 vs muscle" in text
    report = json.loads(out.read_text())
    assert report["fidelity"]["psnr_window_db"] > report["fidelity_input"]["psnr_window_db"]
    assert report["rois"][0]["voxels"] == int(np.count_nonzero(read_volume(files["labels"]).voxels))
    assert abs(report["rois"][0]["mean"] - 100.0) < 3 and abs(report["rois"][0]["bias"]) < 1
    assert len(report["nps"]["denoised"]["frequency_per_mm"]) == len(report["nps"]["denoised"]["nps_hu2_mm2"])
    assert report["residual"]["structured"] is False and report["warnings"] == []
    assert run(capsys, "evaluate", "--denoised", files["denoised"], "--json", out)[0] == 2  # no silent overwrite


def test_evaluate_without_reference_warns_about_removed_structure(files, capsys):
    code, text, err = run(capsys, "evaluate", "--denoised", files["blurred"], "--input", files["input"])
    assert code == 0, err
    assert "no-reference" in text and "PSNR" not in text
    assert "warning:" in err and "anatomy was removed or blurred" in err


def test_compare_writes_a_panel_with_nps(files, tmp_path, capsys):
    out = tmp_path / "compare.png"
    code, text, err = run(capsys, "compare", files["input"], files["denoised"], "--out", out, "--slice", "1",
                          "--window", "350,50")
    assert code == 0, err
    assert out.stat().st_size > 10_000 and text.strip() == str(out)


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--denoised", "{denoised}", "--reference", "{other_grid}"], "differ in geometry: spacing"),
    (["evaluate", "--denoised", "{denoised}", "--roi", "9,10,10,5"], "outside the image"),
    (["evaluate", "--denoised", "{denoised}", "--roi", "1,3,80,10"], "reaches past the edge"),
    (["evaluate", "--denoised", "{denoised}", "--roi", "{empty_labels}"], "no non-zero label"),
    (["evaluate", "--denoised", "{denoised}", "--roi", "{labels}:3"], "Label 3 is empty"),
    (["evaluate", "--denoised", "{denoised}", "--roi", "1,2,3"], "not understood"),
    (["evaluate", "--denoised", "{denoised}", "--window", "0,40"], "width must be positive"),
    (["evaluate", "--denoised", "{picture}"], "8-bit image"),
    (["compare", "{input}", "{other_grid}", "--out", "{tmp}/c.png"], "differ in geometry"),
    (["compare", "{input}", "{denoised}", "--out", "{tmp}/c.png", "--window", "0,40"], "width must be positive"),
    (["compare", "{input}", "{denoised}", "--out", "{tmp}/c.png", "--slice", "9"], "outside the volume"),
])
def test_bad_input_is_refused(files, tmp_path, capsys, argv, message):
    extra = {
        "other_grid": write_volume(Volume(read_volume(files["denoised"]).voxels, spacing=(0.8, 0.8, 2.5)),
                                   tmp_path / "other.nrrd"),
        "empty_labels": write_volume(Volume(np.zeros((4, 160, 160), np.uint8), spacing=SPACING), tmp_path / "e.nrrd"),
        "picture": write_volume(Volume(np.random.default_rng(0).integers(0, 255, (2, 64, 64)).astype(np.uint8)),
                                tmp_path / "picture.nrrd"),
        "tmp": tmp_path,
    }
    names = {**{k: str(v) for k, v in files.items()}, **{k: str(v) for k, v in extra.items()}}
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.shared_data
@pytest.mark.slow
def test_liver_label_lands_on_the_liver_of_the_real_ct(shared_data):
    """TotalSegmentator's liver (label 5), resampled by physical coordinates, is the ~89 HU liver."""
    folder = shared_data / "totalseg-abdomen-ct"
    if not (folder / "dicom").is_dir() or not (folder / "segmentation.nii.gz").exists():
        pytest.skip(f"{folder} lacks dicom/ or segmentation.nii.gz")
    ct = read_volume(folder / "dicom")
    (liver,) = metrics.label_rois(read_volume(folder / "segmentation.nii.gz"), ct, [5], name="liver")
    assert 330_000 < liver.voxels < 400_000
    assert 80 < ct.hu()[liver.mask].mean() < 98
    assert 8 < estimate_noise_sd(ct.hu(), mask=liver.mask) < 25



def test_benchmark_figures(tmp_path):
    from LowDoseDenoiseLib.quality import figures

    rng = np.random.default_rng(0)
    images = {name: rng.normal(40, 20, (48, 48)) for name in ("reference", "input", "model", "filter")}
    grid = figures.method_grid_figure(images, tmp_path / "grid.png", spacing=(0.8, 0.8), zoom=(20, 20, 8), columns=3)
    curves = {"input": (np.linspace(0.05, 0.6, 12), np.linspace(300, 50, 12)),
              "model": (np.linspace(0.05, 0.6, 12), np.linspace(100, 5, 12))}
    nps = figures.nps_figure(curves, tmp_path / "nps.png", title="NPS", log=True)
    plain = figures.comparison_figure(images["input"], images["model"], tmp_path / "plain.png")  # as before
    assert all(p.stat().st_size > 5_000 for p in (grid, nps, plain))
