"""The engine on arrays: shapes, strength, edges, batches, progress, cancel and bad input."""

import threading
import warnings

import numpy as np
import pytest
import torch

from conftest import make_test_generator
from LowDoseDenoiseLib import engine
from LowDoseDenoiseLib.engine import (
    Predictor,
    check_strength,
    ct_range_problem,
    denoise_volume,
    is_cancelled,
    list_devices,
    resolve_device,
)
from LowDoseDenoiseLib.errors import Cancelled, DeviceError, InputError
from LowDoseDenoiseLib.modelfile import HUNormalisation
from LowDoseDenoiseLib.volume import cast_like


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
    out = denoise_volume(hu, test_model, device="cpu", ensemble=1)
    stacked = np.stack([hu[0], hu[0], hu[1]])[None] / 1000.0
    with torch.no_grad():
        first = test_model.module(torch.from_numpy(stacked.astype(np.float32)))[0, 0].numpy() * 1000.0
    np.testing.assert_allclose(out[0], first, atol=1e-3)


def test_self_ensemble_of_two_averages_the_network_and_its_transposed_twin(test_model):
    hu = _volume(3)
    stacked = torch.from_numpy((hu[None] / 1000.0).astype(np.float32))
    with torch.no_grad():
        plain = test_model.module(stacked)[0, 0].numpy()
        twin = test_model.module(stacked.transpose(-1, -2))[0, 0].numpy().T
    expected = 0.5 * (plain + twin) * 1000.0
    out = denoise_volume(hu, test_model, device="cpu")  # the default is the pair
    assert engine.DEFAULT_ENSEMBLE == 2
    np.testing.assert_allclose(out[1], expected, atol=2e-3)
    single = denoise_volume(hu, test_model, device="cpu", ensemble=1)
    np.testing.assert_allclose(single[1], plain * 1000.0, atol=1e-3)
    assert np.abs(single - out).max() > 0.1  # the random network is not symmetric itself


@pytest.mark.parametrize("size", [4, 8])
def test_self_ensembles_with_the_transpose_make_the_denoiser_commute_with_it(test_model, size):
    hu = _volume(3, rows=40, cols=40)
    out = denoise_volume(hu, test_model, device="cpu", ensemble=size)
    flipped = denoise_volume(np.ascontiguousarray(hu.transpose(0, 2, 1)), test_model, device="cpu", ensemble=size)
    np.testing.assert_allclose(flipped, out.transpose(0, 2, 1), atol=2e-3)
    rotated = denoise_volume(np.ascontiguousarray(hu[:, ::-1, ::-1]), test_model, device="cpu", ensemble=size)
    np.testing.assert_allclose(rotated, out[:, ::-1, ::-1], atol=2e-3)
    if size == 8:  # the whole group: a quarter turn too
        turned = denoise_volume(np.ascontiguousarray(np.rot90(hu, 1, axes=(1, 2))), test_model, device="cpu",
                                ensemble=size)
        np.testing.assert_allclose(turned, np.rot90(out, 1, axes=(1, 2)), atol=2e-3)
    plain = denoise_volume(hu, test_model, device="cpu", ensemble=1)
    plain_t = denoise_volume(np.ascontiguousarray(hu.transpose(0, 2, 1)), test_model, device="cpu", ensemble=1)
    assert np.abs(plain_t - plain.transpose(0, 2, 1)).max() > 0.1  # one pass does not commute


def test_self_ensemble_on_a_non_square_image_keeps_its_shape(test_model):
    hu = _volume(2, rows=40, cols=28)
    for size in sorted(engine.ENSEMBLES):
        out = denoise_volume(hu, test_model, device="cpu", ensemble=size)
        assert out.shape == hu.shape and np.isfinite(out).all()


@pytest.mark.parametrize("bad", [0, 3, 16, True, "2", 2.0])
def test_a_self_ensemble_size_outside_the_list_is_refused(test_model, bad):
    with pytest.raises(InputError, match="self-ensemble size must be one of"):
        denoise_volume(_volume(1), test_model, device="cpu", ensemble=bad)


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


