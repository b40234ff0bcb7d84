"""Noise-level conditioning (issue 12, FFDNet-style): the generator's own noise map, how a model trained
without it is widened to it, and how the option travels through training configs and model files."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.network import NOISE_BLOCK, Generator, GeneratorConfig, noise_level_map
from LowDoseDenoiseLib.training.config import config_from_dict
from LowDoseDenoiseLib.training.trainer import load_generator_weights, widen_channels, widen_inputs


def _anatomy(size: int = 256) -> np.ndarray:
    """A piecewise-constant abdomen in model units (HU / 100): a body of fat in air, a liver, a kidney, a
    vessel and a bone, so a fifth of the blocks straddle an edge of 50 to 1000 HU."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    for cy, cx, ry, rx, value in [(0.0, 0.0, 0.42, 0.46, -100.0), (0.0, -0.12, 0.22, 0.2, 60.0),
                                  (0.05, 0.2, 0.1, 0.07, 30.0), (-0.1, 0.08, 0.04, 0.04, 200.0),
                                  (0.3, 0.0, 0.07, 0.1, 700.0)]:
        hu[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = value
    return hu / 100.0


@pytest.mark.parametrize("sd_hu", [5.0, 25.0, 80.0])
def test_a_field_of_known_sd_reads_back_within_ten_percent_on_anatomy(sd_hu):
    """White noise of known SD on the abdomen phantom's organs and edges: the median block reads it back
    within 10% (edges and bone sit in a few blocks; the median of the blocks inside the body is the level)."""
    clean = _anatomy()
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0.0, sd_hu / 100.0, clean.shape)
    body = ndimage.binary_erosion(clean > -5.0, iterations=NOISE_BLOCK)  # blocks wholly inside the body
    levels = noise_level_map(torch.from_numpy(noisy[None, None]).float(), 2)[0].numpy()
    assert levels.shape == (2, 256 // NOISE_BLOCK, 256 // NOISE_BLOCK)
    inside = body[NOISE_BLOCK // 2 :: NOISE_BLOCK, NOISE_BLOCK // 2 :: NOISE_BLOCK]
    fine = float(np.median(levels[0][inside])) * 100.0
    assert fine == pytest.approx(sd_hu, rel=0.10)
    # binning 2×2 halves white noise: the second scale reads about half
    assert float(np.median(levels[1][inside])) * 100.0 == pytest.approx(sd_hu / 2.0, rel=0.15)


def test_tissue_texture_adds_to_the_reading_and_never_hides_noise():
    """Fine tissue texture (a few HU of grain) on top of the noise: the map reads the image's fine-scale
    variation, more than the noise alone, never less.  It is what the network is trained to read, not a
    calibrated dose gauge."""
    rng = np.random.default_rng(4)
    clean = _anatomy()
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, clean.shape), 1.0)
    texture *= 0.05 / texture.std() * (clean > -0.5)  # 5 HU of grain in the soft tissue
    noise = rng.normal(0.0, 0.1, clean.shape)
    readings = [float(np.median(noise_level_map(torch.from_numpy((image + noise)[None, None]).float(), 1)[0, 0]))
                for image in (clean + texture, clean)]
    assert readings[0] > readings[1] > 0.09


def test_the_second_scale_tells_a_smooth_kernels_grain_from_white_noise():
    """Noise of one SD with coarse grain (a smooth kernel) and fine grain (white): the fine scale reads
    the fine grain's level and far less of the coarse grain's; the binned scale reads the coarse grain
    nearly whole.  The ratio of the two is the texture the network is given."""
    rng = np.random.default_rng(2)
    white = rng.normal(0.0, 1.0, (256, 256))
    coarse = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (256, 256)), 1.5)
    coarse /= coarse.std()
    ratios = []
    for field in (white, coarse):
        levels = noise_level_map(torch.from_numpy(field[None, None]).float(), 2)[0].numpy()
        ratios.append(float(np.median(levels[1]) / np.median(levels[0])))
    assert ratios[0] == pytest.approx(0.5, abs=0.05)
    assert ratios[1] > 1.5 * ratios[0]


def test_a_flat_image_reads_zero_and_small_images_still_get_a_map():
    flat = torch.full((1, 1, 40, 24), -10.24)  # air clipped at the window: no noise at all
    levels = noise_level_map(flat, 3)
    assert levels.shape == (1, 3, 2, 1) and float(levels.abs().max()) == 0.0
    tiny = noise_level_map(torch.randn(2, 1, 8, 8), 2)  # smaller than a block: one block per scale
    assert tiny.shape == (2, 2, 1, 1)


def _random_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    generator = Generator(config)
    for parameter in generator.parameters():  # a non-trivial network (the tail starts at zero)
        parameter.data.normal_(0.0, 0.2)
    return generator


