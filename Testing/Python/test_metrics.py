"""Image-quality metrics against analytic cases, and every bad input refused with a clear reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.quality import metrics, noise
from LowDoseDenoiseLib.volume import Volume

SPACING = (0.8, 0.8, 2.0)


def abdomen(slices: int = 3, size: int = 128, seed: int = 0, noise_sd: float = 30.0):
    """A piecewise-constant abdomen (fat-free body, liver, a bright vessel, a lesion) and a noisy copy."""
    z, y, x = np.mgrid[0:slices, 0:size, 0:size]
    c = size / 2
    body = ((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.47 * size)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    liver = ((y - 0.42 * size) / (0.2 * size)) ** 2 + ((x - 0.37 * size) / (0.18 * size)) ** 2 < 1
    clean[liver] = 100.0
    clean[((y - 0.62 * size) / (0.06 * size)) ** 2 + ((x - 0.66 * size) / (0.06 * size)) ** 2 < 1] = 300.0
    clean[((y - 0.40 * size) / (0.03 * size)) ** 2 + ((x - 0.33 * size) / (0.03 * size)) ** 2 < 1] = 60.0
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, clean.shape), (0, 0.7, 0.7))
    noise *= noise_sd / noise[body].std()
    return clean, clean + noise, body, liver


# -- fidelity ---------------------------------------------------------------------------------


def test_known_shift_gives_known_rmse_and_psnr():
    clean = abdomen()[0]
    shifted = clean + 5.0
    assert metrics.rmse(shifted, clean) == pytest.approx(5.0)
    full = clean.max() - clean.min()
    assert metrics.data_range(clean) == full
    assert metrics.psnr(shifted, clean) == pytest.approx(20 * math.log10(full / 5.0))
    assert metrics.psnr(shifted, clean, data_range=1000) == pytest.approx(20 * math.log10(1000 / 5.0))


def test_windowed_psnr_clips_to_the_window_and_uses_its_width():
    reference = np.full((16, 16), 40.0)
    reference[:, :8] = -1000.0  # air: clipped to the window's low end in both images
    image = reference.copy()
    image[:, :8] = -900.0  # a difference outside the window does not count
    image[:, 8:] += 10.0
    rmse_in_window = math.sqrt(0.5 * 100.0)
    assert metrics.psnr(image, reference, window="liver") == pytest.approx(20 * math.log10(400 / rmse_in_window))
    assert metrics.psnr(image, reference, window=(400, 40)) == metrics.psnr(image, reference, window="400,40")
    assert metrics.window_bounds("liver") == (-160.0, 240.0)


def test_ssim_of_an_image_with_itself_is_one_and_noise_lowers_it():
    clean, noisy, body, _ = abdomen()
    assert metrics.ssim(clean, clean) == pytest.approx(1.0)
    assert metrics.ssim(clean, clean, window="liver") == pytest.approx(1.0)
    assert metrics.psnr(clean, clean) == math.inf
    assert metrics.ssim(noisy, clean, window="liver") < 0.9
    assert metrics.ssim(noisy, clean, window="liver", mask=body) < metrics.ssim(noisy, clean, window="liver")


# -- ROIs --------------------------------------------------------------------------------------


def test_roi_stats_bias_and_cnr_of_known_regions():
    image = np.zeros((1, 40, 40))
    a = np.zeros_like(image, bool)
    b = np.zeros_like(image, bool)
    a[0, :, :20], b[0, :, 20:] = True, True
    image[0, :, :20] = np.tile([90.0, 110.0], 400).reshape(40, 20)  # mean 100, SD ~10
    image[0, :, 20:] = np.tile([30.0, 50.0], 400).reshape(40, 20)  # mean 40, SD ~10
    stats = metrics.roi_stats(image, a, reference=np.full_like(image, 95.0), name="liver")
    assert stats.mean == pytest.approx(100.0) and stats.voxels == 800
    assert stats.sd == pytest.approx(10.0, rel=0.01)
    assert stats.bias == pytest.approx(5.0)
    assert metrics.cnr(image, a, b) == pytest.approx(60.0 / stats.sd, rel=1e-6)


def test_circle_roi_is_a_disc_of_the_radius_in_mm():
    roi = metrics.circle_roi((3, 64, 64), (0.5, 1.0), 1, 30, 32, 10.0, "liver")
    assert roi.mask[1].any() and not roi.mask[0].any() and not roi.mask[2].any()
    rows, cols = np.nonzero(roi.mask[1])
    assert rows.max() - rows.min() == 20 and cols.max() - cols.min() == 40  # 10 mm = 10 rows, 20 columns
    assert roi.voxels == pytest.approx(math.pi * 10 * 20, rel=0.05)


def test_parse_roi_syntax():
    assert metrics.parse_roi("liver=5,100,120,12.5") == {
        "kind": "circle", "name": "liver", "z": 5, "y": 100, "x": 120, "radius_mm": 12.5}
    assert metrics.parse_roi("seg.nii.gz:5,1")["labels"] == [5, 1]
    assert metrics.parse_roi("C:/data/seg.nrrd")["path"] == "C:/data/seg.nrrd"
    assert metrics.parse_roi("organs=seg.nrrd") == {"kind": "labels", "name": "organs", "path": "seg.nrrd",
                                                   "labels": None}
    with pytest.raises(InputError, match="not understood"):
        metrics.parse_roi("5,100,120")


def test_label_rois_are_resampled_by_physical_coordinates():
    """A label map stored with a flipped y axis still lands on the same anatomy."""
    ct = Volume(voxels=np.zeros((2, 10, 12), np.int16), spacing=(1.0, 1.0, 2.0))
    labels = np.zeros((2, 10, 12), np.uint8)
    labels[:, 1:3, 4:6] = 5  # rows 1-2 in the label map's own (flipped) index order
    flipped = Volume(voxels=labels, spacing=(1.0, 1.0, 2.0), origin=(0.0, 9.0, 0.0),
                     direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))
    (roi,) = metrics.label_rois(flipped, ct)
    assert roi.name == "label 5" and roi.voxels == 8
    assert set(np.nonzero(roi.mask)[1]) == {7, 8}  # y = 9 - 1, 9 - 2
    with pytest.raises(InputError, match="Label 7 is empty"):
        metrics.label_rois(flipped, ct, [7])


# -- noise power spectrum -----------------------------------------------------------------------


def test_white_noise_has_a_flat_nps_whose_integral_is_the_variance():
    rng = np.random.default_rng(3)
    sigma, spacing = 20.0, (0.7, 0.7)
    image = rng.normal(0.0, sigma, (4, 128, 128))
    result = metrics.noise_power_spectrum(image, spacing, positions=metrics.tile_positions(np.ones(image.shape)))
    assert result.n_rois == 64
    assert result.variance == pytest.approx(sigma**2, rel=0.03)  # the plane fit takes 3 of 1024 dof
    flat_level = sigma**2 * spacing[0] * spacing[1]  # HU²·mm²
    assert np.allclose(result.nps[1:], flat_level, rtol=0.1)  # the plane fit dents only the lowest bin
    assert 0.7 * flat_level < result.nps[0] < flat_level
    nyquist = 0.5 / spacing[0]
    assert result.frequency.max() == pytest.approx(nyquist, rel=0.05)
    assert result.mean_frequency == pytest.approx(np.mean(result.frequency), rel=0.05)  # flat: mid-band


def test_nps_with_reference_measures_only_the_noise():
    clean, noisy, _, liver = abdomen(slices=4, size=192)
    with_reference = metrics.noise_power_spectrum(noisy, SPACING, reference=clean, mask=liver)
    assert with_reference.source == "image − reference"
    assert with_reference.noise_sd == pytest.approx(30.0, rel=0.15)
    smooth = metrics.noise_power_spectrum(ndimage.gaussian_filter(noisy, (0, 1.5, 1.5)), SPACING, reference=clean,
                                          mask=liver)
    assert smooth.mean_frequency < 0.7 * with_reference.mean_frequency  # the "plastic look", measured
    assert smooth.variance < with_reference.variance


def test_nps_pair_without_reference_uses_the_same_rois():
    clean, noisy, body, _ = abdomen(slices=4, size=192)
    noisy = np.where(body, 40.0, -1000.0) + (noisy - clean)  # organ-free: every flat tile is pure noise
    clean = np.where(body, 40.0, -1000.0)
    before, after = metrics.nps_pair(noisy, clean + 0.5 * (noisy - clean), SPACING)
    assert before.n_rois == after.n_rois > 0
    assert after.variance == pytest.approx(0.25 * before.variance, rel=0.02)
    assert after.mean_frequency == pytest.approx(before.mean_frequency, rel=0.02)


# -- edges and removed structure --------------------------------------------------------------


def test_edge_preservation_is_one_for_the_reference_and_drops_with_blur():
    clean, noisy, _, _ = abdomen()
    assert metrics.edge_preservation(clean, clean, SPACING) == pytest.approx(1.0)
    mild = metrics.edge_preservation(ndimage.gaussian_filter(clean, (0, 1, 1)), clean, SPACING)
    strong = metrics.edge_preservation(ndimage.gaussian_filter(clean, (0, 4, 4)), clean, SPACING)
    assert 1.0 > mild > strong


@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
def test_removing_only_noise_passes_the_residual_check(strength):
    clean, noisy, _, _ = abdomen(size=160)
    check = metrics.residual_structure(noisy, noisy - strength * (noisy - clean), SPACING)
    assert not check.structured and abs(check.correlation) < 0.1, check


def test_blurring_anatomy_fails_the_residual_check():
    clean, noisy, _, _ = abdomen(size=160)
    check = metrics.residual_structure(noisy, ndimage.gaussian_filter(noisy, (0, 3, 3)), SPACING)
    assert check.structured and "anatomy" in check.message


def test_noise_sd_in_a_mask_ignores_the_lesion_inside_the_liver():
    clean, noisy, _, liver = abdomen(size=192)
    sd = noise.estimate_noise_sd(noisy, mask=liver)
    assert sd == pytest.approx(30.0, rel=0.15)
    assert metrics.roi_stats(noisy, liver).sd > sd  # the plain SD includes the lesion edge


def test_noise_sd_in_a_mask_narrower_than_a_window_is_the_plain_sd():
    _, noisy, _, _ = abdomen(size=96)
    strip = np.zeros(noisy.shape, bool)
    strip[1, 40:44, 20:70] = True  # 4 rows: no 11 × 11 window fits
    estimate = noise.measure_noise(noisy, mask=strip)
    assert estimate.method.startswith("plain SD")
    assert estimate.sd == pytest.approx(noisy[strip].std(ddof=1))


def test_bias_is_the_mean_error_in_the_mask():
    clean, _, _, liver = abdomen()
    shifted = clean + np.where(liver, 3.0, -7.0)
    assert metrics.bias(shifted, clean, liver) == pytest.approx(3.0)
    assert metrics.bias(shifted, clean, ~liver) == pytest.approx(-7.0)


def test_flat_tissue_roi_finds_liver_like_tissue_inside_the_box():
    clean, noisy, body, liver = abdomen(size=160)
    roi = metrics.flat_tissue_roi(noisy, hu_range=(70.0, 130.0))
    assert roi.sum() > 0.5 * liver.sum() and liver[roi].mean() > 0.97  # the 100 HU liver, not the 40 HU body
    boxed = metrics.flat_tissue_roi(noisy, box=(0, 160, 0, 55), hu_range=(70.0, 130.0))
    assert boxed.any() and not boxed[:, :, 55:].any() and np.all(roi[boxed])


def test_residual_correlations_tell_blur_from_noise_removal():
    clean, noisy, body, _ = abdomen(size=160)
    ideal = metrics.residual_correlations(noisy, clean, clean, body)
    blurred = metrics.residual_correlations(noisy, ndimage.gaussian_filter(noisy, (0, 3, 3)), clean, body)
    assert abs(ideal["grad"]) < 0.1 and abs(ideal["laplacian"]) < 0.1
    assert blurred["grad"] > 0.3 and blurred["laplacian"] < -0.3  # blur removes −c·Laplacian


# -- evaluate -------------------------------------------------------------------------------


def _volume(array, **geometry) -> Volume:
    return Volume(voxels=np.rint(array).astype(np.int16), spacing=geometry.pop("spacing", SPACING), **geometry)


def test_evaluate_full_and_no_reference():
    clean, noisy, _, liver = abdomen(slices=4, size=192)
    half = clean + 0.5 * (noisy - clean)
    rois = [metrics.Roi("liver", liver[:, :, :] & (np.arange(4)[:, None, None] == 1)),
            metrics.circle_roi(clean.shape, SPACING, 1, 140, 60, 8.0, "muscle")]
    report = metrics.evaluate(_volume(half), _volume(clean), _volume(noisy), rois)
    assert report["mode"] == "full-reference"
    assert report["fidelity"]["psnr_window_db"] > report["fidelity_input"]["psnr_window_db"]
    assert report["fidelity"]["data_range_full_hu"] == 1300 and report["fidelity"]["data_range_window_hu"] == 400
    assert report["rois"][0]["bias"] == pytest.approx(0.0, abs=2.0)
    assert report["cnr"]["denoised"] > report["cnr"]["input"]
    assert report["nps"]["denoised"]["variance_hu2"] < report["nps"]["input"]["variance_hu2"]
    assert not report["warnings"]
    blind = metrics.evaluate(_volume(ndimage.gaussian_filter(noisy, (0, 3, 3))), input=_volume(noisy))
    assert blind["mode"] == "no-reference" and "fidelity" not in blind
    assert any("anatomy" in w for w in blind["warnings"])
    assert any("plastic" in w for w in blind["warnings"])
    assert metrics.format_report(blind)[-1].startswith("WARNING")


def _numbers(report, path=""):
    """Every number of a report, by its place in it."""
    if isinstance(report, dict):
        for key, value in report.items():
            yield from _numbers(value, f"{path}/{key}")
    elif isinstance(report, (list, tuple)):
        for index, value in enumerate(report):
            yield from _numbers(value, f"{path}[{index}]")
    elif isinstance(report, (int, float, np.number)) and not isinstance(report, bool):
        yield path, float(report)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_streaming_evaluation_gives_the_numbers_of_one_block(dtype):
    """Issue 15 item 19: block by block (one slice at a time) is the same measure as the whole volume at once."""
    clean, noisy, _, liver = abdomen(slices=5, size=160, seed=3)
    half = clean + 0.5 * (noisy - clean)

    def vol(a):
        return _volume(np.rint(a).astype(np.int16) if dtype == np.int16 else a.astype(np.float32))

    rois = [metrics.Roi("liver", liver & (np.arange(5)[:, None, None] >= 2)),
            metrics.circle_roi(clean.shape, SPACING, 3, 120, 60, 8.0, "muscle")]
    for kwargs in ({"reference": vol(clean), "input": vol(noisy), "rois": rois}, {"input": vol(noisy)}):
        whole = dict(_numbers(metrics.evaluate(vol(half), block_slices=None, **kwargs)))
        for block in (1, 2):
            streamed = dict(_numbers(metrics.evaluate(vol(half), block_slices=block, **kwargs)))
            assert streamed.keys() == whole.keys()
            for key, value in whole.items():
                assert streamed[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        assert len(whole) > 60  # fidelity, ROIs, CNR, NPS curves, residual check: all compared
    assert metrics.BLOCK_SLICES < 300  # evaluate's default streams a 300-slice series


def test_every_measure_streams_with_the_same_result():
    clean, noisy, body, liver = abdomen(slices=4, size=128, seed=5)
    half = clean + 0.5 * (noisy - clean)
    calls = [
        lambda b: metrics.rmse(half, clean, mask=liver, block_slices=b),
        lambda b: metrics.psnr(half, clean, window="liver", block_slices=b),
        lambda b: metrics.ssim(half, clean, mask=body, block_slices=b),
        lambda b: metrics.edge_preservation(half, clean, SPACING, window="liver", block_slices=b),
        lambda b: metrics.residual_structure(noisy, half, SPACING, block_slices=b).correlation,
        lambda b: metrics.residual_structure(noisy, half, SPACING, mask=liver, block_slices=b).residual_sd,
        lambda b: metrics.noise_power_spectrum(half, SPACING, block_slices=b).variance,
        lambda b: metrics.noise_power_spectrum(half, SPACING, reference=clean, block_slices=b).mean_frequency,
    ]
    for call in calls:
        assert call(1) == pytest.approx(call(None), rel=1e-12)
    np.testing.assert_array_equal(metrics.flat_positions(noisy, block_slices=1), metrics.flat_positions(noisy))
    np.testing.assert_array_equal(metrics.nps_positions(noisy, block_slices=3), metrics.nps_positions(noisy))


def test_noise_in_a_mask_measures_only_the_slices_it_touches():
    """The ROI noise estimate on the mask's slices alone is the estimate on the whole volume."""
    clean, noisy, _, liver = abdomen(slices=6, size=128, seed=7)
    mask = liver & (np.arange(6)[:, None, None] == 4)
    estimate = noise.measure_noise(noisy, mask=mask)
    _, sd_map = noise.local_mean_sd(noisy, noise.NOISE_WINDOW)  # the whole volume, as before
    assert estimate.flat.shape == noisy.shape and not estimate.flat[:4].any()
    assert estimate.sd == noise.density_mode(sd_map[estimate.flat])
    assert noise.measure_noise(noisy.astype(np.float32), mask=mask).sd == pytest.approx(
        noise.measure_noise(noisy.astype(np.float32).astype(np.float64), mask=mask).sd, rel=1e-12)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("change, expected", [
    ({"spacing": (0.8, 0.8, 2.5)}, r"spacing \(0.8, 0.8, 2\) vs \(0.8, 0.8, 2.5\) mm"),
    ({"origin": (0.0, 10.0, 0.0)}, r"origin \(0, 0, 0\) vs \(0, 10, 0\) mm"),
    ({"direction": (1, 0, 0, 0, -1, 0, 0, 0, 1)}, "direction"),
])
def test_geometry_mismatch_names_the_difference(change, expected):
    clean = abdomen(slices=2, size=32)[0]
    with pytest.raises(InputError, match=expected):
        metrics.evaluate(_volume(clean, **change), _volume(clean))