class _NeighbourSensitive(torch.nn.Module):
    """Output = centre − 0.5 × (mean of the neighbours − centre): depends on what the neighbours hold."""

    context = 1
    min_size = 1

    def forward(self, x):
        centre = x[:, 1:2]
        return centre - 0.5 * (0.5 * (x[:, 0:1] + x[:, 2:3]) - centre)


def test_slices_farther_apart_than_in_training_are_denoised_one_by_one(caplog):
    """A model trained on 2–5 mm slice spacing gets each 8 mm slice alone (as a single image, which
    the run with neighbours=False shows); 3 mm slices keep their neighbours; both can be forced."""
    net = Predictor(_NeighbourSensitive(), HUNormalisation(scale=100.0), 1, 1, None, "probe", (2.0, 5.0))
    volume = _volume(4)
    alone = denoise_volume(volume, net, device="cpu", neighbours=False)
    together = denoise_volume(volume, net, device="cpu", neighbours=True)
    assert np.allclose(alone, volume, atol=1e-3)  # neighbours equal to the centre: no change
    assert not np.allclose(together, volume, atol=1.0)
    with caplog.at_level("WARNING"), pytest.warns(UserWarning, match="8.00 mm apart.*on its own"):
        thick = denoise_volume(volume, net, device="cpu", spacing=(0.7, 0.7, 8.0))
    assert np.array_equal(thick, alone) and "8.00 mm apart" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(denoise_volume(volume, net, device="cpu", spacing=(0.7, 0.7, 3.0)), together)
    assert np.array_equal(denoise_volume(volume, net, device="cpu", spacing=(0.7, 0.7, 8.0), neighbours=True), together)
    assert np.array_equal(denoise_volume(volume, net, device="cpu", spacing=(0.7, 0.7)), together)  # no z: as before
    unrecorded = Predictor(_NeighbourSensitive(), HUNormalisation(scale=100.0), 1, 1, None, "old model")
    assert np.array_equal(denoise_volume(volume, unrecorded, device="cpu", spacing=(0.7, 0.7, 8.0)), together)
    with pytest.raises(InputError, match="neighbours must be"):
        denoise_volume(volume, net, device="cpu", neighbours="yes")


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


class _GpuThatRunsOutOfMemory(torch.nn.Module):
    """Wraps a network 'on a GPU' that raises torch.cuda.OutOfMemoryError for batches over
    ``fits`` slices, and for every batch once ``fits`` is 0; on the CPU it runs normally.

    ``.to(device)`` only records where the engine put it (the fake device is 'meta', which
    holds no data), so the same weights serve the CPU fallback.
    """

    def __init__(self, inner, fits: int):
        super().__init__()
        self.inner = inner
        self.fits = fits
        self.where = torch.device("cpu")
        self.batches = []
        self.context = inner.context
        self.min_size = inner.min_size

    def to(self, device):
        self.where = torch.device(device)
        return self

    def forward(self, x):
        self.batches.append((x.device.type, x.shape[0]))
        if self.where.type != "cpu" and x.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def _fake_gpu(monkeypatch):
    from LowDoseDenoiseLib import engine

    monkeypatch.setattr(engine, "resolve_device", lambda device: torch.device("meta"))


