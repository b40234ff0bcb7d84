"""Task phantoms: the measures give the known answers on known filters."""

import numpy as np
import pytest
from scipy import ndimage

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.quality import taskphantoms as tp


@pytest.fixture(scope="module")
def lcd():
    phantom = tp.lcd_phantom(size=256, pixel_mm=0.8)
    absent, present = tp.noisy_pairs(phantom, 0.1, realisations=6, seed=3)
    return phantom, absent, present


def test_lcd_phantom_has_the_mita_inserts(lcd):
    phantom, absent, present = lcd
    assert [(i.diameter_mm, i.contrast_hu) for i in phantom.inserts] == list(tp.LCD_INSERTS)
    for insert in phantom.inserts:
        assert insert.signal.max() == pytest.approx(insert.contrast_hu, rel=1e-6)
        area_mm2 = insert.signal.sum() / insert.contrast_hu * 0.8**2
        assert area_mm2 == pytest.approx(np.pi * (insert.diameter_mm / 2) ** 2, rel=0.08)
    # the same noise in both; noise at 10% dose = 10 HU / sqrt(0.1)
    diff = present - absent
    assert np.allclose(diff, (phantom.with_signals() - phantom.background)[None], atol=1e-3)
    inside = phantom.background > 0
    assert absent[:, inside].std() == pytest.approx(tp.FULL_DOSE_NOISE_HU / np.sqrt(0.1), rel=0.05)


def test_identity_keeps_all_contrast_and_detectability_is_finite(lcd):
    phantom, absent, present = lcd
    results = tp.evaluate_method(phantom, lambda x: x, absent, present)
    for name, row in results.items():
        assert row["contrast_ratio"] == pytest.approx(1.0, abs=1e-6), name
        assert row["d_prime"] > 0 and 0.5 < row["auc"] <= 1.0
    # the 10 mm / 3 HU insert carries more signal energy than the 3 mm / 14 HU one
    assert results["10 mm / 3 HU"]["d_prime"] > results["3 mm / 14 HU"]["d_prime"]


def test_a_filter_that_erases_half_the_signal_reads_half(lcd):
    phantom, absent, present = lcd
    mean = float(phantom.background[phantom.background > 0].mean())
    results = tp.evaluate_method(phantom, lambda x: 0.5 * x + 0.5 * mean, absent, present)
    for row in results.values():
        assert row["contrast_ratio"] == pytest.approx(0.5, abs=1e-6)


def test_gaussian_blur_loses_small_insert_contrast_more(lcd):
    phantom, absent, present = lcd
    blur = lambda x: ndimage.gaussian_filter(x, (0, 2.0, 2.0))  # noqa: E731
    results = tp.evaluate_method(phantom, blur, absent, present)
    assert results["3 mm / 14 HU"]["contrast_ratio"] < results["10 mm / 3 HU"]["contrast_ratio"] < 1.0
    identity = tp.evaluate_method(phantom, lambda x: x, absent, present)
    assert results["3 mm / 14 HU"]["noise_sd"] < 0.5 * identity["3 mm / 14 HU"]["noise_sd"]


def test_prewhitened_ceiling_reads_the_white_noise_answer_and_bounds_linear_filters():
    """In white noise of SD σ the Hotelling d′ is |s|/σ; in the simulator's correlated noise no linear
    filter's NPW d′ (measured over many realisations) exceeds it, and the identity's NPW d′ lies below
    it (correlated noise: the NPW observer is not the ideal one)."""
    phantom = tp.lcd_phantom(size=256, pixel_mm=0.8)
    rng = np.random.default_rng(0)
    white = phantom.background[None] + rng.normal(0, 20.0, (8,) + phantom.background.shape).astype(np.float32)
    signals = (phantom.with_signals() - phantom.background)[None]
    rows = tp.evaluate_method(phantom, lambda x: x, white, white + signals)
    for insert in phantom.inserts:
        expected = np.sqrt((insert.signal[insert.roi].astype(np.float64) ** 2).sum()) / 20.0
        assert rows[insert.name]["d_prime_ceiling"] == pytest.approx(expected, rel=0.06), insert.name
    absent, present = tp.noisy_pairs(phantom, 0.1, realisations=48, seed=5)
    for method in (lambda x: x, lambda x: ndimage.gaussian_filter(x, (0, 1.0, 1.0)),
                   lambda x: ndimage.gaussian_filter(x, (0, 2.5, 2.5))):
        rows = tp.evaluate_method(phantom, method, absent, present)
        for name, row in rows.items():
            assert row["d_prime"] <= 1.1 * row["d_prime_ceiling"], (name, row)
    identity = tp.evaluate_method(phantom, lambda x: x, absent, present)
    assert all(row["d_prime"] < row["d_prime_ceiling"] for row in identity.values())


def test_resolution_identity_keeps_1_and_gaussian_its_known_transfer():
    phantom = tp.resolution_phantom(size=256, pixel_mm=0.68)
    absent, present = tp.noisy_pairs(phantom, 0.25, realisations=2, seed=1)
    identity = tp.evaluate_method(phantom, lambda x: x, absent, present)
    sigma = 1.0
    blurred = tp.evaluate_method(phantom, lambda x: ndimage.gaussian_filter(x, (0, sigma, sigma)), absent, present)
    for insert in phantom.inserts:
        assert identity[insert.name]["energy_kept"] == pytest.approx(1.0, abs=1e-6)
        # expected: sum H(f)|T(f)|^2 / sum |T(f)|^2 over the band, H = exp(-2 pi^2 sigma^2 f^2)
        template = insert.signal[insert.roi]
        h, w = template.shape
        window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
        power = np.abs(np.fft.fft2(template * window)) ** 2
        f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
        band = (f >= 0.1) & (f <= 0.5)
        expected = (np.exp(-2 * np.pi**2 * sigma**2 * f**2) * power)[band].sum() / power[band].sum()
        assert blurred[insert.name]["energy_kept"] == pytest.approx(expected, abs=0.03), insert.name
        assert blurred[insert.name]["energy_kept"] < 0.6


def test_bad_arguments_are_refused():
    with pytest.raises(InputError, match="does not fit"):
        tp.lcd_phantom(size=64, pixel_mm=0.5)
    with pytest.raises(InputError, match="Dose fraction"):
        tp.noisy_pairs(tp.lcd_phantom(size=256), 0.0, 4)
