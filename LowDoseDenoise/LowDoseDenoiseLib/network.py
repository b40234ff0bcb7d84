"""The denoising generator and the PatchGAN discriminator.

The generator follows "Unsupervised Denoising of Real Clinical Low Dose Liver CT with
Perceptual Attention Networks":

* a U-Net encoder–decoder extracts multi-scale features;
* attention gates fuse each skip connection with the decoder features: the gate,
  driven by the decoder, decides which of the skip's features pass;
* a stack of residual blocks at the bottleneck is the residual feature transform;
* a global residual: the network predicts the noise and returns ``centre − noise``,
  so the engine can scale the removed noise (strength) exactly;
* optionally (``noise_scales``), FFDNet-style noise-level conditioning: the generator measures
  the centre slice's own noise SD block by block, at one or more scales, and gives the maps to
  the network as extra input channels (:func:`noise_level_map`), so it sees the level and grain
  of the whole slice's noise, not only what its receptive field shows.  The map is made inside
  the network, so the engine, the model file's interface and the self-ensemble are unchanged.

It is 2.5D: ``2k+1`` neighbouring slices come in as channels and the centre slice
comes out.  For CPU speed the full-resolution stage is a 2×2 pixel unshuffle (as in
FFDNet): every convolution runs at half resolution or below, which costs a quarter of
the FLOPs of a classic U-Net of the same width with no loss in receptive field.  Any
in-plane size is handled by reflect padding to the network's multiple and cropping
back.  The last convolution starts at zero, so an untrained generator is the identity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURE",
    "AttentionGate",
    "ConvBlock",
    "Generator",
    "GeneratorConfig",
    "PatchDiscriminator",
    "ResidualBlock",
    "UpBlock",
    "count_flops",
    "count_parameters",
    "noise_level_map",
]


ARCHITECTURE = "pan-unet"


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the generator; stored in the model file's metadata."""

    context: int = 1  #: k: neighbouring slices on each side (2k+1 input channels)
    width: int = 16  #: channels at the first (half-resolution) level
    levels: int = 3  #: down-sampling steps after the pixel unshuffle
    res_blocks: int = 4  #: residual blocks at the bottleneck
    #: σ in pixels of a Gaussian low-pass whose part of the predicted noise is NOT removed (0 = off):
    #: the removed part's spectrum is the predicted noise's × (1 − G(f)), G(f) = exp(−2π²σ²f²), which
    #: vanishes at zero frequency and is small below ~1/(2πσ) cycles/pixel, so faint lesions of a few σ
    #: and more keep most of their contrast whatever the network predicts (and no mean HU is shifted);
    #: CT noise has little power there (ramp-shaped NPS), smooth-kernel noise more.
    keep_low_sigma: float = 0.0
    #: noise-level conditioning (0 = off): the number of scales (full resolution, 2×2-binned, 4×4-binned)
    #: at which the centre slice's noise SD is measured in blocks (:func:`noise_level_map`) and given to the
    #: head convolution as extra channels; a model trained without it gets zero weights for them
    #: (``training.trainer.widen_inputs``), so it starts as the unconditioned model
    noise_scales: int = 0

    @property
    def in_channels(self) -> int:
        return 2 * self.context + 1

    @property
    def multiple(self) -> int:
        """The in-plane size is padded to a multiple of this."""
        return 2 ** (self.levels + 1)

    @property
    def min_size(self) -> int:
        """Smallest in-plane size accepted (reflect padding needs at least this)."""
        return self.multiple

    def to_dict(self) -> Dict[str, Any]:
        values: Dict[str, Any] = {"name": ARCHITECTURE, **asdict(self)}
        for option in ("keep_low_sigma", "noise_scales"):
            if not values[option]:  # model files without the option stay byte-for-byte as before
                values.pop(option)
        return values

    @classmethod
    def from_dict(cls, data: Dict) -> GeneratorConfig:
        fields: Dict[str, Any] = {k: int(data[k]) for k in ("context", "width", "levels", "res_blocks") if k in data}
        if "keep_low_sigma" in data:
            fields["keep_low_sigma"] = float(data["keep_low_sigma"])
        if "noise_scales" in data:
            fields["noise_scales"] = int(data["noise_scales"])
        return cls(**fields)