def test_size_mismatch_names_both_sizes():
    clean = abdomen(slices=2, size=32)[0]
    with pytest.raises(InputError, match=r"size \(32, 32, 2\) vs \(32, 32, 1\) voxels"):
        metrics.check_same_geometry(_volume(clean), _volume(clean[:1]))
    with pytest.raises(InputError, match="same grid"):
        metrics.rmse(clean, clean[:1])


@pytest.mark.parametrize("centre, radius, expected", [
    ((5, 10, 10), 3.0, "outside the image"),
    ((0, 40, 10), 3.0, "outside the image"),
    ((0, 2, 16), 5.0, "reaches past the edge"),
    ((0, 16, 16), 0.0, "positive"),
])
def test_roi_outside_the_image_is_refused(centre, radius, expected):
    with pytest.raises(InputError, match=expected):
        metrics.circle_roi((2, 32, 32), (1.0, 1.0), *centre, radius)


def test_empty_mask_is_refused():
    image = np.zeros((2, 16, 16))
    for call in (lambda m: metrics.roi_stats(image, m), lambda m: metrics.rmse(image, image, m),
                 lambda m: noise.estimate_noise_sd(image, mask=m)):
        with pytest.raises(InputError, match="empty"):
            call(np.zeros(image.shape, bool))