def test_out_of_memory_halves_the_batch(test_model, monkeypatch):
    """torch.cuda.OutOfMemoryError for batches over one slice: the batch is halved down to 1,
    without a user warning, and the result is unchanged."""
    from LowDoseDenoiseLib import engine

    hu = _volume(4)
    expected = denoise_volume(hu, test_model, device="cpu", batch_size=4)
    real_noise = engine._Runner.noise
    sizes = []

    def flaky(self, volume, start, stop):
        sizes.append(stop - start)
        if stop - start > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_noise(self, volume, start, stop)

    monkeypatch.setattr(engine._Runner, "noise", flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = denoise_volume(hu, test_model, device="cpu", batch_size=4)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert sizes[:3] == [4, 2, 1]


def test_out_of_memory_at_batch_one_falls_back_to_the_cpu_and_puts_the_network_back(test_model, monkeypatch):
    """torch.cuda.OutOfMemoryError (torch 2.1+; torch.OutOfMemoryError exists only from 2.5) at batch 1:
    the rest of the run goes to the CPU with a warning, the result is unchanged, and the caller's
    network ends on the device it was given on."""
    hu = _volume(3)
    expected = denoise_volume(hu, test_model, device="cpu", batch_size=2)
    gpu = _GpuThatRunsOutOfMemory(test_model.module, fits=0)
    _fake_gpu(monkeypatch)
    with pytest.warns(UserWarning, match="continuing on the CPU"):
        out = denoise_volume(hu, gpu, device="cuda", batch_size=2, normalisation=test_model.normalisation)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert gpu.batches[:2] == [("meta", 2), ("meta", 1)]
    assert {device for device, _ in gpu.batches[2:]} == {"cpu"}
    assert gpu.where.type == "meta"


def test_other_runtime_errors_are_not_taken_for_out_of_memory(test_model):
    class Broken(torch.nn.Module):
        context, min_size = 1, 1

        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        denoise_volume(_volume(2), Broken(), device="cpu", normalisation=test_model.normalisation)


def test_a_bare_network_with_its_normalisation_gives_what_its_model_file_gives(test_model):
    """Training validation runs the generator being trained through the same engine."""
    generator, _ = make_test_generator()
    generator.train()
    hu = _volume(3)
    hu[:, :3] = -3024  # padding: passed through for the bare network too
    bare = denoise_volume(hu, generator, device="cpu", normalisation=HUNormalisation())
    np.testing.assert_allclose(bare, denoise_volume(hu, test_model, device="cpu"), atol=1e-4)
    assert np.all(bare[:, :3] == -3024)
    assert generator.training  # the caller's training flag is put back


def test_a_bare_network_needs_its_normalisation_and_context(test_model):
    generator, _ = make_test_generator()
    with pytest.raises(InputError, match="normalisation"):
        denoise_volume(_volume(1), generator, device="cpu")
    with pytest.raises(InputError, match="context"):
        Predictor.of(lambda x: x, HUNormalisation())
    assert Predictor.of(lambda x: x[:, 1:2], HUNormalisation(), context=1).context == 1


def test_hu_normalisation_round_trip_and_validation():
    norm = HUNormalisation((-1000.0, 1000.0), 40.0, 100.0)
    hu = np.array([-3000.0, -1000.0, 40.0, 540.0, 5000.0])
    np.testing.assert_allclose(norm.to_model(hu), [-10.4, -10.4, 0.0, 5.0, 9.6])
    np.testing.assert_allclose(norm.from_model(norm.to_model(hu[1:4])), hu[1:4], atol=1e-4)
    assert norm.outside(hu).tolist() == [True, True, False, False, True]
    assert HUNormalisation.from_dict(norm.to_dict()) == norm
    from LowDoseDenoiseLib.errors import ModelError

    for bad in ({"clip": [5, -5], "offset": 0, "scale": 1}, {"clip": [0, 1], "offset": 0, "scale": 0}, {"scale": 1}):
        with pytest.raises(ModelError, match="hu_normalisation"):
            HUNormalisation.from_dict(bad, "m.pt")


def test_strength_and_cancel_checks():
    assert check_strength("0.5") == 0.5 and check_strength(1) == 1.0
    for bad in (-0.01, 1.01, float("nan"), "strong", None):
        with pytest.raises(InputError, match="Strength"):
            check_strength(bad)
    event = threading.Event()
    assert not is_cancelled(None) and not is_cancelled(event) and not is_cancelled(lambda: False)
    event.set()
    assert is_cancelled(event) and is_cancelled(lambda: True)
    for bad in ("yes", True, 1, object()):
        with pytest.raises(InputError, match=r"cancel must be None, a function .* threading\.Event\(\); got"):
            is_cancelled(bad)


def test_a_wrong_cancel_value_is_refused_before_any_work():
    calls = []
    with pytest.raises(InputError, match=r"got 'yes' \(str\)"):
        # no model is loaded and no slice is run: the check comes first
        denoise_volume(_volume(2), "no-such-model", device="cpu", cancel="yes", progress=lambda *a: calls.append(a))
    assert calls == []


def test_device_list_offers_what_resolve_device_accepts():
    choices = list_devices()
    ids = [device for device, _ in choices]
    assert ids[:2] == ["auto", "cpu"] and len(set(ids)) == len(ids)
    assert all(label for _, label in choices)
    for device in ids:
        resolve_device(device)  # every listed device resolves here
    assert ("cuda:0" in ids) == torch.cuda.is_available()


def test_device_list_survives_a_broken_torch(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else object())
    assert [d for d, _ in list_devices()] == ["auto", "cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_out_of_memory_falls_back_to_the_cpu(test_model):
    """On a real GPU: a network that asks for more memory than the GPU has raises the real
    torch.cuda.OutOfMemoryError, and the engine finishes on the CPU."""
    class Greedy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.context, self.min_size = inner, 1, 1

        def forward(self, x):
            if x.is_cuda:
                torch.empty(int(4 * torch.cuda.get_device_properties(0).total_memory), dtype=torch.uint8,
                            device=x.device)
            return self.inner(x)

    hu = _volume(2)
    expected = denoise_volume(hu, test_model, device="cpu")
    with pytest.warns(UserWarning, match="continuing on the CPU"):
        out = denoise_volume(hu, Greedy(test_model.module), device="cuda", normalisation=test_model.normalisation)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_ct_range_check():
    assert ct_range_problem(np.array([0, 128, 255])) is not None
    assert ct_range_problem(np.array([3.0, 4.0, 5.0])) is not None
    assert "8-bit" in ct_range_problem(np.array([0, 128, 255]))
    assert "mask" in ct_range_problem(np.array([0, 1, 1, 0]))  # a 0/1 mask is named a mask, not a picture
    assert ct_range_problem(np.array([-1000, 40, 1200])) is None


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_out_in_the_input_type_holds_the_cast_result(test_model, dtype):
    """out=np.empty_like(input): the same numbers as casting the float32 result afterwards, in place."""
    hu = np.rint(_volume(5) * 3 - 200).astype(dtype)  # -> a few hundred HU of spread
    reference = denoise_volume(hu, test_model, device="cpu", batch_size=2)
    out = np.empty_like(hu)
    returned = denoise_volume(hu, test_model, device="cpu", batch_size=2, out=out)
    assert returned is out and out.dtype == dtype
    np.testing.assert_array_equal(out, cast_like(reference, dtype))
    zero = np.empty_like(hu)
    denoise_volume(hu, test_model, strength=0.0, out=zero)
    np.testing.assert_array_equal(zero, hu)
    one = np.empty_like(hu[0])
    denoise_volume(hu[0], test_model, device="cpu", out=one)  # a 2D slice writes into a 2D out
    np.testing.assert_array_equal(one, cast_like(denoise_volume(hu[0], test_model, device="cpu"), dtype))


def test_a_wrong_out_array_is_refused(test_model):
    hu = _volume(2)
    for bad, text in ((np.empty((2, 40, 35), np.float32), r"shape \(2, 40, 36\)"), ([0.0], "got list"),
                      (np.empty(hu.shape, bool), "real number type")):
        with pytest.raises(InputError, match=text):
            denoise_volume(hu, test_model, device="cpu", out=bad)


def test_a_non_finite_result_is_refused(test_model):
    hu = np.full((2, 40, 36), -1000.0)
    hu[:, 10:30, 10:30] = np.finfo(np.float64).max  # finite, but not in float32
    with pytest.raises(InputError, match="NaN or infinite"):
        denoise_volume(hu, test_model, device="cpu", out=np.empty((2, 40, 36), np.int16))