def test_a_model_without_conditioning_widened_to_it_computes_the_same_and_then_can_learn(tmp_path):
    """init_generator from an unconditioned model: zero weights on the noise channels, so the conditioned
    network gives the source's output exactly, whatever the noise; a weight on them then changes it."""
    plain_cfg = GeneratorConfig(context=1, width=8, levels=2, res_blocks=1)
    plain = _random_generator(plain_cfg)
    path = _saved(plain, plain_cfg, tmp_path / "plain.pt")
    cond_cfg = GeneratorConfig(context=1, width=8, levels=2, res_blocks=1, noise_scales=2)
    conditioned = Generator(cond_cfg)
    load_generator_weights(conditioned, str(path), cond_cfg)
    assert conditioned.head.weight.shape[1] == 4 * 3 + 2
    x = torch.randn(2, 3, 48, 48) * 0.3
    with torch.no_grad():
        expected = plain(x)
        tolerance = 1e-5 * float(expected.abs().max())
        assert torch.allclose(conditioned(x), expected, rtol=1e-5, atol=tolerance)
        conditioned.head.weight[:, 12:].normal_(0.0, 0.5)  # now the measured noise level matters
        assert not torch.allclose(conditioned(x), expected, rtol=1e-3, atol=100 * tolerance)
    scripted = torch.jit.script(conditioned)
    with torch.no_grad():
        assert torch.allclose(scripted(x), conditioned(x), atol=1e-5 * float(expected.abs().max()))
    # the source may not have more scales than the run, nor a head that does not match its architecture
    with pytest.raises(InputError, match="noise-level scales"):
        load_generator_weights(Generator(plain_cfg), _saved(conditioned, cond_cfg, tmp_path / "conditioned.pt"), plain_cfg)
    with pytest.raises(InputError, match="input channels"):
        widen_inputs(plain.state_dict(), 1, 1, 1, 2)


def test_a_narrower_model_widened_computes_the_same_and_its_new_channels_can_learn(tmp_path):
    """init_generator from a narrower generator (model.width larger than the source's): the source's
    weights in the first channels, zero weights from every new channel, so the wide network gives the
    source's output exactly; the weights that read the new channels get gradients, and trained weights
    change the output."""
    narrow_cfg = GeneratorConfig(context=1, width=8, levels=2, res_blocks=1)
    narrow = _random_generator(narrow_cfg)
    wide_cfg = GeneratorConfig(context=1, width=12, levels=2, res_blocks=1)
    wide = Generator(wide_cfg)
    load_generator_weights(wide, _saved(narrow, narrow_cfg, tmp_path / "narrow.pt"), wide_cfg)
    assert wide.head.weight.shape[0] == 12 and sum(p.numel() for p in wide.parameters()) > 2 * sum(
        p.numel() for p in narrow.parameters())
    x = torch.randn(2, 3, 48, 48) * 0.3
    with torch.no_grad():
        expected = narrow(x)
        tolerance = 1e-5 * float(expected.abs().max())
        assert torch.allclose(wide(x), expected, rtol=1e-5, atol=tolerance)
    wide(x).square().mean().backward()
    # the zero weights that read the new channels are trained (and then the new channels' own weights)
    assert float(wide.tail.weight.grad[:, 8:].abs().sum()) > 0
    with torch.no_grad():
        for parameter in wide.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        assert not torch.allclose(wide(x), expected, rtol=1e-3, atol=100 * tolerance)
    # a wider source, or one of other levels, is refused with the reason
    with pytest.raises(InputError, match="larger width"):
        load_generator_weights(Generator(narrow_cfg), _saved(wide, wide_cfg, tmp_path / "wide.pt"), narrow_cfg)
    other = GeneratorConfig(context=1, width=8, levels=3, res_blocks=1)
    with pytest.raises(InputError, match="not a narrower pan-unet"):
        widen_channels(narrow.state_dict(), Generator(GeneratorConfig(context=1, width=12, levels=3, res_blocks=1)))
    with pytest.raises(InputError, match="architecture"):
        load_generator_weights(Generator(other), _saved(narrow, narrow_cfg, tmp_path / "narrow2.pt"), other)


def _saved(generator: Generator, config: GeneratorConfig, path) -> str:
    """A minimal training checkpoint (what load_generator_weights reads) of ``generator``."""
    torch.save({"g": generator.state_dict(), "architecture": {"name": "pan-unet", **config.to_dict()}}, path)
    return str(path)


def test_the_option_travels_through_model_files_and_is_absent_when_off(tmp_path):
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.modelfile import load_model, make_metadata, save_model

    assert "noise_scales" not in GeneratorConfig().to_dict()  # old model files unchanged
    config = GeneratorConfig(width=4, levels=2, res_blocks=1, noise_scales=2)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    generator = _random_generator(config).eval()
    with torch.no_grad():
        generator.tail.weight.mul_(0.01)
    metadata = make_metadata(config, name="conditioned", version="0.1", description="test", license="Apache-2.0",
                             training={})
    loaded = load_model(save_model(generator, metadata, tmp_path / "conditioned.pt"))
    assert loaded.metadata["architecture"]["noise_scales"] == 2
    hu = np.random.default_rng(0).normal(40.0, 20.0, (3, 40, 40)).astype(np.float32)
    ours = denoise_volume(hu, loaded, device="cpu")
    with torch.no_grad():
        x = torch.from_numpy(np.stack([hu[[0, 0, 1]], hu[[0, 1, 2]], hu[[1, 2, 2]]]) / 1000.0)
        direct = (generator(x) + generator(x.transpose(-1, -2)).transpose(-1, -2)) / 2.0
    np.testing.assert_allclose(ours, direct[:, 0].numpy() * 1000.0, atol=1e-2)


def test_training_configs_check_the_number_of_scales():
    series = {"normal_dose": [{"path": "x"}]}
    assert config_from_dict({"mode": "paired", "model": {"noise_scales": 2}, "data": series}).model.noise_scales == 2
    with pytest.raises(InputError, match="noise_scales"):
        config_from_dict({"mode": "paired", "model": {"noise_scales": 4}, "data": series})
