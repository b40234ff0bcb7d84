"""Training configuration: dataclasses with documented defaults, read from YAML or TOML.

Every field has a default except the data: ``data.normal_dose`` (and for CycleGAN or the
real-low-dose options ``data.low_dose``) must list the series, as the shipped configs in
``training/configs/`` do; the library defaults name no data set.  Unknown keys are refused
so that a typo never silently falls back to a default.  Relative data paths are resolved against ``data.shared_data`` (default:
$LOWDOSE_SHARED_DATA, else ``../shared/data`` beside the repository).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InputError

__all__ = [
    "DEFAULT_RUNS",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PAIRED_TERMS",
    "PerceptualConfig",
    "RunConfig",
    "SeriesConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "validate",
]


DEFAULT_RUNS = Path.home() / ".cache" / "lowdose-denoise" / "runs"


@dataclass
class SeriesConfig:
    """One CT series (volume file or DICOM folder) and its held-out block."""

    path: str = ""  #: file or DICOM folder; relative paths are under data.shared_data
    name: str = ""  #: short name (cache key, logs); default: the folder name
    labels: str = ""  #: optional label map (liver = label 5) resampled onto the CT
    holdout: List[int] = field(default_factory=list)  #: [start, stop) held-out slices; [] = none
    gap: int = 2  #: slices left out on each side of the held-out block
    weight: float = 1.0  #: sampling weight relative to other series (per slice)
    #: use every n-th training slice as a patch centre (neighbours stay available as 2.5D
    #: context); bounds the noise-bank cost of long series
    stride: int = 1
    #: [y0, y1, x0, x1] rows and columns of the box (e.g. the liver) in which a real low-dose
    #: series' held-out block is validated (flat tissue inside it); [] = the whole slice
    roi: List[int] = field(default_factory=list)

    def roi_box(self) -> Optional[Tuple[int, int, int, int]]:
        """``roi`` as the (y0, y1, x0, x1) box :func:`~..quality.metrics.flat_tissue_roi` takes; None = whole slice."""
        if not self.roi:
            return None
        y0, y1, x0, x1 = self.roi
        return (int(y0), int(y1), int(x0), int(x1))


@dataclass
class DataConfig:
    """Where the data is and how patches and noise are drawn."""

    shared_data: str = ""  #: root of relative paths; "" = $LOWDOSE_SHARED_DATA or ../shared/data
    cache_dir: str = ""  #: decoded-series cache; "" = ~/.cache/lowdose-denoise/data
    normal_dose: List[SeriesConfig] = field(default_factory=list)  #: routine-dose series (at least one)
    low_dose: List[SeriesConfig] = field(default_factory=list)  #: real low-dose series (CycleGAN, R2R, "measured")
    phantom_slices: int = 0  #: synthetic phantom slices added to the normal-dose domain (needs phantom.py)
    phantom_weight: float = 0.5  #: per-slice sampling weight of phantom slices
    simulated_low_dose: float = 0.5  #: CycleGAN: share of low-dose samples simulated from normal dose
    textures: List[str] = field(
        default_factory=lambda: ["sharp", "standard", "smooth", "very-smooth", "measured"]
    )  #: noise textures (apodisations); "measured" = NPS of the real low-dose series
    noise_realisations: int = 2  #: precomputed unit-noise fields per slice and texture
    noise_sd: List[float] = field(default_factory=lambda: [5.0, 70.0])  #: added noise SD range, HU (log-uniform)
    #: [min, max] dose fraction (log-uniform) relative to each series' own dose: the added SD is
    #: the series' own noise SD × sqrt(1/a − 1), clipped to noise_sd; [] = draw the SD from noise_sd
    dose: List[float] = field(default_factory=list)
    patch: int = 64  #: patch size in pixels
    context: int = 1  #: k: slices each side (2k+1 input channels)
    copy_neighbours: float = 0.3  #: share of samples whose 2k+1 channels all are the centre slice
    #: [min, max] distance, in slices, of the context neighbours (drawn uniformly per sample): with
    #: more than 1 the network also sees neighbours 2–3 slice spacings away, as on thick-slice scans
    #: (the training series have 2–5 mm slices; held-out Siemens scans 8 mm, where 4.0 gained more with
    #: its context replaced by the centre slice than with the real neighbours)
    context_distance: List[int] = field(default_factory=lambda: [1, 1])
    pixel_size: List[float] = field(default_factory=lambda: [0.5, 1.5])  #: in-plane pixel sizes drawn, mm
    pixel_size_log: bool = False  #: draw the pixel size log-uniformly (as many 0.5–1 mm as 1.5–3 mm samples)
    #: share of samples that get small low-contrast discs and fine patterns added to the clean
    #: image before the noise (training.data.inject_details), so erasing them costs loss
    inserts: float = 0.0
    inserts_contrast: List[float] = field(default_factory=lambda: [3.0, 30.0])  #: disc contrast range, HU (log-uniform, ±)
    inserts_diameter: List[float] = field(default_factory=lambda: [2.0, 12.0])  #: disc diameter range, mm (log-uniform)
    #: smallest insert disc in pixels of the patch (0: none; smaller draws are enlarged to it): a faint
    #: disc of a pixel or two in the target teaches the network to keep noise-sized blobs (as
    #: LossConfig.transparency_min_pixels for the probes)
    inserts_min_pixels: float = 0.0
    #: a copied-neighbour stack (the network's single-image mode: every channel the centre slice) gets
    #: its inserts and transparency probes alike in every channel, as a real single image shows a lesion.
    #: False (4.1's training): the neighbours get them scaled 0.5–1 as real neighbours would, so in a
    #: copied stack, where everything else is identical across channels, the channel difference marks
    #: exactly the inserted signal; a cue no real single image carries.  Measured once (model card,
    #: ablations of 2026-12-02, fourth session): it did not help the single-image mode and cost the
    #: 5 mm insert 0.03 and pancreas 0.19 dB, so no shipped recipe sets it
    copied_inserts_alike: bool = False
    #: add the simulated noise on the patch grid after the image is rescaled (true: the grain keeps
    #: its texture at every pixel size) instead of rescaling it with the image (false: smooths it)
    noise_on_patch_grid: bool = True
    min_tissue: float = 0.3  #: patches with less non-air than this are redrawn (20 tries)
    flips: bool = True  #: random flips and 90° rotations
    hu_clip: List[float] = field(default_factory=lambda: [-1024.0, 2048.0])  #: HU clip before scaling
    hu_offset: float = 0.0  #: model units: (clip(HU) - hu_offset) / hu_scale (stored in the model file)
    hu_scale: float = 1000.0
    #: paired mode (CycleGAN: its paired anchor): share of simulated samples whose target is *recorrupted* (R2R, Pang et al.
    #: CVPR 2021) so the model learns the noise-free image instead of the reference with its own
    #: noise: a field z with the reference's own noise (simulator at 50% dose: same texture and SD)
    #: is added to the input (α·z) and subtracted from the target (z/α); for Gaussian noise the two
    #: noises are then independent, so L1/L2 training is Noise2Noise with a clean expectation.
    recorrupt: float = 0.0
    recorrupt_alpha: float = 1.0  #: α above; input noise floor (1+α²)·σ², target noise (1+1/α²)·σ²
    #: paired mode: share of samples drawn from the real low-dose series (data.low_dose) with
    #: recorrupted targets (their own noise is calibrated by the simulator like the routine dose)
    recorrupt_low_dose: float = 0.0
    recorrupt_stride: int = 1  #: real low-dose centre slices used for R2R: every n-th training slice
    own_noise_realisations: int = 2  #: own-noise fields per slice for R2R
    #: how R2R's own-noise fields are made: "simulator" (projection-domain, calibrated per block;
    #: ~1–2 s per slice) or "measured" (stationary noise with the series' measured NPS and SD; FFT-cheap)
    recorrupt_noise: str = "simulator"
    validation_dose: float = 0.25  #: dose fraction of the held-out validation (texture fitted to the block)


#: The discriminators' default HU window (centre, half-width), ModelConfig.disc_window.
DISC_WINDOW_HU = (40.0, 600.0)


@dataclass
class ModelConfig:
    """Generator G (product network), generator F (normal -> low, context 0) and discriminators."""

    width: int = 16
    levels: int = 3
    res_blocks: int = 4
    f_width: int = 16  #: width of F (only used in training)
    disc_width: int = 32
    disc_layers: int = 3
    #: the discriminators' HU window, [centre, half-width]: mapped to ±3 and clipped (40 ± 600 HU: soft
    #: tissue, fat, bone; a narrower window makes soft-tissue noise a larger share of what they see)
    disc_window: List[float] = field(default_factory=lambda: list(DISC_WINDOW_HU))
    init_generator: str = ""  #: checkpoint or exported .pt whose G initialises this run's G (hybrid)
    #: weight init of fresh generators: "kaiming" (He normal for leaky ReLU, residual branches
    #: scaled by 0.1, last conv zero: keeps the small noise signal alive through the depth) or
    #: "default" (PyTorch's, which shrinks activations layer by layer and learns slowly)
    init: str = "kaiming"
    #: σ (pixels) of the low-frequency pass-through of the generator (network.GeneratorConfig.keep_low_sigma;
    #: 0 = off): the predicted noise's Gaussian low-pass part is not removed, so faint lesions keep contrast
    keep_low_sigma: float = 0.0
    #: noise-level conditioning (network.GeneratorConfig.noise_scales; 0 = off, at most 3): the generator
    #: measures the centre slice's noise SD in blocks at this many scales and sees the maps as extra inputs
    noise_scales: int = 0


#: The paired-mode loss terms (LossConfig weights), in the order the training method names them.
PAIRED_TERMS = ("l1", "l2", "perceptual", "multiscale", "highpass", "transparency")


@dataclass
class LossConfig:
    """Loss weights.  Defaults follow CycleGAN (cycle 10, identity 0.5×cycle) with a perceptual
    term small enough not to dominate L1 (features are scaled to ~unit size)."""

    adversarial: float = 1.0  #: LSGAN weight, each direction
    cycle: float = 10.0  #: L1 cycle consistency, each direction
    identity: float = 5.0  #: L1 identity (G on normal dose, F on low dose)
    #: CycleGAN mode: σ in pixels of a Gaussian low-pass under which the cycle, identity and cycle-perceptual
    #: terms compare their images (0: the full images, the paper's losses).  The cycle x → G(x) → F(G(x))
    #: cannot rebuild the exact noise G removed, so the full-band terms charge G for every HU of noise it
    #: removes and pulled it back to the identity in every run (model card); below the noise band they keep
    #: the anatomy and leave the noise to the adversarial term (and faint lesions to the transparency term)
    cycle_lowpass: float = 0.0
    perceptual: float = 0.1  #: perceptual loss on the cycle reconstructions (paired: on the output)
    l1: float = 1.0  #: paired mode: L1 to the clean target
    #: paired mode: mean squared error to the target (PSNR's own measure; with recorrupted (R2R)
    #: targets, which carry noise, the squared error is the loss whose minimiser is the clean mean)
    l2: float = 0.0
    multiscale: float = 0.0  #: paired mode (and the hybrid anchor): L1 of 2/4/8-pixel block means
    #: paired mode: L1 of the error's high-pass part (error minus its Gaussian low-pass of σ highpass_sigma
    #: pixels): more weight on removing the fine noise grain, the band faint lesions do not occupy
    highpass: float = 0.0
    highpass_sigma: float = 1.5
    #: σ (pixels) of a second, finer low-pass that bounds the high-pass band from above: the term weighs
    #: lowpass(e, highpass_fine_sigma) − lowpass(e, highpass_sigma), a band-pass (0.7 with σ 1.5: weight
    #: 0.4–0.5 at 0.15–0.3 cycles/pixel, 0.18 at Nyquist; the finest grain, a sharp kernel's texture, is left
    #: to the L1); 0: no upper bound
    highpass_fine_sigma: float = 0.0
    paired: float = 0.0  #: CycleGAN mode: extra L1+perceptual on simulated pairs (a hybrid; 0 = pure)
    #: weight of the *transparency* term (paired mode; in CycleGAN mode on G's low-dose inputs, a
    #: safety anchor that does not ask for any particular output), the benchmark's paired signal injection as a
    #: loss: faint discs or a fine pattern s (training.data.inject_details; transparency_contrast /
    #: transparency_diameter) are added to the noisy input x and (1 − c)² is penalised, c the gain of
    #: G(x+s) − G(x) on s (training.losses.transparency_loss; 1 = kept, 0 = erased).  The noise is the
    #: same in both, so the term costs nothing for removing noise, only for removing signal; L1 alone
    #: rewards shrinking faint signals the network cannot tell from noise (3.x kept 31–82% of faint discs)
    transparency: float = 0.0
    transparency_contrast: List[float] = field(default_factory=lambda: [3.0, 20.0])  #: probe discs, HU (log-uniform, ±)
    transparency_diameter: List[float] = field(default_factory=lambda: [4.0, 12.0])  #: probe discs, mm (log-uniform)
    transparency_patterns: float = 0.4  #: share of transparency probes that are a fine pattern, not discs
    #: amplitude of the pattern probes, HU (uniform): a pixel-scale texture far below the noise cannot
    #: be told from noise, so asking to pass it asks for the identity on noise-like grain
    transparency_pattern_contrast: List[float] = field(default_factory=lambda: [30.0, 200.0])
    #: smallest probe disc, in pixels of the patch grid (0: none; smaller draws are enlarged to it).  A
    #: faint disc of one or two pixels looks like a noise grain: asking the network to pass it asks it to
    #: pass the grain too (for small signals the kept share of a signal and of the noise in its band go
    #: together), while the low-contrast targets concern lesions of 5 mm and more (6+ pixels at 0.8 mm)
    transparency_min_pixels: float = 0.0


@dataclass
class PerceptualConfig:
    """The perceptual feature network."""

    network: str = "vgg16"  #: vgg16 | autoencoder | none
    layers: List[str] = field(default_factory=lambda: ["relu1_2", "relu2_2"])  #: VGG feature layers
    hu_window: List[float] = field(default_factory=lambda: [-160.0, 240.0])  #: HU window mapped to 0..255
    autoencoder_steps: int = 1500  #: training steps of the CT autoencoder (network: autoencoder)


@dataclass
class OptimConfig:
    """Adam with linear decay to zero over the last ``decay`` share of steps."""

    steps: int = 4000
    batch_size: int = 8
    lr: float = 2e-4  #: generator G
    lr_f: float = 0.0  #: generator F (CycleGAN); 0 = same as lr
    lr_disc: float = 2e-4  #: discriminators
    beta1: float = 0.5
    beta2: float = 0.999
    decay: float = 0.5  #: share of steps at the end over which lr decays linearly to 0
    grad_clip: float = 1.0  #: gradient-norm clip (0 = off)


@dataclass
class RunConfig:
    """Devices, logging and checkpoints."""

    device: str = "auto"  #: auto | cpu | cuda
    amp: bool = True  #: mixed precision (CUDA only)
    threads: int = 0  #: torch CPU threads (0 = torch default)
    log_every: int = 25  #: steps between metric rows in metrics.csv
    validate_every: int = 500  #: steps between held-out validations (0 = only at the end)
    checkpoint_every: int = 250  #: steps between checkpoints
    max_minutes: float = 0.0  #: stop (with a checkpoint) after this wall time; 0 = no limit


@dataclass
class TrainConfig:
    """A full training run."""

    name: str = "lowdose-liver-pan"  #: run name; the run folder is <run_dir or runs>/<name>
    mode: str = "cyclegan"  #: cyclegan (unpaired, the method) | paired (supervised ablation)
    seed: int = 0
    run_dir: str = ""  #: "" = ~/.cache/lowdose-denoise/runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def run_folder(self) -> Path:
        return Path(self.run_dir).expanduser() if self.run_dir else DEFAULT_RUNS / self.name

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


#: Fields that older configs may still carry: what to do instead.
_REMOVED = {
    "data.validation_texture": "it never had an effect: the validation noise's texture is fitted to the held-out "
    "block by the simulator. Delete the line.",
}


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise InputError(f"Config section '{where}' should be a mapping, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        removed = _REMOVED.get(f"{where}.{key}" if where else key)
        if removed:
            raise InputError(f"Config field {where}.{key} was removed: {removed}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(
            f"Unknown config field(s) {', '.join(where + '.' + u for u in unknown)}; "
            f"known: {', '.join(sorted(fields))}."
        )
    values = {}
    defaults = cls()
    for key, value in data.items():
        default = getattr(defaults, key)
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(default):
            values[key] = _build(type(default), value, sub)
        elif key in ("normal_dose", "low_dose"):
            if not isinstance(value, list):
                raise InputError(f"Config field {sub} should be a list of series.")
            values[key] = [_build(SeriesConfig, item, f"{sub}[{i}]") for i, item in enumerate(value)]
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"Config field {sub} should be true or false, got {value!r}.")
            values[key] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"Config field {sub} should be a number, got {value!r}.")
            values[key] = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise InputError(f"Config field {sub} should be a string, got {value!r}.")
            values[key] = value
        elif isinstance(default, list):
            if not isinstance(value, list):
                raise InputError(f"Config field {sub} should be a list, got {value!r}.")
            values[key] = list(value)
        else:
            values[key] = value
    return cls(**values)


def config_from_dict(data: Optional[Dict[str, Any]]) -> TrainConfig:
    config = _build(TrainConfig, data or {}, "")
    validate(config)
    return config


def load_config(path: str) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) training config."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"Config file {file} not found; give a YAML or TOML training config.")
    text = file.read_text()
    try:
        if file.suffix.lower() == ".toml":
            try:
                import tomllib  # type: ignore[import-not-found]
            except ImportError:
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # yaml and toml raise their own error types
        raise InputError(f"Config file {file} is not valid YAML/TOML: {str(error).splitlines()[0]}") from None
    return config_from_dict(data)


def validate(config: TrainConfig) -> None:
    """Value checks with messages that say what to change."""
    if config.mode not in ("cyclegan", "paired"):
        raise InputError(f"mode must be 'cyclegan' or 'paired', got '{config.mode}'.")
    d = config.data
    if d.patch < 16 or d.patch % 16:
        raise InputError(f"data.patch must be a multiple of 16 and at least 16, got {d.patch}.")
    if d.context < 0:
        raise InputError("data.context must be 0 or more.")
    if not 0.0 <= d.copy_neighbours <= 1.0:
        raise InputError("data.copy_neighbours must be in [0, 1].")
    if (len(d.context_distance) != 2 or any(isinstance(v, bool) or not float(v).is_integer() for v in d.context_distance)
            or not 1 <= d.context_distance[0] <= d.context_distance[1]):
        raise InputError("data.context_distance must be [min, max] whole slices with 1 <= min <= max.")
    if len(d.pixel_size) != 2 or not 0 < d.pixel_size[0] <= d.pixel_size[1]:
        raise InputError("data.pixel_size must be [min, max] in mm with 0 < min <= max.")
    if len(d.noise_sd) != 2 or not 0 < d.noise_sd[0] <= d.noise_sd[1]:
        raise InputError("data.noise_sd must be [min, max] HU with 0 < min <= max.")
    if not d.textures:
        raise InputError("data.textures must name at least one noise texture.")
    if not 0 < d.validation_dose < 1:
        raise InputError("data.validation_dose must be a dose fraction in (0, 1).")
    if not (0.0 <= d.recorrupt <= 1.0 and 0.0 <= d.recorrupt_low_dose <= 1.0):
        raise InputError("data.recorrupt and data.recorrupt_low_dose must be shares in [0, 1].")
    if d.dose and (len(d.dose) != 2 or not 0 < d.dose[0] <= d.dose[1] < 1):
        raise InputError("data.dose must be [] or [min, max] dose fractions with 0 < min <= max < 1.")
    if not 0.0 <= d.inserts <= 1.0:
        raise InputError("data.inserts must be a share in [0, 1].")
    for name in PAIRED_TERMS[:-1]:  # the transparency weight is checked with its probes below
        if getattr(config.loss, name) < 0:
            raise InputError(f"loss.{name} is a weight and must be >= 0 (0 turns the term off).")
    if config.loss.highpass_sigma <= 0:
        raise InputError("loss.highpass_sigma is a Gaussian σ in pixels and must be > 0 (1.5: the band above 0.1 cycles/pixel).")
    if not 0.0 <= config.loss.highpass_fine_sigma < config.loss.highpass_sigma:
        raise InputError(
            "loss.highpass_fine_sigma bounds the high-pass band from above and must be >= 0 and smaller than "
            f"loss.highpass_sigma ({config.loss.highpass_sigma:g}); 0 leaves the band open (0.7: mostly below 0.35 cycles/pixel)."
        )
    if config.loss.transparency < 0 or not 0.0 <= config.loss.transparency_patterns <= 1.0:
        raise InputError("loss.transparency must be >= 0 and loss.transparency_patterns a share in [0, 1].")
    for name in ("transparency_contrast", "transparency_diameter", "transparency_pattern_contrast"):
        pair = getattr(config.loss, name)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            raise InputError(f"loss.{name} must be [min, max] with 0 < min <= max.")
    if len(config.model.disc_window) != 2 or not float(config.model.disc_window[1]) > 0:
        raise InputError("model.disc_window must be [centre, half-width] in HU with half-width > 0.")
    if config.loss.cycle_lowpass < 0:
        raise InputError("loss.cycle_lowpass must be 0 (the full images) or a positive σ in pixels.")
    if config.loss.transparency_min_pixels < 0:
        raise InputError("loss.transparency_min_pixels must be >= 0 (0: no floor on the probe discs' size).")
    if d.inserts_min_pixels < 0:
        raise InputError("data.inserts_min_pixels must be >= 0 (0: no floor on the insert discs' size).")
    for name in ("inserts_contrast", "inserts_diameter"):
        pair = getattr(d, name)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            raise InputError(f"data.{name} must be [min, max] with 0 < min <= max.")
    if d.recorrupt_noise not in ("simulator", "measured"):
        raise InputError("data.recorrupt_noise must be simulator or measured.")
    for entry in list(d.normal_dose) + list(d.low_dose):
        if entry.stride < 1:
            raise InputError(f"Series {entry.name or entry.path}: stride must be 1 or more.")
        if entry.roi and (len(entry.roi) != 4 or any(not isinstance(v, int) or v < 0 for v in entry.roi)
                          or not (entry.roi[0] < entry.roi[1] and entry.roi[2] < entry.roi[3])):
            raise InputError(f"Series {entry.name or entry.path}: roi must be [] or [y0, y1, x0, x1] pixel rows and "
                             f"columns with y0 < y1 and x0 < x1, got {entry.roi}.")
    if d.recorrupt_alpha <= 0 or d.recorrupt_stride < 1 or d.own_noise_realisations < 1:
        raise InputError(
            "data.recorrupt_alpha must be > 0, data.recorrupt_stride and data.own_noise_realisations >= 1."
        )
    if config.mode != "paired" and d.recorrupt_low_dose > 0:
        raise InputError(
            "data.recorrupt_low_dose is for mode: paired (CycleGAN uses the real low dose unpaired); set it to 0."
        )
    if config.mode == "cyclegan" and d.recorrupt > 0 and config.loss.paired <= 0:
        raise InputError("data.recorrupt in CycleGAN mode recorrupts the paired anchor; set loss.paired > 0.")
    if not d.normal_dose:
        raise InputError("data.normal_dose must list at least one routine-dose series (path, name, holdout, ...); "
                         "see the configs in LowDoseDenoiseLib/training/configs/ for examples.")
    if config.mode == "cyclegan" and not d.low_dose and d.simulated_low_dose <= 0:
        raise InputError("CycleGAN training needs data.low_dose series or data.simulated_low_dose > 0.")
    if config.optim.steps < 1 or config.optim.batch_size < 1:
        raise InputError("optim.steps and optim.batch_size must be at least 1.")
    if config.perceptual.network not in ("vgg16", "autoencoder", "none"):
        raise InputError("perceptual.network must be vgg16, autoencoder or none.")
    if config.model.keep_low_sigma < 0:
        raise InputError("model.keep_low_sigma must be 0 (off) or a positive σ in pixels.")
    if not 0 <= config.model.noise_scales <= 3:
        raise InputError("model.noise_scales must be 0 (off), 1, 2 or 3 (scales at which the noise level is "
                         f"measured), got {config.model.noise_scales}.")
    if config.model.init not in ("kaiming", "default"):
        raise InputError("model.init must be kaiming or default.")
    if d.hu_scale <= 0 or len(d.hu_clip) != 2 or d.hu_clip[0] >= d.hu_clip[1]:
        raise InputError("data.hu_scale must be > 0 and data.hu_clip [lo, hi] with lo < hi.")
    if config.run.device not in ("auto", "cpu", "cuda"):
        raise InputError("run.device must be auto, cpu or cuda.")