@pytest.mark.parametrize("window", ["0,40", (0, 40), "-400,40"])
def test_window_of_zero_width_is_refused(window):
    clean = abdomen(slices=1, size=32)[0]
    with pytest.raises(InputError, match="width must be positive"):
        metrics.psnr(clean, clean, window=window)


@pytest.mark.parametrize("values, expected", [
    (lambda: np.random.default_rng(0).integers(0, 255, (2, 32, 32)), "8-bit"),
    (lambda: np.random.default_rng(0).integers(0, 2, (2, 32, 32)) + 1000, "mask or map"),
    (lambda: np.random.default_rng(0).normal(0, 1, (2, 32, 32)) * 1e5, "beyond any CT range"),
])
def test_images_that_are_not_ct_are_refused(values, expected):
    image = Volume(voxels=values().astype(np.float32), spacing=SPACING)
    with pytest.raises(InputError, match=expected):
        metrics.evaluate(image)


def test_nan_and_no_flat_region_are_refused():
    image = np.zeros((1, 64, 64))
    image[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        metrics.rmse(image, np.zeros_like(image))
    with pytest.raises(InputError, match="No flat soft-tissue region"):
        metrics.noise_power_spectrum(np.full((1, 64, 64), -1000.0), (1, 1))


def test_edge_preservation_in_a_window_sees_soft_tissue_blur():
    clean, noisy, body, _ = abdomen(size=160)
    blurred = ndimage.gaussian_filter(clean, (0, 2, 2))
    full = metrics.edge_preservation(blurred, clean, SPACING, mask=body)
    liver_window = metrics.edge_preservation(blurred, clean, SPACING, mask=body, window="liver")
    assert metrics.edge_preservation(clean, clean, SPACING, window="liver") == pytest.approx(1.0)
    assert liver_window < full  # the body outline no longer hides the blur of the 40/100 HU edges
