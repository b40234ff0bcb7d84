"""Low-dose simulator: mean kept, SD law, streaks, calibration, texture fit, seeding, bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.quality.noise import estimate_noise_sd
from LowDoseDenoiseLib.quality.phantom import make_phantom
from LowDoseDenoiseLib.quality.simulate import fit_texture, noise_field, simulate_low_dose


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(128, 3, seed=0)


def _soft(ph):
    return ph.labels["liver"] & ~ph.labels["lesions"] & ~ph.labels["vessels"]


def test_mean_hu_unchanged_in_flat_regions(phantom):
    soft = _soft(phantom)
    diffs = []
    for seed in range(3):
        out = simulate_low_dose(phantom.hu, phantom.spacing, 0.7, seed=seed, texture=0.8, input_noise_hu=15)
        diffs.append((out - phantom.hu)[soft].mean())
    assert abs(np.mean(diffs)) < 1.0


def test_added_sd_follows_dose_law(phantom):
    soft = _soft(phantom)
    sds = {}
    for dose, seed in ((0.5, 1), (0.1, 2)):
        out = simulate_low_dose(phantom.hu, phantom.spacing, dose, seed=seed, texture=0.8, input_noise_hu=12)
        sds[dose] = (out - phantom.hu)[soft].std()
    assert sds[0.1] / sds[0.5] == pytest.approx(3.0, rel=0.10)  # sqrt(1/0.1 - 1) / sqrt(1/0.5 - 1)
    assert sds[0.5] == pytest.approx(12.0, rel=0.20)
    assert out.dtype == np.float32 and out.shape == phantom.hu.shape


def test_calibrated_on_own_noise_doubles_at_quarter_dose():
    ph = make_phantom(256, 2, seed=1)
    unit = noise_field(ph.hu, ph.spacing, texture=0.6, seed=7)
    base = ph.hu + 18.0 * unit / unit[_soft(ph)].std()
    before = estimate_noise_sd(base)
    out, info = simulate_low_dose(base, ph.spacing, 0.25, seed=3, texture=0.6, return_info=True)
    assert info.input_noise_hu == pytest.approx(before)
    assert estimate_noise_sd(out) == pytest.approx(2 * before, rel=0.10)


def test_streaks_along_lines_through_dense_bone():
    n, spacing = 128, 2.0
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    hu = np.where(np.hypot(yy, xx) < 55, 40.0, -1000.0)
    for cx in (-35, 35):  # two dense rods on the horizontal axis
        hu[np.hypot(yy, xx - cx) < 10] = 2000.0
    noise = noise_field(hu, spacing, texture=1.0, seed=0, photons=1e5)
    line = (np.abs(yy) < 3) & (np.abs(xx) < 22)  # between the rods
    cross = (np.abs(xx) < 3) & (np.abs(yy) < 22)  # same region turned by 90°
    assert noise[line].var() > 1.3 * noise[cross].var()


def test_seeded_and_reproducible(phantom):
    args = (phantom.hu[:1], phantom.spacing, 0.25)
    a = simulate_low_dose(*args, seed=11, texture=0.8, input_noise_hu=10)
    b = simulate_low_dose(*args, seed=11, texture=0.8, input_noise_hu=10)
    c = simulate_low_dose(*args, seed=12, texture=0.8, input_noise_hu=10)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fixed_photons_scale_and_unit_noise(phantom):
    ref = noise_field(phantom.hu[:1], phantom.spacing, texture=0.8, seed=4, photons=1.0)
    quad = noise_field(phantom.hu[:1], phantom.spacing, texture=0.8, seed=4, photons=4.0)
    assert np.allclose(quad, ref / 2, atol=1e-3 * np.abs(ref).max())
    out = simulate_low_dose(phantom.hu[:1], phantom.spacing, 0.5, seed=4, photons=1e6, texture=0.8)
    assert np.allclose(out - phantom.hu[:1], ref / 1e3, atol=1e-3 * np.abs(ref).max())


def test_texture_fit_recovers_the_cutoff():
    ph = make_phantom(256, 1, seed=0)
    fits = {}
    for cutoff in (0.5, 1.5):
        unit = noise_field(ph.hu, ph.spacing, texture=cutoff, seed=9)
        fits[cutoff] = fit_texture(ph.hu + 20 * unit / unit[_soft(ph)].std(), ph.spacing)
    # Anatomy left in the ROIs biases sharp textures a little towards smooth.
    assert 0.4 < fits[0.5] < 0.7
    assert 1.0 < fits[1.5] < 2.2


def test_noise_free_input_falls_back_with_a_note(caplog):
    ph = make_phantom(256, 1, seed=2)
    with caplog.at_level(logging.INFO, logger="LowDoseDenoiseLib.quality.simulate"):
        out, info = simulate_low_dose(ph.hu, ph.spacing, 0.5, seed=1, return_info=True)
    assert info.input_noise_hu == 10.0 and info.added_noise_hu == pytest.approx(10.0)
    assert any("almost no noise" in note for note in info.notes)
    assert "almost no noise" in caplog.text
    assert (out - ph.hu)[_soft(ph)].std() == pytest.approx(10.0, rel=0.2)


def test_full_dose_returns_the_input(phantom):
    assert np.array_equal(simulate_low_dose(phantom.hu, phantom.spacing, 1.0), phantom.hu)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dose_fraction": 0.0},
        {"dose_fraction": 1.5},
        {"dose_fraction": float("nan")},
        {"dose_fraction": "a lot"},
        {"texture": -1.0},
        {"texture": "smooth"},
        {"photons": 0},
        {"spacing": (0.0, 1.0)},
        {"input_noise_hu": -2},
    ],
)
def test_bad_arguments(phantom, kwargs):
    args = {"hu": phantom.hu[:1], "spacing": phantom.spacing, "dose_fraction": 0.5, **kwargs}
    with pytest.raises(InputError):
        simulate_low_dose(**args)


def test_bad_volumes(phantom):
    nan = phantom.hu[:1].copy()
    nan[0, 5, 5] = np.nan
    for hu in (nan, np.zeros(50), np.zeros((0, 64, 64)), np.zeros((2, 8, 8))):
        with pytest.raises(InputError):
            simulate_low_dose(hu, 1.0, 0.5)
    with pytest.raises(InputError, match="no flat soft-tissue"):
        simulate_low_dose(np.full((64, 64), -1000.0), 1.0, 0.5)


# --------------------------------------------------------------------------- real data


def _shared_data() -> Path:
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    return Path(os.environ.get("LOWDOSE_SHARED_DATA", default)).resolve()


def _read_slices(folder: Path, first: int, count: int):
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    middle = len(files) // 2 + first
    reader.SetFileNames(files[middle : middle + count])
    image = reader.Execute()
    return sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()


@pytest.mark.shared_data
def test_real_ct_noise_and_quarter_dose():
    data = _shared_data()
    if not data.is_dir():
        pytest.skip(f"shared CT data not found at {data} (set LOWDOSE_SHARED_DATA to its folder)")
    low, _ = _read_slices(data / "ccth-a01-lowdose-ct" / "dicom", -2, 4)
    # Real 60 mA scan with a fixed tube current: about 20-40 HU in flat soft tissue mid-volume.
    assert 18.0 < estimate_noise_sd(low) < 40.0
    full, spacing = _read_slices(data / "totalseg-abdomen-ct" / "dicom", 0, 2)
    before = estimate_noise_sd(full)
    out = simulate_low_dose(full, spacing, 0.25, seed=0)
    assert estimate_noise_sd(out) == pytest.approx(2 * before, rel=0.15)
