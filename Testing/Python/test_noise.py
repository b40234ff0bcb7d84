"""Noise measurement: NPS definition, noise SD in flat soft tissue, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.quality.noise import (
    estimate_noise_sd,
    flat_regions,
    flat_rois,
    local_mean_sd,
    mean_frequency,
    measure_noise,
    noise_power_spectrum_2d,
    radial_nps,
)
from LowDoseDenoiseLib.quality.phantom import make_phantom
from LowDoseDenoiseLib.quality.simulate import noise_field


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(256, 2, seed=0)


@pytest.fixture(scope="module")
def correlated(phantom):
    """Smooth-kernel CT-like noise on the phantom, scaled to SD 1 in the liver."""
    field = noise_field(phantom.hu, phantom.spacing, texture=0.6, seed=5)
    return field / field[phantom.labels["liver"]].std()


def test_white_noise_nps_is_flat_and_integrates_to_variance():
    rng = np.random.default_rng(1)
    spacing = (0.7, 0.9)
    rois = rng.normal(0.0, 12.0, size=(200, 32, 32))
    nps = noise_power_spectrum_2d(rois, spacing, detrend="mean")
    df = (1 / (32 * 0.7)) * (1 / (32 * 0.9))
    assert nps.sum() * df == pytest.approx(rois.var(axis=(1, 2), ddof=1).mean(), rel=0.02)
    freq, profile = radial_nps(nps, spacing)
    expected = 144.0 * 0.7 * 0.9  # σ²·Δx·Δy
    assert np.all(np.abs(profile / expected - 1) < 0.15)
    assert freq.max() == pytest.approx(0.5 / 0.9, abs=1 / (32 * 0.7))
    assert mean_frequency(freq, profile) == pytest.approx(0.5 * (freq.min() + freq.max()), rel=0.1)


def test_nps_plane_detrend_removes_ramps():
    yy, xx = np.mgrid[0:32, 0:32]
    ramp = np.stack([3.0 * xx - 2.0 * yy + 40.0] * 4)
    assert np.allclose(noise_power_spectrum_2d(ramp, 1.0, detrend="plane"), 0.0, atol=1e-8)


def test_local_mean_sd_matches_direct_computation():
    image = np.random.default_rng(2).normal(50, 5, (40, 40))
    mean, sd = local_mean_sd(image, 7)
    assert mean[20, 20] == pytest.approx(image[17:24, 17:24].mean())
    assert sd[20, 20] == pytest.approx(image[17:24, 17:24].std(ddof=1))
    assert np.isnan(sd[0, 0])


def test_noise_free_phantom_measures_almost_no_noise(phantom):
    # Edges between organs must not count as noise.
    assert estimate_noise_sd(phantom.hu) < 3.0


@pytest.mark.parametrize("sd", [8.0, 25.0])
def test_white_noise_sd_within_10_percent(phantom, sd):
    noisy = phantom.hu + np.random.default_rng(3).normal(0, sd, phantom.hu.shape)
    assert estimate_noise_sd(noisy) == pytest.approx(sd, rel=0.10)


@pytest.mark.parametrize("sd", [10.0, 25.0])
def test_correlated_noise_sd_within_10_percent(phantom, correlated, sd):
    assert estimate_noise_sd(phantom.hu + sd * correlated) == pytest.approx(sd, rel=0.10)


def test_single_slice_and_flat_windows(phantom, correlated):
    image = phantom.hu[0] + 15 * correlated[0]
    estimate = measure_noise(image)
    assert estimate.sd == pytest.approx(15, rel=0.12)
    assert estimate.flat.shape == image.shape and estimate.n_windows > 100
    flat = flat_regions(phantom.hu[0])
    assert not flat[phantom.hu[0] < -500].any()  # never centred in air


def test_flat_rois_lie_in_soft_tissue(phantom, correlated):
    rois, positions = flat_rois(phantom.hu + 20 * correlated, size=16)
    assert len(rois) >= 5 and rois.shape[1:] == (16, 16)
    assert np.all(np.abs(rois.mean(axis=(1, 2))) < 200)
    assert positions.shape == (len(rois), 3)


def test_bad_input():
    with pytest.raises(InputError):
        estimate_noise_sd(np.zeros(10))
    with pytest.raises(InputError, match="no flat soft-tissue"):
        estimate_noise_sd(np.full((64, 64), -1000.0))
    with pytest.raises(InputError):
        estimate_noise_sd(np.zeros((64, 64)), window=1)
    with pytest.raises(InputError):
        noise_power_spectrum_2d(np.zeros((0, 8, 8)), 1.0)
    with pytest.raises(InputError):
        noise_power_spectrum_2d(np.zeros((8, 8)), (0.0, 1.0))
