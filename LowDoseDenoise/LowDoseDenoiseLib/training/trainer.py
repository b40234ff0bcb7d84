"""The training loop: unpaired CycleGAN (the method) and the paired supervised ablation.

CycleGAN (Zhu et al. 2017) as the paper behind this project uses it:

* G: low dose -> normal dose, the product network (2k+1 slices in, centre out);
* F: normal dose -> low dose, the same architecture with context 0 (one slice);
* D_X, D_Y: PatchGAN discriminators on single slices of each domain;
* losses: least-squares adversarial, L1 cycle, L1 identity, perceptual on the cycle
  reconstructions; optionally (``loss.paired`` > 0, a *hybrid*) L1 + perceptual of G on
  the simulated low-dose samples, whose clean slice is known.

The cycle's normal-dose branch feeds G a copied-neighbour stack (F's one output slice
repeated 2k+1 times), so G also learns the single-slice case the engine meets at volume
ends.  All generator outputs of a step come from one forward of :class:`CycleGenerators`,
so DistributedDataParallel (``torchrun``) sees one forward per backward.

Reproducibility: the batch of step ``s`` is drawn from ``numpy.random.default_rng([seed,
s, rank])``, and a checkpoint holds models, optimisers, schedulers, torch RNG state and
the step, so a run stopped and resumed reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..engine import denoise_volume, resolve_device
from ..errors import InputError
from ..io.outputs import atomic_file
from ..modelfile import HUNormalisation
from ..network import ARCHITECTURE, Generator, GeneratorConfig, PatchDiscriminator
from ..quality import metrics
from ..quality.metrics import flat_tissue_roi
from ..quality.noise import estimate_noise_sd
from . import data as tdata
from . import losses
from .config import DISC_WINDOW_HU, SeriesConfig, TrainConfig, load_config

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "METRICS",
    "CycleGenerators",
    "Discriminators",
    "Trainer",
    "UnsafeCheckpointError",
    "Validation",
    "generator_config",
    "init_generator",
    "load_generator_weights",
    "normalisation",
    "plot_metrics",
    "read_checkpoint",
    "simulate_block",
    "train_from_config",
    "widen_channels",
    "widen_inputs",
]


CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- models


class CycleGenerators(nn.Module):
    """G and F with one forward for every generator output of a CycleGAN step."""

    def __init__(self, g: Generator, f: Generator, context: int):
        super().__init__()
        self.g = g
        self.f = f
        self.context = context

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                probe: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
        """fake_y, rec_x, fake_x, rec_y, id_y, id_x; with a transparency ``probe`` (added to x) also
        G(x + probe), in the same forward of G (one pass through a DistributedDataParallel wrapper)."""
        k = self.context
        batch = x.shape[0]
        xc, yc = x[:, k : k + 1], y[:, k : k + 1]
        f_out = self.f(torch.cat([yc, xc]))
        fake_x, id_x = f_out[:batch], f_out[batch:]
        g_in = [x, fake_x.repeat(1, 2 * k + 1, 1, 1), y] + ([x + probe] if probe is not None else [])
        g_out = self.g(torch.cat(g_in))
        fake_y, rec_y, id_y = g_out[:batch], g_out[batch : 2 * batch], g_out[2 * batch : 3 * batch]
        rec_x = self.f(fake_y)
        if probe is not None:
            return fake_y, rec_x, fake_x, rec_y, id_y, id_x, g_out[3 * batch :]
        return fake_y, rec_x, fake_x, rec_y, id_y, id_x


class Discriminators(nn.Module):
    """D_X (low dose) and D_Y (normal dose) with one forward for both.

    Inputs are model units; they are mapped back to HU and windowed (``window`` = centre,
    half-width in HU, to ±3; ModelConfig.disc_window) so the discriminators see soft-tissue
    noise at a useful scale.
    """

    def __init__(self, width: int, layers: int, hu_scale: float = 1000.0, hu_offset: float = 0.0,
                 window: Tuple[float, float] = DISC_WINDOW_HU):
        super().__init__()
        self.dx = PatchDiscriminator(1, width, layers)
        self.dy = PatchDiscriminator(1, width, layers)
        self.hu_scale = float(hu_scale)
        self.hu_offset = float(hu_offset)
        self.centre_hu = float(window[0])
        self.unit_hu = float(window[1]) / 3.0

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminators see of model-unit images: HU in the window, mapped to ±3 and clipped."""
        hu = x * self.hu_scale + self.hu_offset
        return torch.clamp((hu - self.centre_hu) / self.unit_hu, -3.0, 3.0)

    def forward(self, low: torch.Tensor, normal: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.dx(self.view(low)), self.dy(self.view(normal))


def init_generator(g: Generator) -> Generator:
    """He-normal init for leaky ReLU (slope 0.1); residual-branch outputs scaled by 0.1; the
    last convolution stays zero (an untrained generator is the identity)."""
    from ..network import ResidualBlock

    for module in g.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module is not g.tail:
            nn.init.kaiming_normal_(module.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in g.modules():
        if isinstance(module, ResidualBlock):
            module.conv2.weight.data.mul_(0.1)
    return g


def normalisation(config: TrainConfig) -> HUNormalisation:
    """The model file's hu_normalisation for this config."""
    d = config.data
    return HUNormalisation((float(d.hu_clip[0]), float(d.hu_clip[1])), float(d.hu_offset), float(d.hu_scale))


def generator_config(config: TrainConfig) -> GeneratorConfig:
    m = config.model
    return GeneratorConfig(context=config.data.context, width=m.width, levels=m.levels, res_blocks=m.res_blocks,
                           keep_low_sigma=m.keep_low_sigma, noise_scales=m.noise_scales)


# --------------------------------------------------------------------------- data


@dataclass
class Validation:
    """Held-out routine-dose block with fixed simulated noise; optional real low-dose block."""

    clean: np.ndarray  # (z, y, x) HU
    noisy: np.ndarray
    liver: np.ndarray  # bool
    body: np.ndarray
    real_low: Optional[np.ndarray] = None
    real_roi: Optional[np.ndarray] = None


def simulate_block(clean: np.ndarray, spacing, dose: float, seed: int) -> np.ndarray:
    """Low-dose version of a held-out block: simulate.simulate_low_dose (self-calibrated on the
    block's own noise, texture fitted to it)."""
    from ..quality.simulate import simulate_low_dose

    return np.asarray(simulate_low_dose(clean, spacing, dose, seed=seed), dtype=np.float32)


def _cache_key(parts) -> str:
    """A short hash of JSON-able parts: the name of a derived-data cache file."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _save_npz(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Write a cache file through the library's one atomic writer (a partial file never has the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    named: Dict[str, Any] = dict(arrays)  # numpy's stub types **kwds as if they could be allow_pickle
    with atomic_file(path) as handle:  # the temporary keeps the .npz suffix, so savez adds none
        np.savez(handle.path, **named)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Sets up data, models and optimisers from a :class:`TrainConfig` and runs steps."""

    def __init__(self, config: TrainConfig, run_folder: Optional[Path] = None, progress: bool = True):
        self.config = config
        self.slice_spacings: List[float] = []  # of the series read (for the model file's metadata)
        self.folder = Path(run_folder) if run_folder else config.run_folder()
        self.progress = progress
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        self.device = self._device()
        if config.run.threads > 0:
            torch.set_num_threads(config.run.threads)
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        self.amp = bool(config.run.amp and self.device.type == "cuda")
        self.step = 0
        self._setup_data()
        self._setup_models()

    # ---------------------------------------------------------------- setup
    def _device(self) -> torch.device:
        """run.device through the engine's resolver; under torchrun each rank takes its LOCAL_RANK GPU."""
        device = resolve_device(self.config.run.device)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", str(device.index or 0)))
            device = resolve_device(f"cuda:{local}")
            torch.cuda.set_device(device)
        return device

    def _series(self, entries: List[SeriesConfig]) -> List[Tuple[tdata.CTSeries, SeriesConfig]]:
        d = self.config.data
        root = tdata.shared_data_root(d.shared_data or None)
        cache = Path(d.cache_dir).expanduser() if d.cache_dir else tdata.DEFAULT_CACHE
        out = []
        for entry in entries:
            if not entry.path:
                raise InputError("A data series has an empty path; give a file or DICOM folder.")
            path = Path(entry.path).expanduser()
            path = path if path.is_absolute() else root / path
            labels = None
            if entry.labels:
                labels = Path(entry.labels).expanduser()
                labels = labels if labels.is_absolute() else root / labels
            series = tdata.load_series(path, entry.name or None, labels, cache)
            out.append((series, entry))
            self.slice_spacings.append(float(series.spacing[2]))
        return out

    def _setup_data(self) -> None:
        c = self.config
        d = c.data
        k = d.context
        patch = tdata.PatchConfig(
            d.patch, k, d.copy_neighbours, (d.pixel_size[0], d.pixel_size[1]), d.min_tissue, d.flips, d.pixel_size_log,
            (int(d.context_distance[0]), int(d.context_distance[1])),
        )
        normal = self._series(d.normal_dose)
        low = (
            self._series(d.low_dose)
            if (c.mode == "cyclegan" or "measured" in d.textures or d.recorrupt_low_dose > 0)
            else []
        )
        measured = None
        if "measured" in d.textures:
            if not low:
                raise InputError("Texture 'measured' needs a data.low_dose series to measure the noise of.")
            pieces = []
            for series, entry in low:
                train, _ = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)
                pieces.append(series.hu[train[:: max(1, len(train) // 40)]])
            measured = tdata.measured_texture_filter(np.concatenate(pieces))
        normal_sources, sim_sources, clean_slices = [], [], {}
        self.own_sd: Dict[str, float] = {}  #: each series' own noise SD (HU), for data.dose
        self.own_filters: Dict[str, np.ndarray] = {}  #: each series' measured noise texture ("own")
        self.validation: Optional[Validation] = None
        for series, entry in normal:
            train, held = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)
            if not train:
                raise InputError(f"Series {series.name}: the held-out block leaves no training slices.")
            if c.mode == "cyclegan" and d.simulated_low_dose > 0 and len(train) >= 2:
                half = len(train) // 2
                sim_part, normal_part = train[:half], train[half:]
            else:
                sim_part, normal_part = train, train
            # every stride-th slice is a centre; the others stay available as 2.5D context
            # (their noise comes from a centre's fields, shifted: see _fields)
            sim_centres, normal_centres = sim_part[:: entry.stride], normal_part[:: entry.stride]
            normal_sources.append(
                tdata.SliceSource(series.name, series.hu, series.pixel_size, normal_centres, normal_part, entry.weight)
            )
            sim_sources.append(
                tdata.SliceSource(series.name, series.hu, series.pixel_size, sim_centres, sim_part, entry.weight)
            )
            for i in sorted(set(sim_centres) | set(normal_centres)):
                clean_slices[f"{series.name}:{i}"] = (series.hu[i], series.spacing)
            self.own_sd[series.name] = tdata.series_noise_sd(series.hu, sorted(set(sim_centres) | set(normal_centres)))
            if "own" in d.textures:
                self.own_filters[series.name] = tdata.series_texture_filter(
                    series.hu[train[:: max(1, len(train) // 40)]]
                )
            if held and self.validation is None:
                liver = series.liver_mask()
                clean = series.hu[held]
                noisy = simulate_block(clean, series.spacing, d.validation_dose, c.seed + 99991)
                mask = liver[held] if liver is not None else flat_tissue_roi(clean)
                self.validation = Validation(clean, noisy, mask, clean > -500)
        if d.phantom_slices > 0:
            self._add_phantom(normal_sources, sim_sources, clean_slices)
        self.normal_sampler = tdata.PatchSampler(normal_sources, patch)
        self.sim_sampler = tdata.PatchSampler(sim_sources, patch)
        self.low_sampler = None
        if c.mode == "cyclegan" and low and d.simulated_low_dose < 1.0:
            low_sources = []
            for series, entry in low:
                train, _ = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)
                low_sources.append(
                    tdata.SliceSource(series.name, series.hu, series.pixel_size, train, train, entry.weight)
                )
            self.low_sampler = tdata.PatchSampler(low_sources, patch)
        for series, entry in low:
            if entry.holdout and self.validation is not None and self.validation.real_low is None:
                _, held = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)
                block = series.hu[held[len(held) // 2 - 2 : len(held) // 2 + 2]]
                self.validation.real_low = block
                self.validation.real_roi = flat_tissue_roi(block, entry.roi_box())
        textures = [t for t in d.textures if t != "measured" or measured is not None]
        cache = Path(d.cache_dir).expanduser() if d.cache_dir else tdata.DEFAULT_CACHE
        self.bank = self._noise_bank(clean_slices, textures, measured, cache)
        self.textures = textures
        self.own: Dict[str, List[np.ndarray]] = {}
        self.r2r_low_sampler: Optional[tdata.PatchSampler] = None
        if d.recorrupt > 0 or d.recorrupt_low_dose > 0:
            self._setup_recorrupt(normal, low, cache)

    def _setup_recorrupt(self, normal, low, cache: Path) -> None:
        """Own-noise fields of every slice R2R samples may touch, and the real low-dose R2R sampler."""
        d = self.config.data
        k = d.context
        blocks = []  # (series, slice indices needing a field)
        if d.recorrupt > 0:
            for series, entry in normal:
                train = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)[0]
                blocks.append((series, train[:: entry.stride]))
        if d.recorrupt_low_dose > 0:
            if not low:
                raise InputError("data.recorrupt_low_dose > 0 needs data.low_dose series (real low-dose CT).")
            sources = []
            for series, entry in low:
                train, _ = tdata.split_blocks(series.hu.shape[0], tuple(entry.holdout), entry.gap)
                centres = train[:: d.recorrupt_stride * entry.stride]
                needed = sorted({i for c in centres for i in tdata.context_indices(c, k, train)})
                blocks.append((series, needed))
                sources.append(tdata.SliceSource(series.name, series.hu, series.pixel_size, centres, train, entry.weight))
            self.r2r_low_sampler = tdata.PatchSampler(sources, self.normal_sampler.config)
        for series, indices in blocks:
            self.own.update(self._own_noise(series, indices, cache))

    def _own_noise(self, series: tdata.CTSeries, indices: List[int], cache: Path) -> Dict[str, List[np.ndarray]]:
        """Own-noise fields of ``indices`` of one series, through an .npz cache (rank 0 writes it)."""
        d = self.config.data
        block = series.hu[indices]
        fingerprint = [series.name, indices, list(block.shape), float(block[:, ::8, ::8].sum())]
        path = cache / f"ownnoise-{series.name}-{_cache_key(fingerprint + [d.own_noise_realisations, self.config.seed])}.npz"
        if d.recorrupt_noise == "measured":
            # stationary noise with the series' own measured texture and SD (FFT-cheap)
            if series.name not in self.own_filters:
                self.own_filters[series.name] = tdata.series_texture_filter(block[:: max(1, len(block) // 40)])
            sd = self.own_sd.get(series.name) or tdata.series_noise_sd(series.hu, indices)
            unit = tdata.stationary_noise(block.shape, self.own_filters[series.name], d.own_noise_realisations,
                                          self.config.seed + 31 + zlib.crc32(series.name.encode()) % 100003)
            fields = [(f.astype(np.float32) * sd).astype(np.float16) for f in unit]
        elif path.is_file():
            stored = np.load(path)
            fields = [stored[f"r{r}"] for r in range(d.own_noise_realisations)]
        else:
            fields = tdata.own_noise_fields(block, series.spacing, d.own_noise_realisations, self.config.seed + 31)
            if self.rank == 0:
                _save_npz(path, {f"r{r}": f for r, f in enumerate(fields)})
        return {f"{series.name}:{index}": [f[j] for f in fields] for j, index in enumerate(indices)}

    def _add_phantom(self, normal_sources, sim_sources, clean_slices) -> None:
        """data.phantom_slices noise-free phantom slices in the normal-dose and simulated domains."""
        from ..quality.phantom import make_phantom

        d = self.config.data
        hu = np.asarray(make_phantom(slices=d.phantom_slices, size=256, seed=self.config.seed).hu, dtype=np.float32)
        idx = list(range(hu.shape[0]))
        for sources in (normal_sources, sim_sources):
            sources.append(tdata.SliceSource("phantom", hu, 1.0, idx, idx, d.phantom_weight))
        for i in idx:
            clean_slices[f"phantom:{i}"] = (hu[i], (1.0, 1.0, 1.0))

    def _noise_bank(self, slices, textures, measured, cache: Path) -> tdata.NoiseBank:
        d = self.config.data
        key = _cache_key(
            [
                sorted(slices),
                textures,
                d.noise_realisations,
                self.config.seed,
                float(measured.sum()) if measured is not None else 0.0,
                True,  # was "simulator available" (always): kept so existing noise-bank caches stay valid
            ]
            + ([sorted((k, float(v.sum())) for k, v in self.own_filters.items())] if "own" in textures else [])
        )
        path = cache / f"noisebank-{key}.npz"
        if path.is_file():
            stored = np.load(path)
            bank = tdata.NoiseBank()
            for name in stored.files:
                slice_key, texture, _ = name.rsplit("|", 2)
                bank.fields.setdefault((slice_key, texture), []).append(stored[name])
            return bank
        bank = tdata.NoiseBank.build(slices, textures, d.noise_realisations, self.config.seed, measured,
                                     self.own_filters)
        # kept as float16 in memory, exactly as cached, so a fresh and a resumed run see the same noise
        bank.fields = {key: [f.astype(np.float16) for f in fs] for key, fs in bank.fields.items()}
        if self.rank == 0:
            _save_npz(path, {f"{k}|{t}|{r}": f for (k, t), fs in bank.fields.items() for r, f in enumerate(fs)})
        return bank

    def _setup_models(self) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self.gcfg = generator_config(c)
        self.norm = normalisation(c)
        self.g = Generator(self.gcfg)
        if c.model.init == "kaiming":
            init_generator(self.g)
        if c.model.init_generator:
            load_generator_weights(self.g, c.model.init_generator, self.gcfg)
        groups = [{"params": list(self.g.parameters()), "lr": c.optim.lr}]
        self.f: Optional[Generator] = None  #: CycleGAN only, like d, opt_d and sched_d
        self.d: Optional[Discriminators] = None
        if c.mode == "cyclegan":
            self.f = Generator(GeneratorConfig(0, c.model.f_width, c.model.levels, c.model.res_blocks))
            if c.model.init == "kaiming":
                init_generator(self.f)
            self.d = Discriminators(c.model.disc_width, c.model.disc_layers, self.norm.scale, self.norm.offset,
                                    (c.model.disc_window[0], c.model.disc_window[1]))
            groups.append({"params": list(self.f.parameters()), "lr": c.optim.lr_f or c.optim.lr})
        for module in (self.g, self.f, self.d):
            if module is not None:
                module.to(self.device)
        o = c.optim
        self.opt_g = torch.optim.Adam(groups, lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = (
            torch.optim.Adam(self.d.parameters(), lr=o.lr_disc, betas=(o.beta1, o.beta2))
            if self.d is not None
            else None
        )
        decay_start = int(o.steps * (1.0 - o.decay))

        def factor(step: int) -> float:
            if step < decay_start:
                return 1.0
            return max(0.0, 1.0 - (step - decay_start) / max(1, o.steps - decay_start))

        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor) if self.opt_d is not None else None
        self.features = self._features()
        if c.mode == "cyclegan":
            assert self.f is not None and self.d is not None  # built above for cyclegan
            self.cycle = CycleGenerators(self.g, self.f, c.data.context)
            self.cycle_run: nn.Module = self.cycle
            self.d_run: nn.Module = self.d
            if self.distributed:
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [self.device.index] if self.device.type == "cuda" else None
                self.cycle_run = DDP(self.cycle, device_ids=ids)
                self.d_run = DDP(self.d, device_ids=ids)
        else:
            self.g_run: nn.Module = self.g
            if self.distributed:
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [self.device.index] if self.device.type == "cuda" else None
                self.g_run = DDP(self.g, device_ids=ids)

    def _features(self) -> Optional[nn.Module]:
        p = self.config.perceptual
        if p.network == "none" or self.config.loss.perceptual <= 0:
            return None
        if p.network == "vgg16":
            from .perceptual import VGGFeatures

            return VGGFeatures(
                hu_window=p.hu_window, hu_scale=self.norm.scale, hu_offset=self.norm.offset, layers=p.layers
            ).to(self.device)
        from .perceptual import load_autoencoder_features, train_ct_autoencoder

        path = self.folder / "ct_autoencoder.pt"
        if not path.is_file():
            rng = np.random.default_rng(self.config.seed + 17)
            patches = np.stack(
                [
                    self._normalise(self.normal_sampler.stack(self.normal_sampler.draw_geometry(rng)))[
                        self.config.data.context : self.config.data.context + 1
                    ]
                    for _ in range(256)
                ]
            )
            self.folder.mkdir(parents=True, exist_ok=True)
            train_ct_autoencoder(torch.from_numpy(patches), p.autoencoder_steps, self.config.seed, path)
        return load_autoencoder_features(path).to(self.device)

    def _normalise(self, hu: np.ndarray) -> np.ndarray:
        return self.norm.to_model(hu)

    # ---------------------------------------------------------------- batches
    def _noisy(
        self, sampler: tdata.PatchSampler, rng: np.random.Generator, recorrupt: bool = False, add: bool = True
    ) -> Tuple[np.ndarray, np.ndarray]:
        """A low-dose stack (2k+1, P, P) HU and its target centre (1, P, P).

        ``add``: add simulated low-dose noise from the bank (the target is the slice itself).
        ``recorrupt``: also add α·z, z with the slice's own noise statistics, to the input and
        use slice − z/α as the target (R2R; see DataConfig.recorrupt).  Slices without own-noise
        fields (the noise-free phantom) keep the slice itself as the target.
        """
        d = self.config.data
        k = d.context
        geometry = sampler.draw_geometry(rng)
        clean = sampler.stack(geometry)
        source = sampler.sources[geometry["source"]]
        if d.inserts > 0 and rng.random() < d.inserts:
            clean = tdata.inject_details(
                clean, geometry["pixel_size"], rng, tuple(d.inserts_contrast), tuple(d.inserts_diameter),
                min_diameter_px=d.inserts_min_pixels, copies_alike=d.copied_inserts_alike,
            )
        noisy = clean
        if add:
            texture = self.textures[int(rng.integers(len(self.textures)))]
            if d.dose and source.name in self.own_sd:
                dose = math.exp(rng.uniform(math.log(d.dose[0]), math.log(d.dose[1])))
                sd = self.own_sd[source.name] * math.sqrt(1.0 / dose - 1.0)
                sd = min(max(sd, d.noise_sd[0]), d.noise_sd[1])
            else:
                sd = math.exp(rng.uniform(math.log(d.noise_sd[0]), math.log(d.noise_sd[1])))
            fields = self._fields(geometry, source.name, rng, self.bank.fields, texture)
            noisy = clean + self._place_noise(sampler, fields, geometry) * sd
        target = clean[k : k + 1]
        if recorrupt and f"{source.name}:{geometry['centre']}" in self.own:
            alpha = d.recorrupt_alpha
            z = sampler.apply(self._fields(geometry, source.name, rng, self.own), geometry)
            noisy = noisy + alpha * z
            target = target - z[k : k + 1] / alpha
        return noisy, target

    def _probe(self, noisy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A transparency probe for one sample (LossConfig.transparency): the HU difference of
        faint discs or one fine pattern added where the noisy stack's centre is soft tissue
        (0 everywhere when the patch has too little soft tissue; such samples are skipped)."""
        pattern = rng.random() < self.config.loss.transparency_patterns
        # the discs' size in pixels is what the network sees: drawn over the trained pixel range
        pixel = self.normal_sampler.draw_pixel_size(rng)
        # inject_details finds soft tissue by HU; on the noisy stack it would see speckle, so it
        # works on a smoothed copy (the difference it returns is the signal alone)
        smooth = ndimage.gaussian_filter(noisy.astype(np.float32), (0.0, 2.0, 2.0))
        with_signal = tdata.inject_details(
            smooth, pixel, rng, tuple(self.config.loss.transparency_contrast),
            tuple(self.config.loss.transparency_diameter),
            pattern_share=1.0 if pattern else 0.0, discs=not pattern,
            pattern_contrast_hu=tuple(self.config.loss.transparency_pattern_contrast),
            min_diameter_px=self.config.loss.transparency_min_pixels,
            copies_alike=self.config.data.copied_inserts_alike,
        )
        return (with_signal - smooth).astype(np.float32)

    def _place_noise(self, sampler: tdata.PatchSampler, fields: np.ndarray, geometry: Dict) -> np.ndarray:
        """Added noise on the patch grid (data.noise_on_patch_grid, see PatchSampler.apply_noise),
        or resampled with the image (the behaviour of the 1.0 model's training)."""
        if self.config.data.noise_on_patch_grid:
            return sampler.apply_noise(fields, geometry)
        return sampler.apply(fields, geometry)

    @staticmethod
    def _fields(geometry: Dict, name: str, rng: np.random.Generator, bank: Dict, texture: Optional[str] = None):
        """(2k+1, H, W) fields for the stack's slices: one random realisation and sign per slice
        (a copied-neighbour stack repeats the same field)."""
        chosen: Dict[int, np.ndarray] = {}
        out = []
        centre_key = f"{name}:{geometry['centre']}"
        for index in geometry["indices"]:
            if index not in chosen:
                key = f"{name}:{index}"
                lookup = (key, texture) if texture is not None else key
                if lookup in bank:
                    options = bank[lookup]
                    field = options[int(rng.integers(len(options)))].astype(np.float32)
                else:
                    # a context slice between centres (SeriesConfig.stride): the centre's field,
                    # circularly shifted far beyond the noise correlation length, so it is
                    # independent of the centre's noise but keeps its texture and level
                    options = bank[(centre_key, texture) if texture is not None else centre_key]
                    field = options[int(rng.integers(len(options)))].astype(np.float32)
                    shift = (int(rng.integers(24, field.shape[-2] - 24)), int(rng.integers(24, field.shape[-1] - 24)))
                    field = np.roll(field, shift, axis=(-2, -1))
                chosen[index] = field if rng.random() < 0.5 else -field
            out.append(chosen[index])
        return np.stack(out)

    def batch(self, step: int) -> Dict[str, torch.Tensor]:
        """The batch of ``step`` (depends only on seed, step and rank)."""
        c = self.config
        rng = np.random.default_rng([c.seed, step, self.rank])
        bs = c.optim.batch_size
        out: Dict[str, np.ndarray] = {}
        if c.mode == "paired":
            d = c.data
            pairs = []
            for _ in range(bs):
                if self.r2r_low_sampler is not None and rng.random() < d.recorrupt_low_dose:
                    pairs.append(self._noisy(self.r2r_low_sampler, rng, recorrupt=True, add=False))
                else:
                    r2r = d.recorrupt > 0 and rng.random() < d.recorrupt
                    pairs.append(self._noisy(self.normal_sampler, rng, recorrupt=r2r))
            out["x"] = np.stack([p[0] for p in pairs])
            out["target"] = np.stack([p[1] for p in pairs])
            if c.loss.transparency > 0:
                out["probe"] = np.stack([self._probe(p[0], rng) for p in pairs])
        else:
            xs, targets, simulated = [], [], []
            for _ in range(bs):
                if self.low_sampler is None or rng.random() < c.data.simulated_low_dose:
                    r2r = c.data.recorrupt > 0 and rng.random() < c.data.recorrupt
                    noisy, clean = self._noisy(self.sim_sampler, rng, recorrupt=r2r)
                    xs.append(noisy)
                    targets.append(clean)
                    simulated.append(1.0)
                else:
                    stack = self.low_sampler.stack(self.low_sampler.draw_geometry(rng))
                    xs.append(stack)
                    targets.append(stack[c.data.context : c.data.context + 1])
                    simulated.append(0.0)
            out["x"] = np.stack(xs)
            out["target"] = np.stack(targets)
            out["simulated"] = np.array(simulated, dtype=np.float32)
            out["y"] = np.stack([self.normal_sampler.stack(self.normal_sampler.draw_geometry(rng)) for _ in range(bs)])
            if c.loss.transparency > 0:  # drawn last: the same seed gives the same x and y as without
                out["probe"] = np.stack([self._probe(x, rng) for x in xs])
        tensors = {}
        for key, value in out.items():
            if key == "probe":  # an HU difference: scaled, not offset or clipped
                arr = (value / self.norm.scale).astype(np.float32)
            else:
                arr = self._normalise(value) if key != "simulated" else value
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        return tensors

    # ---------------------------------------------------------------- steps
    def _autocast(self):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.amp)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        c = self.config
        w = c.loss
        if c.mode == "paired":
            self.g.train()
            with self._autocast():
                out = self.g_run(batch["x"])
                l1 = F.l1_loss(out.float(), batch["target"])
                perc = losses.perceptual_loss(self.features, out.float(), batch["target"])
                multi = losses.multiscale_l1(out.float(), batch["target"]) if w.multiscale > 0 else torch.zeros(())
                total = w.l1 * l1 + w.perceptual * perc + w.multiscale * multi
                if w.highpass > 0:
                    high = losses.highpass_l1(out.float(), batch["target"], w.highpass_sigma, w.highpass_fine_sigma)
                    total = total + w.highpass * high
                if w.l2 > 0:
                    l2 = F.mse_loss(out.float(), batch["target"])
                    total = total + w.l2 * l2
                if "probe" in batch:
                    probe = batch["probe"]
                    passed = self.g_run(batch["x"] + probe).float() - out.float()
                    k = c.data.context
                    trans = losses.transparency_loss(passed, probe[:, k : k + 1])
                    total = total + w.transparency * trans
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            self._clip(self.g.parameters())
            self.opt_g.step()
            self.sched_g.step()
            values = {"loss": total, "l1": l1, "perceptual": perc}
            if w.multiscale > 0:
                values["multiscale"] = multi
            if w.highpass > 0:
                values["highpass"] = high
            if w.l2 > 0:
                values["l2"] = l2
            if "probe" in batch:
                values["transparency"] = trans
            return {key: float(value.detach()) for key, value in values.items()}
        assert self.f is not None and self.d is not None and self.opt_d is not None and self.sched_d is not None
        x, y = batch["x"], batch["y"]
        k = c.data.context
        xc, yc = x[:, k : k + 1], y[:, k : k + 1]
        self.cycle.train()
        for p in self.d.parameters():
            p.requires_grad_(False)
        with self._autocast():
            outputs = [t.float() for t in self.cycle_run(x, y, batch.get("probe"))]
            fake_y, rec_x, fake_x, rec_y, id_y, id_x = outputs[:6]
            score_x, score_y = self.d(fake_x, fake_y)
            adv = losses.lsgan_generator(score_x.float()) + losses.lsgan_generator(score_y.float())
            low = c.loss.cycle_lowpass  # 0: the full images (the paper's losses)
            cyc = losses.cycle_loss(rec_x, xc, low) + losses.cycle_loss(rec_y, yc, low)
            ide = losses.identity_loss(id_y, yc, low) + losses.identity_loss(id_x, xc, low)
            perc = losses.perceptual_loss(self.features, losses.gaussian_lowpass(torch.cat([rec_x, rec_y]), low),
                                          losses.gaussian_lowpass(torch.cat([xc, yc]), low))
            total = w.adversarial * adv + w.cycle * cyc + w.identity * ide + w.perceptual * perc
            trans = torch.zeros((), device=x.device)
            if "probe" in batch:  # G must pass faint signal added to its low-dose input (as in paired mode)
                trans = losses.transparency_loss(outputs[6] - fake_y, batch["probe"][:, k : k + 1])
                total = total + w.transparency * trans
            paired = torch.zeros((), device=x.device)
            if w.paired > 0 and float(batch["simulated"].sum()) > 0:
                sel = batch["simulated"] > 0.5
                paired = F.l1_loss(fake_y[sel], batch["target"][sel])
                if w.multiscale > 0:
                    paired = paired + w.multiscale * losses.multiscale_l1(fake_y[sel], batch["target"][sel])
                if self.features is not None:
                    paired = paired + w.perceptual * losses.perceptual_loss(
                        self.features, fake_y[sel], batch["target"][sel]
                    )
                total = total + w.paired * paired
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self._clip(list(self.g.parameters()) + list(self.f.parameters()))
        self.opt_g.step()
        self.sched_g.step()
        for p in self.d.parameters():
            p.requires_grad_(True)
        with self._autocast():
            real_x, real_y = self.d_run(torch.cat([xc, fake_x.detach()]), torch.cat([yc, fake_y.detach()]))
            n = x.shape[0]
            loss_d = losses.lsgan_discriminator(real_x[:n].float(), real_x[n:].float()) + losses.lsgan_discriminator(
                real_y[:n].float(), real_y[n:].float()
            )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self._clip(self.d.parameters())
        self.opt_d.step()
        self.sched_d.step()
        values = {
            "loss": total,
            "adversarial": adv,
            "cycle": cyc,
            "identity": ide,
            "perceptual": perc,
            "paired": paired,
            "discriminator": loss_d,
        }
        if "probe" in batch:
            values["transparency"] = trans
        return {key: float(value.detach()) for key, value in values.items()}

    def _clip(self, params) -> None:
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)

    # ---------------------------------------------------------------- validation
    def validate(self) -> Dict[str, float]:
        """Liver-window PSNR, liver noise SD and bias on the held-out block at the validation dose
        (all slices), the single-slice (copied-neighbour) PSNR, and on the real low-dose block the
        noise and HU change.  G runs through the shipped engine (:func:`~..engine.denoise_volume`:
        HU-window pass-through, OOM back-off) and every number comes from :mod:`..quality.metrics`
        and :mod:`..quality.noise`, so validation measures the program users run."""
        v = self.validation
        if v is None:
            return {}

        def run(hu: np.ndarray) -> np.ndarray:
            return denoise_volume(hu, self.g, device=self.device, normalisation=self.norm, ensemble=1)

        out = run(v.noisy)
        few = slice(0, min(2, len(v.noisy)))
        single = np.stack([run(s) for s in v.noisy[few]])  # one slice alone: the edge stack copies it
        result = {
            "val_psnr_input": metrics.psnr(v.noisy, v.clean, window="liver", mask=v.body),
            "val_psnr": metrics.psnr(out, v.clean, window="liver", mask=v.body),
            "val_psnr_single": metrics.psnr(single, v.clean[few], window="liver", mask=v.body[few]),
            "val_psnr_single_input": metrics.psnr(v.noisy[few], v.clean[few], window="liver", mask=v.body[few]),
            "val_noise_input": estimate_noise_sd(v.noisy, mask=v.liver),
            "val_noise": estimate_noise_sd(out, mask=v.liver),
            "val_bias": metrics.bias(out, v.clean, v.liver),
        }
        if v.real_low is not None and v.real_roi is not None and v.real_roi.any():
            real_out = run(v.real_low)
            result["real_noise_input"] = estimate_noise_sd(v.real_low, mask=v.real_roi)
            result["real_noise"] = estimate_noise_sd(real_out, mask=v.real_roi)
            result["real_bias"] = metrics.bias(real_out, v.real_low, v.real_roi)
        return result

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> Dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": {**self.gcfg.to_dict(), "name": ARCHITECTURE},
            "mode": self.config.mode,
            "config": self.config.to_dict(),
            "step": self.step,
            "g": self.g.state_dict(),
            "f": self.f.state_dict() if self.f is not None else None,
            "d": self.d.state_dict() if self.d is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict() if self.sched_d is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "elapsed_s": self.elapsed,
            # the neighbour distances (mm) the 2.5D context saw: the series' slice spacings × data.context_distance
            "slice_spacing_mm": self.slice_spacing_range(),
        }

    def slice_spacing_range(self) -> Optional[List[float]]:
        """[min, max] distance in mm between the context slices seen in training (None: no series read)."""
        if not self.slice_spacings:
            return None
        near, far = self.config.data.context_distance
        return [round(min(self.slice_spacings) * near, 3), round(max(self.slice_spacings) * far, 3)]

    def save(self, path: Optional[Path] = None) -> Path:
        path = path or self.folder / CHECKPOINT
        if self.rank != 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            torch.save(self.state(), handle.path)
        return path

    def load(self, path: Path) -> None:
        state = read_checkpoint(path)
        arch = state.get("architecture", {})
        expected = {**self.gcfg.to_dict(), "name": ARCHITECTURE}
        if arch != expected or state.get("mode") != self.config.mode:
            raise InputError(
                f"Checkpoint {path} is for {state.get('mode')} {arch}, but the config asks for "
                f"{self.config.mode} {expected}. Use another run folder (name/run_dir) or resume=False."
            )
        try:
            self.g.load_state_dict(state["g"])
            if self.f is not None:  # cyclegan: F, the discriminators and their optimiser
                assert self.d is not None and self.opt_d is not None and self.sched_d is not None
                self.f.load_state_dict(state["f"])
                self.d.load_state_dict(state["d"])
                self.opt_d.load_state_dict(state["opt_d"])
                self.sched_d.load_state_dict(state["sched_d"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.sched_g.load_state_dict(state["sched_g"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise InputError(f"Checkpoint {path} does not match the configured models ({error}).") from None
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------- loop
    elapsed = 0.0

    def fit(self, steps: Optional[int] = None) -> None:
        """Train up to ``steps`` (default: optim.steps), with logging, validation and checkpoints."""
        c = self.config
        total = min(steps or c.optim.steps, c.optim.steps)
        self.folder.mkdir(parents=True, exist_ok=True)
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.step, desc=c.name, unit="step", dynamic_ncols=True)
        start = time.time() - self.elapsed
        sums: Dict[str, float] = {}
        count = 0
        if self.step >= total and self.slice_spacings:
            # a finished run resumed: its checkpoint gets what this trainer records now (e.g. the
            # slice spacings, which checkpoints written before 2026-12-02 lack), weights unchanged
            self.save()
        while self.step < total:
            values = self.train_step(self.batch(self.step))
            self.step += 1
            self.elapsed = time.time() - start
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            last = self.step == total
            if self.step % c.run.log_every == 0 or last:
                row = {k: v / count for k, v in sums.items()}
                if (c.run.validate_every and self.step % c.run.validate_every == 0) or last:
                    row.update(self.validate())
                self._log(row)
                sums, count = {}, 0
            out_of_time = c.run.max_minutes > 0 and (time.time() - start) / 60.0 >= c.run.max_minutes
            if self.step % c.run.checkpoint_every == 0 or last or out_of_time:
                self.save()
            if out_of_time:
                break
        if bar is not None:
            bar.close()
        if self.rank == 0:
            plot_metrics(self.folder / METRICS, self.folder / "training.png")

    def _log(self, row: Dict[str, float]) -> None:
        if self.rank != 0:
            return
        path = self.folder / METRICS
        row = {"step": self.step, "time_s": round(self.elapsed, 1), "lr": self.sched_g.get_last_lr()[0], **row}
        rows = []
        if path.is_file():
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) < self.step]
        rows.append({k: str(v) for k, v in row.items()})
        fields: List[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        with atomic_file(path) as target, open(target.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class UnsafeCheckpointError(InputError):
    """A checkpoint that holds pickled Python objects besides tensors and plain values: never loaded."""


def read_checkpoint(path) -> Dict:
    """Load a training checkpoint; InputError for a missing, corrupt, foreign or unsafe file.

    Loaded with ``weights_only=True``: only tensors and plain values (dict, list, str,
    numbers) are unpickled, so a crafted file cannot run code.  Checkpoints store their
    config and counters as plain types for this reason.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} not found; give the checkpoint.pt of a training run.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch says "Weights only load failed" for a blocked global (a real payload) and for bytes that are
        # no pickle at all ("Unsupported operand"): only the first is an unsafe checkpoint.
        if ("weights_only" not in str(error) and "Weights only" not in str(error)) or "Unsupported operand" in str(error):
            raise InputError(f"Checkpoint {path} is corrupt or not a checkpoint (UnpicklingError); resume from an "
                             "earlier copy or start a new run (resume=False).") from None
        raise UnsafeCheckpointError(
            f"Checkpoint {path} holds Python objects other than tensors and plain values, so it was not loaded "
            "(loading it could run arbitrary code). Use a checkpoint written by LowDoseDenoise's trainer; if this "
            "one came from a source you do not trust, delete it."
        ) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise InputError(
            f"Checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}); "
            "resume from an earlier copy or start a new run (resume=False)."
        ) from None
    if not isinstance(state, dict) or "g" not in state or "architecture" not in state:
        raise InputError(f"{path} is not a LowDoseDenoise training checkpoint (no generator state).")
    return state


def load_generator_weights(g: Generator, source: str, gcfg: GeneratorConfig) -> None:
    """Initialise G from a training checkpoint (its G) or an exported model file."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(
            f"model.init_generator {path} not found: this config continues an earlier stage's run. "
            "Train that stage first (scripts/train_shipped.sh runs them in order) or set model.init_generator: ''."
        )
    try:
        state = read_checkpoint(path)
        arch = state["architecture"]
        weights = state["g"]
    except UnsafeCheckpointError:
        raise
    except InputError:
        from ..modelfile import load_model

        loaded = load_model(path)
        arch = loaded.metadata["architecture"]
        # a TorchScript file's state also lists the non-persistent pass-through kernel (a fixed filter
        # made from keep_low_sigma, not a weight): the new generator makes its own
        weights = {k: v for k, v in loaded.module.state_dict().items() if not k.endswith("low_kernel")}
    # the weights' shapes must match; keep_low_sigma is a fixed filter without weights, so a run may
    # add (or change) it on top of a generator trained without it; a wider context and more noise-level
    # scales may be added too (zero weights: the run starts from what the source computed)
    widened = ("keep_low_sigma", "context", "noise_scales", "width")
    expected = {k: v for k, v in gcfg.to_dict().items() if k not in widened}
    source_context = int(arch.get("context", -1))
    source_scales = int(arch.get("noise_scales", 0))
    source_width = int(arch.get("width", -1))
    if (any(arch.get(key) != value for key, value in expected.items()) or not 0 <= source_context <= gcfg.context
            or not 0 <= source_scales <= gcfg.noise_scales or not 0 < source_width <= gcfg.width):
        raise InputError(
            f"model.init_generator {path} has architecture {arch}; this run needs {gcfg.to_dict()} "
            "(the same shape, with the same or a wider context, the same or more noise-level scales and the "
            "same or a larger width)."
        )
    if source_context < gcfg.context or source_scales < gcfg.noise_scales:
        weights = widen_inputs(weights, source_context, gcfg.context, source_scales, gcfg.noise_scales)
    if source_width < gcfg.width:
        weights = widen_channels(weights, g)
    g.load_state_dict(weights)


def widen_inputs(weights: Dict[str, Any], old: int, new: int, old_scales: int = 0, new_scales: int = 0
                 ) -> Dict[str, Any]:
    """A generator state for ``new`` context slices each side and ``new_scales`` noise-level channels that
    computes what ``weights`` (``old``, ``old_scales``) did: the head convolution's weights for the added
    outer slices and the added noise-level channels are zero, so the network starts as the narrower one
    and learns to use the new inputs."""
    out = dict(weights)
    head = weights["head.weight"]  # (w, 4·(2·old+1) + old_scales, 3, 3): each slice's 4 phases together,
    slices = 4 * (2 * old + 1)  # then the noise-level channels
    if head.shape[1] != slices + old_scales:
        raise InputError(f"The generator's head has {head.shape[1]} input channels, not the {slices + old_scales} "
                         f"of context {old} with {old_scales} noise-level scales.")
    wide = torch.zeros((head.shape[0], 4 * (2 * new + 1) + new_scales) + tuple(head.shape[2:]), dtype=head.dtype)
    start = 4 * (new - old)
    wide[:, start : start + slices] = head[:, :slices]
    wide[:, 4 * (2 * new + 1) : 4 * (2 * new + 1) + old_scales] = head[:, slices:]
    out["head.weight"] = wide
    return out


def widen_channels(weights: Dict[str, Any], target: Generator) -> Dict[str, Any]:
    """A state for ``target`` (a wider generator, freshly initialised) that computes what ``weights``
    (a narrower one of the same levels and blocks) did: function-preserving widening (Net2WiderNet,
    Chen et al. 2016, with zero instead of split outgoing weights).

    Every convolution keeps the source's weights in its first channels.  A channel the source did not
    have gets the target's random incoming weights, and every layer that reads it gets a zero weight
    for it, so the new channels compute something but change nothing until training gives them a
    use.  The decoders' first convolution reads a concatenation (the gated skip, then the
    up-sampled features): the source's two halves go to the start of each of the target's halves."""
    out = dict(weights)
    for name, module in target.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        key = f"{name}.weight"
        if key not in weights:
            raise InputError(f"The source generator has no {key}; it is not a narrower pan-unet of the same levels.")
        small, fresh = weights[key], module.weight.detach().clone()
        # Conv2d weights are (out, in, kh, kw); ConvTranspose2d weights (in, out, kh, kw)
        o_dim, i_dim = (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)
        n_out = small.shape[o_dim]
        halves = name.startswith("decoders.") and name.endswith(".block.conv1")
        if halves:
            old_half, new_half = small.shape[i_dim] // 2, fresh.shape[i_dim] // 2
            sources = [(0, 0, old_half), (old_half, new_half, old_half)]
        else:
            sources = [(0, 0, small.shape[i_dim])]
        # the source's outputs: its weights on the inputs it had, zero on the new inputs; the new outputs
        # keep their random weights on every input
        wide = fresh.clone()
        wide.narrow(o_dim, 0, n_out).zero_()
        for src, dst, count in sources:
            wide.narrow(o_dim, 0, n_out).narrow(i_dim, dst, count).copy_(
                small.narrow(i_dim, src, count).to(wide.dtype))
        out[key] = wide
        if module.bias is not None:
            bias = module.bias.detach().clone()
            bias[:n_out] = weights[f"{name}.bias"].to(bias.dtype)
            out[f"{name}.bias"] = bias
    return out


def plot_metrics(csv_path: Path, png: Path) -> Optional[Path]:
    """Loss curves and held-out PSNR/noise over steps."""
    if not csv_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None

    def series(key):
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
        return list(zip(*pts)) if pts else ([], [])

    loss_keys = [
        k
        for k in ("loss", "l1", "l2", "perceptual", "multiscale", "highpass", "transparency", "adversarial", "cycle", "identity", "paired",
                  "discriminator")
        if k in rows[-1]
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in loss_keys:
        xs, ys = series(key)
        axes[0].plot(xs, ys, label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=7)
    for key, label in (
        ("val_psnr", "model"),
        ("val_psnr_input", "low-dose input"),
        ("val_psnr_single", "single slice"),
    ):
        xs, ys = series(key)
        axes[1].plot(xs, ys, "o-", label=label)
    axes[1].set_title("held-out liver-window PSNR (dB)")
    axes[1].legend(fontsize=7)
    for key, label in (
        ("val_noise", "simulated: model"),
        ("val_noise_input", "simulated: input"),
        ("real_noise", "real low dose: model"),
        ("real_noise_input", "real low dose: input"),
    ):
        xs, ys = series(key)
        axes[2].plot(xs, ys, "o-", label=label)
    axes[2].set_title("liver noise SD (HU)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png


def train_from_config(config_path: str, resume: bool = True, progress: bool = True,
                      seed: Optional[int] = None) -> Path:
    """Train from a YAML/TOML config; resumes the run folder's checkpoint when there is one.

    ``seed``: run the config with this seed instead of its own, in its own run folder (the config's
    name or run_dir with ``-seed<N>`` appended), so runs of one recipe that differ only in their seed
    sit side by side (``lowdose-denoise export --average`` averages them).

    Returns the run folder (checkpoint.pt, metrics.csv, training.png, config.json).
    """
    config = load_config(config_path)
    if seed is not None and seed != config.seed:
        config.seed = int(seed)
        config.name = f"{config.name}-seed{seed}"
        if config.run_dir:
            config.run_dir = f"{config.run_dir.rstrip('/')}-seed{seed}"
    trainer = Trainer(config, progress=progress)
    checkpoint = trainer.folder / CHECKPOINT
    if resume and checkpoint.exists():
        trainer.load(checkpoint)
    elif not resume and checkpoint.exists() and trainer.rank == 0:
        checkpoint.unlink()
        (trainer.folder / METRICS).unlink(missing_ok=True)
    if trainer.rank == 0:
        trainer.folder.mkdir(parents=True, exist_ok=True)
        (trainer.folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    trainer.fit()
    if trainer.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return trainer.folder
