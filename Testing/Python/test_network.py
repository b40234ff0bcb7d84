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
