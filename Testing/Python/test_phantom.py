"""Synthetic abdomen: anatomy, HU values, labels, any size, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.quality.noise import estimate_noise_sd
from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(128, 6, seed=0)


def test_shapes_types_and_labels(phantom):
    assert phantom.hu.shape == (6, 128, 128) and phantom.hu.dtype == np.float32
    for name in ("body", "liver", "lesions", "vessels", "bone", "kidneys", "bowel_air", "noise_roi", "fat"):
        assert phantom.labels[name].shape == phantom.hu.shape and phantom.labels[name].dtype == bool
        assert phantom.labels[name].any(), name
    assert phantom.spacing == pytest.approx((400 / 128, 400 / 128, 2.5))


def test_tissue_values(phantom):
    hu, labels = phantom.hu, phantom.labels
    assert np.all(hu[:, :3, :3] == -1000)  # air outside the body
    assert 50 < np.median(hu[labels["liver"] & ~labels["lesions"] & ~labels["vessels"]]) < 70
    assert -115 < np.median(hu[labels["fat"]]) < -85
    assert hu[labels["bone"]].max() > 600
    assert hu[labels["bowel_air"]].min() < -900
    assert 130 < np.median(hu[labels["vessels"]]) < 190
    contrasts = [abs(lesion["contrast_hu"]) for lesion in phantom.lesions]
    assert min(contrasts) >= 5 and max(contrasts) <= 20
    assert len({lesion["radius_mm"] for lesion in phantom.lesions}) >= 3
    # The noise ROI is flat liver: only the subtle texture varies there.
    roi = hu[labels["noise_roi"]]
    assert labels["noise_roi"].sum() > 20 and 50 < roi.mean() < 70 and roi.std() < 4


def test_structures_change_along_z(phantom):
    assert not np.array_equal(phantom.hu[0], phantom.hu[-1])
    assert np.abs(phantom.hu[0] - phantom.hu[1]).mean() < np.abs(phantom.hu[0] - phantom.hu[-1]).mean()


def test_seeded_and_any_size():
    a, b, c = make_phantom(64, 2, seed=4), make_phantom(64, 2, seed=4), make_phantom(64, 2, seed=5)
    assert np.array_equal(a.hu, b.hu) and not np.array_equal(a.hu, c.hu)
    single = make_phantom(100, 1, spacing=(1.0, 1.0, 3.0))
    assert single.hu.shape == (1, 100, 100) and single.spacing == (1.0, 1.0, 3.0)
    volume = single.volume()
    assert volume.voxels.shape == (1, 100, 100) and volume.spacing == (1.0, 1.0, 3.0)


def test_noise_free_at_display_resolution():
    assert estimate_noise_sd(make_phantom(256, 1).hu) < 3.0


def test_low_dose_phantom_noise_level():
    clean, noisy, spacing = make_low_dose_phantom(128, 2, dose_fraction=0.25, seed=1)
    assert clean.shape == noisy.shape and noisy.dtype == np.float32
    roi = make_phantom(128, 2, seed=1).labels["liver"]
    # Full-dose 10 HU at a quarter of the dose: about 20 HU in soft tissue.
    assert 14 < (noisy - clean)[roi].std() < 28


@pytest.mark.parametrize("kwargs", [{"size": 8}, {"slices": 0}, {"spacing": (1.0, -1.0, 2.0)}, {"size": "x"}])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        make_phantom(**kwargs)
