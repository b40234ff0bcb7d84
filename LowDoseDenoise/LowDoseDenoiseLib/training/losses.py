"""Losses of the CycleGAN and of the paired ablation.

* least-squares adversarial (Mao et al. 2017): stable, no saturating log;
* cycle consistency and identity: L1, as in CycleGAN, optionally between Gaussian low-passes
  (:func:`gaussian_lowpass`, LossConfig.cycle_lowpass): a denoiser's cycle x → G(x) → F(G(x))
  cannot rebuild the exact noise G removed, so the full-band L1 punishes every HU of removed noise;
  compared below the noise band, the cycle keeps the anatomy and leaves the noise to the adversary;
* perceptual: L1 between feature maps of a fixed network (:mod:`.perceptual`);
* multi-scale L1: L1 between 2×2, 4×4 and 8×8 block means, which weighs the blotchy
  mid-frequency noise of CT (periods of 8–16 pixels) as much as the fine grain; per-pixel L1
  alone is dominated by the fine grain and left the blotches (measured, see the model card);
* transparency: how much of an added faint signal the network fails to pass (paired signal
  injection, the task phantoms' contrast measure, as a loss).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cycle_loss", "gaussian_lowpass", "highpass_l1", "identity_loss", "lsgan_discriminator", "lsgan_generator", "multiscale_l1", "perceptual_loss",
    "transparency_loss",
]


def lsgan_generator(fake_score: torch.Tensor) -> torch.Tensor:
    """Generator side: push D(fake) to 1."""
    return torch.mean((fake_score - 1.0) ** 2)


def lsgan_discriminator(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """Discriminator side: D(real) -> 1, D(fake) -> 0, halved as in CycleGAN."""
    return 0.5 * (torch.mean((real_score - 1.0) ** 2) + torch.mean(fake_score**2))


def gaussian_lowpass(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with σ in pixels and edge replication, same size;
    σ 0 returns ``image`` itself."""
    if sigma <= 0:
        return image
    radius = int(math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).reshape(1, 1, 1, -1).repeat(image.shape[1], 1, 1, 1)
    out = F.conv2d(F.pad(image, [radius, radius, 0, 0], mode="replicate"), kernel, groups=image.shape[1])
    return F.conv2d(F.pad(out, [0, 0, radius, radius], mode="replicate"), kernel.transpose(2, 3), groups=image.shape[1])


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor, lowpass: float = 0.0) -> torch.Tensor:
    """L1 between the two, or between their Gaussian low-passes of σ ``lowpass`` pixels."""
    return F.l1_loss(gaussian_lowpass(reconstructed, lowpass), gaussian_lowpass(original, lowpass))


def identity_loss(mapped: torch.Tensor, original: torch.Tensor, lowpass: float = 0.0) -> torch.Tensor:
    """L1 between the two, or between their Gaussian low-passes of σ ``lowpass`` pixels."""
    return F.l1_loss(gaussian_lowpass(mapped, lowpass), gaussian_lowpass(original, lowpass))


def perceptual_loss(features: Optional[nn.Module], output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the feature maps of output and target (0 without a network)."""
    if features is None:
        return output.new_zeros(())
    with torch.no_grad():
        target_features = features(target)
    output_features = features(output)
    losses = [F.l1_loss(a, b) for a, b in zip(output_features, target_features)]
    return torch.stack(losses).mean()


def multiscale_l1(output: torch.Tensor, target: torch.Tensor, factors=(2, 4, 8)) -> torch.Tensor:
    """Mean over ``factors`` of the L1 distance between ``factor``×``factor`` block means.

    Each level's gradient per pixel has the size of the plain L1's, but it points the same
    way over a whole block, so low-frequency errors are not drowned by the fine grain.
    """
    values = [F.l1_loss(F.avg_pool2d(output, f), F.avg_pool2d(target, f)) for f in factors if f <= output.shape[-1]]
    return torch.stack(values).mean() if values else output.new_zeros(())


def highpass_l1(output: torch.Tensor, target: torch.Tensor, sigma: float, fine_sigma: float = 0.0) -> torch.Tensor:
    """L1 of the error's high-pass part: e − lowpass(e), e = output − target, Gaussian σ in pixels.

    Adds weight to the band above about 1/(2πσ) cycles/pixel (σ 1.5: 0.1), where faint 4–12 mm lesions
    do not live and where the model left most of the noise that NLM removes (model card, "Where it
    fails"); the transparency term guards the band below.  ``fine_sigma`` > 0 bounds the band from
    above: lowpass(e, fine_sigma) − lowpass(e, sigma), a band-pass (σ 1.5 and 0.7 px: weight 0.43 / 0.51
    / 0.41 / 0.24 / 0.18 at 0.15 / 0.2 / 0.3 / 0.4 / 0.5 cycles/pixel along one axis), so the finest grain
    (a very sharp kernel's texture, which a noisy reference keeps) is left to the plain L1.
    """
    error = output - target
    return (gaussian_lowpass(error, fine_sigma) - gaussian_lowpass(error, sigma)).abs().mean()


def transparency_loss(passed: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Mean over samples with a signal of (1 − c)², c = ⟨passed, signal⟩ / ⟨signal, signal⟩.

    ``passed`` = G(x + s) − G(x) and ``signal`` = s, both (B, 1, H, W).  c is the benchmark's
    paired-injection contrast ratio (quality.taskphantoms.contrast_ratio): the least-squares
    gain of what passed on the signal, 1 = kept, 0 = erased.  Only the in-phase part counts: a
    per-pixel error relative to a faint signal's size would also punish every tiny nonlinear
    change elsewhere and pushed the network to the identity within 500 steps (measured).
    Samples whose signal is zero everywhere are left out; all zero gives 0.
    """
    energy = (signal * signal).sum(dim=(1, 2, 3))
    keep = energy > 0
    if not bool(keep.any()):
        return passed.new_zeros(())
    gain = (passed * signal).sum(dim=(1, 2, 3))[keep] / energy[keep]
    return ((1.0 - gain) ** 2).mean()