#: Side in pixels (at full resolution) of the blocks in which :func:`noise_level_map` measures the noise.
NOISE_BLOCK = 16
#: 1 / (Φ⁻¹(0.75) · √2): the SD of Gaussian noise from the median |difference| of neighbouring pixels.
_MAD_TO_SD = 1.0 / (0.6744897501960817 * math.sqrt(2.0))
#: Added to the measured SD before the logarithm (model units): the floor of flat, clipped regions.
NOISE_FLOOR = 0.01


def noise_level_map(image: torch.Tensor, scales: int, block: int = NOISE_BLOCK, mad_to_sd: float = _MAD_TO_SD
                    ) -> torch.Tensor:
    """The noise SD of ``image`` (B, 1, H, W), block by block, at ``scales`` scales: (B, scales, h, w).

    At scale s the image is binned 2^s × 2^s (averaged), and in each block of ``block`` full-resolution
    pixels (cropped to the image when smaller) the SD is read from the median absolute difference of
    horizontally and vertically neighbouring pixels (robust to the few edges in a block; exact for white
    Gaussian noise, and an underestimate, by the noise's own correlation, for smooth kernels' noise, which
    is the texture the second scale shows: binning halves white noise, barely changes smooth noise).
    Blocks that do not fit in whole at the bottom and right are left out; the map has
    ⌊H/block⌋ × ⌊W/block⌋ blocks (at least 1 × 1).  Units are the image's.
    """
    maps: List[torch.Tensor] = []
    level = image
    for s in range(scales):
        if s > 0:
            level = F.avg_pool2d(level, 2)
        height, width = level.shape[-2], level.shape[-1]
        size = max(min(block >> s, height, width), 2)
        rows, cols = max(height // size, 1), max(width // size, 1)
        dx = F.pad(level[..., :, 1:] - level[..., :, :-1], [0, 1, 0, 0], mode="replicate")
        dy = F.pad(level[..., 1:, :] - level[..., :-1, :], [0, 0, 0, 1], mode="replicate")
        diffs = torch.cat([dx, dy], dim=1)[..., : rows * size, : cols * size].abs()
        batch = diffs.shape[0]
        blocks = diffs.reshape(batch, 2, rows, size, cols, size).permute(0, 2, 4, 1, 3, 5)
        median = torch.median(blocks.reshape(batch, rows, cols, 2 * size * size), dim=-1)[0]
        maps.append(median * mad_to_sd)
    return torch.stack(maps, dim=1)


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


class ConvBlock(nn.Module):
    """Two 3×3 convolutions with leaky ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv(cin, cout)
        self.conv2 = _conv(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), 0.1)
        return F.leaky_relu(self.conv2(x), 0.1)


class ResidualBlock(nn.Module):
    """Residual feature transform: x + conv(relu(conv(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) that fuses a skip with the decoder.

    ``skip`` features are weighted by ``sigmoid(psi(relu(Wx·skip + Wg·gate)))``: the
    decoder (gate) decides, per pixel, how much of the skip's detail passes.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int):
        super().__init__()
        self.wx = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.wg = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.psi(F.relu(self.wx(skip) + self.wg(gate))))
        return skip * alpha


class UpBlock(nn.Module):
    """Up-sample, gate the skip with attention, concatenate, two convolutions."""

    def __init__(self, cin: int, skip_channels: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, skip_channels, 2, stride=2)
        self.gate = AttentionGate(skip_channels, skip_channels, max(skip_channels // 2, 4))
        self.block = ConvBlock(2 * skip_channels, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.leaky_relu(self.up(x), 0.1)
        return self.block(torch.cat([self.gate(skip, up), up], dim=1))


class Generator(nn.Module):
    """U-Net + attention fusion + residual bottleneck; input (B, 2k+1, H, W) normalised HU.

    Returns the denoised centre slice (B, 1, H, W) in the same normalised units.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.context = config.context
        self.multiple = config.multiple
        self.min_size = config.min_size
        w = config.width
        widths: List[int] = [w * 2**i for i in range(config.levels + 1)]
        self.noise_scales = int(config.noise_scales)
        self.head = _conv(4 * config.in_channels + self.noise_scales, w)
        self.encoders = nn.ModuleList(
            [ConvBlock(w, w)] + [ConvBlock(widths[i], widths[i + 1]) for i in range(config.levels)]
        )
        self.bottleneck = nn.Sequential(*[ResidualBlock(widths[-1]) for _ in range(config.res_blocks)])
        self.decoders = nn.ModuleList(
            [UpBlock(widths[i + 1], widths[i], widths[i]) for i in reversed(range(config.levels))]
        )
        self.tail = nn.Conv2d(w, 4, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        if self.tail.bias is not None:
            nn.init.zeros_(self.tail.bias)
        self.keep_low_sigma = float(config.keep_low_sigma)
        radius = int(math.ceil(3.0 * self.keep_low_sigma)) if self.keep_low_sigma > 0 else 0
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (taps / max(self.keep_low_sigma, 1e-6)) ** 2) if radius else torch.ones(1)
        # not persistent: checkpoints and state dicts are the same with and without the option
        self.register_buffer("low_kernel", (kernel / kernel.sum()).reshape(1, 1, 1, -1), persistent=False)
        self.low_radius = radius

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The noise estimate for the centre slice, (B, 1, H, W), any H, W ≥ min_size."""
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (-height) % self.multiple
        pad_w = (-width) % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="reflect")
        features = F.pixel_unshuffle(x, 2)
        if self.noise_scales > 0:
            features = torch.cat([features, self.noise_features(x, features.shape[-2], features.shape[-1])], dim=1)
        h = F.leaky_relu(self.head(features), 0.1)
        skips: List[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = encoder(h)
            skips.append(h)
        h = self.bottleneck(skips.pop())
        for decoder in self.decoders:
            h = decoder(h, skips.pop())
        noise = F.pixel_shuffle(self.tail(h), 2)[:, :, :height, :width]
        if self.low_radius > 0:
            noise = noise - self._low_pass(noise)
        return noise

    def noise_features(self, x: torch.Tensor, height: int, width: int, floor: float = NOISE_FLOOR) -> torch.Tensor:
        """The head's noise-level channels: log(SD + floor) of the centre slice's :func:`noise_level_map`,
        bilinearly spread over the (height, width) half-resolution grid."""
        centre = x[:, self.context : self.context + 1]
        levels = noise_level_map(centre.float(), self.noise_scales)
        spread = F.interpolate(levels, size=[height, width], mode="bilinear", align_corners=False)
        return torch.log(spread + floor).to(x.dtype)

    def _low_pass(self, image: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur (σ = keep_low_sigma px) with edge replication, same size."""
        r = self.low_radius
        kernel = self.low_kernel.to(image.dtype)
        out = F.conv2d(F.pad(image, [r, r, 0, 0], mode="replicate"), kernel)
        return F.conv2d(F.pad(out, [0, 0, r, r], mode="replicate"), kernel.transpose(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, self.context : self.context + 1]
        return centre - self.predict_noise(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): a real/fake score per ~70-pixel patch."""

    def __init__(self, in_channels: int = 1, width: int = 32, layers: int = 3):
        super().__init__()
        modules: List[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            modules += [
                nn.utils.spectral_norm(nn.Conv2d(channels, out, 4, stride=stride, padding=1)),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        modules.append(nn.Conv2d(channels, 1, 4, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, shape: Tuple[int, int, int, int]) -> int:
    """Multiply-add FLOPs (2 per MAC) of convolutions for one forward pass of ``shape``.

    Counts Conv2d and ConvTranspose2d, which are over 99% of the work; activations,
    pooling and the attention sigmoid are ignored.
    """
    total = [0]

    def conv_hook(module: Any, inputs, output):
        out = output
        kernel = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            macs = inputs[0].numel() * module.out_channels * kernel // module.groups
        else:
            macs = out.numel() * (module.in_channels // module.groups) * kernel
        total[0] += 2 * macs

    hooks = [
        m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]
