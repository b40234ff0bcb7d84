"""The generator's shapes, its identity start, and its cost (FLOPs, parameters)."""

import pytest
import torch
from torch import nn

from LowDoseDenoiseLib.network import (
    Generator,
    GeneratorConfig,
    PatchDiscriminator,
    count_flops,
    count_parameters,
)


@pytest.mark.parametrize("size", [(16, 16), (37, 53), (64, 100)])
@pytest.mark.parametrize("context", [0, 1, 2])
def test_generator_returns_centre_slice_of_any_size(size, context):
    config = GeneratorConfig(context=context, width=4, levels=3, res_blocks=1)
    generator = Generator(config).eval()
    x = torch.randn(2, 2 * context + 1, *size)
    with torch.no_grad():
        out = generator(x)
    assert out.shape == (2, 1, *size)


def test_untrained_generator_is_identity_and_learns_from_there():
    generator = Generator(GeneratorConfig(width=4, res_blocks=1))
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(generator(x), x[:, 1:2])
    generator.tail.weight.data.normal_(0, 0.1)
    with torch.no_grad():
        assert not torch.allclose(generator(x), x[:, 1:2])


def test_padding_does_not_leak_between_images_of_a_batch():
    generator = Generator(GeneratorConfig(width=4, res_blocks=1)).eval()
    generator.tail.weight.data.normal_(0, 0.1)
    a, b = torch.randn(1, 3, 40, 44), torch.randn(1, 3, 40, 44)
    with torch.no_grad():
        together = generator(torch.cat([a, b]))
        alone = generator(a)
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-5)


def test_default_width_meets_the_512_slice_flop_budget():
    config = GeneratorConfig()
    generator = Generator(config)
    flops = count_flops(generator, (1, config.in_channels, 512, 512))
    assert 3e9 < flops <= 25e9, f"{flops / 1e9:.1f} GFLOP per 512x512 slice"
    params = count_parameters(generator)
    assert 0.3e6 < params < 4e6  # a few MB as float32
    assert config.min_size == config.multiple == 16


def test_flop_counter_matches_a_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 10, 12)) == 2 * 8 * 10 * 12 * 3 * 9
    up = nn.ConvTranspose2d(8, 4, 2, stride=2)
    assert count_flops(up, (1, 8, 5, 6)) == 2 * 8 * 5 * 6 * 4 * 4


def test_attention_gates_are_part_of_every_decoder_level():
    config = GeneratorConfig(width=4, levels=3, res_blocks=2)
    generator = Generator(config)
    assert len(generator.decoders) == 3
    assert all(hasattr(d, "gate") for d in generator.decoders)
    assert len(generator.bottleneck) == 2


def test_generator_scripts_for_torchscript():
    generator = Generator(GeneratorConfig(width=4, res_blocks=1)).eval()
    scripted = torch.jit.script(generator)
    x = torch.randn(1, 3, 33, 35)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), generator(x))


def test_patch_discriminator_scores_patches():
    disc = PatchDiscriminator(in_channels=1, width=8, layers=3)
    out = disc(torch.randn(2, 1, 64, 64))
    assert out.shape[0] == 2 and out.shape[1] == 1
    assert out.shape[2] > 1 and out.shape[3] > 1  # a grid of patch scores, not one number


def test_keep_low_sigma_never_removes_a_flat_offset_and_keeps_weights_compatible():
    """With the low-frequency pass-through a generator that predicts a constant 'noise' removes
    nothing (the removed part has no zero-frequency content); without it, it shifts the image."""
    import torch

    from LowDoseDenoiseLib.network import Generator, GeneratorConfig

    plain = Generator(GeneratorConfig(width=4, levels=2, res_blocks=1))
    kept = Generator(GeneratorConfig(width=4, levels=2, res_blocks=1, keep_low_sigma=2.5))
    assert set(plain.state_dict()) == set(kept.state_dict())  # same checkpoints either way
    with torch.no_grad():
        plain.tail.bias.fill_(0.3)  # predicted noise = 0.3 model units everywhere
    kept.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), x[:, 1:2] - 0.3, atol=1e-5)
        assert torch.allclose(kept(x), x[:, 1:2], atol=1e-5)
        # fine structure is still removed: a checkerboard 'noise' passes the high-pass almost whole
        checker = ((torch.arange(48)[:, None] + torch.arange(64)[None, :]) % 2).float()[None, None] - 0.5
        assert float((checker - kept._low_pass(checker)).abs().mean()) > 0.45
    scripted = torch.jit.script(kept)
    assert torch.allclose(scripted(x), kept(x), atol=1e-6)
    config = GeneratorConfig.from_dict(kept_cfg := GeneratorConfig(keep_low_sigma=2.5).to_dict())
    assert config.keep_low_sigma == 2.5 and "keep_low_sigma" in kept_cfg
    assert "keep_low_sigma" not in GeneratorConfig().to_dict()  # old model files unchanged
