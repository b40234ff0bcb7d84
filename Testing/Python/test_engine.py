"""The engine on arrays: shapes, strength, edges, batches, progress, cancel and bad input."""

import threading
import warnings

import numpy as np
import pytest
import torch

from LowDoseDenoiseLib.engine import ct_range_problem, denoise_volume, resolve_device
from LowDoseDenoiseLib.errors import Cancelled, DeviceError, InputError


def _volume(depth=5, rows=40, cols=36, seed=0):
    rng = np.random.default_rng(seed)
    return (40 + rng.normal(0, 20, size=(depth, rows, cols))).astype(np.float32)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_any_slice_count_down_to_one(test_model, depth):
    hu = _volume(depth)
    out = denoise_volume(hu, test_model, device="cpu")
    assert out.shape == hu.shape and out.dtype == np.float32
    assert np.abs(out - hu).max() > 0.1  # the (random) network changes the image


def test_a_2d_image_is_one_slice(test_model):
    hu = _volume(1)
    out2d = denoise_volume(hu[0], test_model, device="cpu")
    assert out2d.shape == hu[0].shape
    np.testing.assert_array_equal(out2d, denoise_volume(hu, test_model, device="cpu")[0])


def test_edges_replicate_the_end_slice(test_model):
    hu = _volume(3)
    out = denoise_volume(hu, test_model, device="cpu")
    stacked = np.stack([hu[0], hu[0], hu[1]])[None] / 1000.0
    with torch.no_grad():
        first = test_model.module(torch.from_numpy(stacked.astype(np.float32)))[0, 0].numpy() * 1000.0
    np.testing.assert_allclose(out[0], first, atol=1e-3)


def test_strength_zero_is_identity_and_strength_scales_linearly(test_model):
    hu = _volume(3)
    np.testing.assert_array_equal(denoise_volume(hu, test_model, strength=0.0), hu)
    full = denoise_volume(hu, test_model, device="cpu", strength=1.0)
    half = denoise_volume(hu, test_model, device="cpu", strength=0.5)
    np.testing.assert_allclose(half, (hu + full) / 2, atol=1e-3)


def test_batch_size_does_not_change_the_result(test_model):
    hu = _volume(5)
    one = denoise_volume(hu, test_model, device="cpu", batch_size=1)
    three = denoise_volume(hu, test_model, device="cpu", batch_size=3)
    np.testing.assert_allclose(one, three, atol=1e-4)


def test_deterministic_on_cpu(test_model):
    hu = _volume(3)
    np.testing.assert_array_equal(denoise_volume(hu, test_model, device="cpu"),
                                  denoise_volume(hu, test_model, device="cpu"))


def test_integer_input_and_padding_outside_the_window_are_kept(test_model):
    hu = _volume(2).astype(np.int16)
    hu[:, :4, :] = -3024  # outside the reconstruction circle
    out = denoise_volume(hu, test_model, device="cpu")
    assert np.all(out[:, :4, :] == -3024)
    assert np.abs(out[:, 10:, :] - hu[:, 10:, :]).max() > 0.1


def test_progress_after_every_batch(test_model):
    calls = []
    denoise_volume(_volume(5), test_model, device="cpu", batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_cancel_raises_between_batches(test_model):
    event = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        event.set()

    with pytest.raises(Cancelled):
        denoise_volume(_volume(6), test_model, device="cpu", batch_size=2, progress=progress, cancel=event)
    assert calls == [2]
    with pytest.raises(Cancelled):
        denoise_volume(_volume(2), test_model, device="cpu", cancel=lambda: True)


def test_pixel_size_outside_training_range_warns(test_model):
    with pytest.warns(UserWarning, match="outside the 0.50–1.50 mm range"):
        denoise_volume(_volume(1), test_model, device="cpu", spacing=(3.0, 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        denoise_volume(_volume(1), test_model, device="cpu", spacing=(0.8, 0.8))


def test_bad_input(test_model):
    with pytest.raises(InputError, match="below the model's minimum"):
        denoise_volume(np.zeros((2, 6, 40), np.float32), test_model)
    with pytest.raises(InputError, match="empty"):
        denoise_volume(np.zeros((0, 40, 40), np.float32), test_model)
    bad = _volume(2)
    bad[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        denoise_volume(bad, test_model)
    with pytest.raises(InputError, match="shape"):
        denoise_volume(np.zeros((2, 2, 40, 40), np.float32), test_model)
    for strength in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="Strength"):
            denoise_volume(_volume(1), test_model, strength=strength)
    for batch in (0, -1, 1.5):
        with pytest.raises(InputError, match="Batch size"):
            denoise_volume(_volume(1), test_model, batch_size=batch)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(DeviceError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_out_of_memory_halves_the_batch_then_falls_back_to_cpu(test_model, monkeypatch):
    """Simulate GPU OOM: the runner backs off to smaller batches and the result is unchanged."""
    from LowDoseDenoiseLib import engine

    hu = _volume(4)
    expected = denoise_volume(hu, test_model, device="cpu", batch_size=4)
    real_noise = engine._Runner.noise
    sizes = []

    def flaky(self, volume, start, stop):
        sizes.append(stop - start)
        if stop - start > 1:
            raise torch.OutOfMemoryError("simulated")
        return real_noise(self, volume, start, stop)

    monkeypatch.setattr(engine._Runner, "noise", flaky)
    out = denoise_volume(hu, test_model, device="cpu", batch_size=4)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert sizes[:3] == [4, 2, 1]


def test_ct_range_check():
    assert ct_range_problem(np.array([0, 128, 255])) is not None
    assert ct_range_problem(np.array([3.0, 4.0, 5.0])) is not None
    assert ct_range_problem(np.array([-1000, 40, 1200])) is None
