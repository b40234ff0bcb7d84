"""Export a training checkpoint's generator G as a model file (TorchScript + metadata)."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from ..errors import InputError
from ..io.outputs import check_output
from ..modelfile import DEFAULT_HU_NORMALISATION, HUNormalisation, make_metadata, save_model
from ..network import ARCHITECTURE, Generator, GeneratorConfig
from .config import PAIRED_TERMS
from .trainer import read_checkpoint

__all__ = ["PAIRED_TERMS", "average_generators", "export_checkpoint", "training_summary"]  # PAIRED_TERMS: re-exported from .config


def training_summary(state: Dict[str, Any]) -> Dict[str, Any]:
    """The model file's ``training`` metadata from a checkpoint's config and counters."""
    config = state.get("config", {})
    data = config.get("data", {})
    loss = config.get("loss", {})
    optim = config.get("optim", {})
    mode = state.get("mode", config.get("mode", "?"))
    normal = [s.get("name") or s.get("path") for s in data.get("normal_dose", [])]
    low = [s.get("name") or s.get("path") for s in data.get("low_dose", [])]
    sds = data.get("noise_sd", [5.0, 70.0])
    own = 11.9  # routine-dose series' own soft-tissue noise (HU), for the dose range below
    dose = [round(1.0 / (1.0 + (sds[1] / own) ** 2), 3), round(1.0 / (1.0 + (sds[0] / own) ** 2), 3)]
    if data.get("dose"):  # dose-relative noise: the fractions of each training scan's own dose
        dose = [float(v) for v in data["dose"]]
    if mode == "cyclegan":
        weights = {k: loss.get(k) for k in ("adversarial", "cycle", "identity", "perceptual", "paired")}
        if loss.get("cycle_lowpass", 0) > 0:
            weights["cycle_lowpass"] = loss["cycle_lowpass"]
        if loss.get("paired", 0) > 0:
            method = "CycleGAN (unpaired) with a paired L1 anchor on simulated pairs (hybrid)"
        else:
            method = "CycleGAN (unpaired)"
        if loss.get("transparency", 0) > 0:
            weights["transparency"] = loss["transparency"]
            method += " with the transparency term"
        if config.get("model", {}).get("init_generator"):
            method += ", generator initialised from the paired model"
    else:
        weights = {k: loss.get(k) for k in PAIRED_TERMS if k in loss}
        method = _paired_method(data, loss)
    steps = int(state.get("step", 0))
    stages = _earlier_stages(config)
    patch = int(data.get("patch", 64))
    batch = int(optim.get("batch_size", 8))
    return {
        "trained": steps > 0,
        "method": method,
        "pixel_size_mm": list(data.get("pixel_size", [0.5, 1.5])),
        "slice_spacing_mm": state.get("slice_spacing_mm"),
        "dose_fraction": dose,
        "noise_sd_added_hu": list(sds),
        "noise_textures": list(data.get("textures", [])),
        "copy_neighbours": data.get("copy_neighbours"),
        "context_distance": data.get("context_distance", [1, 1]),
        "data": f"normal dose: {', '.join(map(str, normal))}; low dose: {', '.join(map(str, low)) or 'simulated'}",
        "steps": steps,
        "epochs": round(steps * batch * patch * patch / (512 * 512 * 12), 2),
        "batch_size": batch,
        "patch": patch,
        "loss_weights": weights,
        "perceptual_network": config.get("perceptual", {}).get("network"),
        "hardware": f"{platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}",
        "time_s": round(float(state.get("elapsed_s", 0.0)), 1),
        "pretraining": stages[0] if stages else None,
        "earlier_stages": stages,
        "recorrupt": {k: data.get(k) for k in ("recorrupt", "recorrupt_alpha", "recorrupt_low_dose")},
        "noise_on_patch_grid": data.get("noise_on_patch_grid", False),
        "detail_inserts": {k: data.get(k) for k in ("inserts", "inserts_contrast", "inserts_diameter", "inserts_min_pixels",
                                                      "copied_inserts_alike")}
        if data.get("inserts", 0) > 0 else None,
        "transparency_probes": {k: loss.get(k) for k in loss if k.startswith("transparency_")}
        if loss.get("transparency", 0) > 0 else None,
        # the band of the high-frequency error term (training.losses.highpass_l1): above σ, below fine σ
        "highpass_band": {k: loss.get(k) for k in ("highpass_sigma", "highpass_fine_sigma")}
        if loss.get("highpass", 0) > 0 else None,
        "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _paired_method(data: Dict[str, Any], loss: Dict[str, Any]) -> str:
    terms = " + ".join(k for k in PAIRED_TERMS if loss.get(k, 0) > 0) or "L1"
    if data.get("recorrupt", 0) > 0 or data.get("recorrupt_low_dose", 0) > 0:
        method = f"supervised ({terms}) on simulated low dose with recorrupted (R2R) targets"
        if data.get("recorrupt_low_dose", 0) > 0:
            method += ", plus R2R on real low-dose CT"
        return method
    return f"paired supervised ({terms}) on simulated pairs"


def _earlier_stages(config: Dict[str, Any], depth: int = 6) -> list:
    """The chain of runs this one was initialised from (model.init_generator), newest first."""
    stages = []
    init = config.get("model", {}).get("init_generator", "")
    while init and depth > 0 and Path(init).expanduser().is_file():
        try:
            state = read_checkpoint(Path(init).expanduser())
        except InputError:
            # an exported model file (lowdose-denoise export) carries its own lineage in its metadata
            stages.extend(_exported_stages(Path(init).expanduser()))
            break
        cfg = state.get("config", {})
        data, loss = cfg.get("data", {}), cfg.get("loss", {})
        stages.append(
            {
                "run": cfg.get("name"),
                "mode": state.get("mode"),
                "method": _paired_method(data, loss) if state.get("mode") == "paired" else "CycleGAN",
                "steps": int(state.get("step", 0)),
                "patch": data.get("patch"),
                "batch_size": cfg.get("optim", {}).get("batch_size"),
                "loss_weights": {k: loss.get(k) for k in PAIRED_TERMS if k in loss},
                "time_s": round(float(state.get("elapsed_s", 0.0)), 1),
            }
        )
        init = cfg.get("model", {}).get("init_generator", "")
        depth -= 1
    return stages


def _exported_stages(path: Path) -> list:
    """The stages of an exported model file used as ``model.init_generator``: the file's own run
    (from its training metadata), then the earlier stages it records; [] when it has none."""
    from ..modelfile import load_model

    try:
        metadata = load_model(path).metadata
    except Exception:  # not a model file either: the lineage simply ends here
        return []
    training = metadata.get("training") or {}
    if not training:
        return []
    own = {
        "run": f"{metadata.get('name', path.stem)} {metadata.get('version', '')} ({path.name})".strip(),
        "mode": "paired" if str(training.get("method", "")).startswith("supervised") else training.get("mode"),
        "method": training.get("method"),
        "steps": training.get("steps"),
        "patch": training.get("patch"),
        "batch_size": training.get("batch_size"),
        "loss_weights": training.get("loss_weights"),
        "time_s": training.get("time_s"),
    }
    return [own] + list(training.get("earlier_stages") or [])


def _normalisation(state: Dict[str, Any]) -> HUNormalisation:
    """The run's HU normalisation (the default for checkpoints from before it was configurable)."""
    data = state.get("config", {}).get("data", {})
    if "hu_scale" not in data:
        return DEFAULT_HU_NORMALISATION
    return HUNormalisation.from_dict(
        {"clip": data["hu_clip"], "offset": data["hu_offset"], "scale": data["hu_scale"]}, "checkpoint config"
    )


def average_generators(first: Dict[str, Any], others: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The generator weights of ``first`` averaged with those of ``others`` (a model soup).

    ``others`` maps each further checkpoint's path (for the messages) to its read state.

    Meant for runs of one recipe that differ only in their seed and start from one model
    (``model.init_generator``): their weights lie in one basin, and the mean is a model that does
    not depend on the luck of one seed.  Refuses checkpoints whose architecture or weight shapes
    differ from the first's.  Integer buffers (counters) are taken from the first.
    """
    states = [first]
    for path, state in others.items():
        if dict(state.get("architecture", {})) != dict(first.get("architecture", {})):
            raise InputError(
                f"Checkpoint {path} has another generator architecture ({state.get('architecture')}) than the first "
                f"({first.get('architecture')}); average only runs of one recipe."
            )
        if set(state["g"]) != set(first["g"]) or any(state["g"][k].shape != v.shape for k, v in first["g"].items()):
            raise InputError(f"Checkpoint {path}: its generator weights do not match the first checkpoint's.")
        states.append(state)
    weights = {}
    for key, value in first["g"].items():
        if value.is_floating_point():
            weights[key] = torch.stack([s["g"][key].float() for s in states]).mean(0).to(value.dtype)
        else:
            weights[key] = value
    return weights


def export_checkpoint(checkpoint: str, out: str, name: Optional[str] = None, version: Optional[str] = None,
                      overwrite: bool = False, keep_low_sigma: Optional[float] = None,
                      slice_spacing: Optional[Sequence[float]] = None, average: Sequence[str] = ()) -> Path:
    """Write the generator of a training checkpoint as a TorchScript model file with metadata.

    ``slice_spacing`` [min, max] mm: the distances between context slices seen in training, for a
    checkpoint written before the trainer recorded them (the engine denoises slices farther apart
    one by one, see engine.check_slice_spacing).

    ``average``: further checkpoints of the same recipe (other seeds); the exported generator is the
    mean of all their weights (:func:`average_generators`), and the metadata lists every run averaged.

    Refuses a checkpoint whose generator is not this project's architecture, and an
    output that exists (unless ``overwrite``) or is the checkpoint itself; the target is
    checked before the checkpoint is read.
    """
    out_path = Path(out)
    if out_path.suffix != ".pt":
        raise InputError(f"Model files end in .pt; got {out_path.name}.")
    check_output(out_path, [checkpoint, *average], overwrite=overwrite)
    state = read_checkpoint(checkpoint)
    others = {path: read_checkpoint(path) for path in average}  # each read once: weights and metadata
    arch = dict(state["architecture"])
    if arch.get("name") != ARCHITECTURE:
        raise InputError(
            f"Checkpoint {checkpoint} holds a '{arch.get('name')}' generator; this version exports only "
            f"'{ARCHITECTURE}' generators. Train with LowDoseDenoise's trainer or export it with its own tool."
        )
    if keep_low_sigma is not None:  # a fixed filter without weights: may be set at export time
        if keep_low_sigma < 0:
            raise InputError("--keep-low-sigma must be 0 (off) or a positive σ in pixels.")
        arch["keep_low_sigma"] = float(keep_low_sigma)
    try:
        config = GeneratorConfig.from_dict(arch)
        generator = Generator(config)
        generator.load_state_dict(average_generators(state, others) if others else state["g"])
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise InputError(
            f"Checkpoint {checkpoint}: the generator weights do not match its architecture {arch} ({error})."
        ) from None
    run_name = state.get("config", {}).get("name", "lowdose-denoise")
    summary = training_summary(state)
    if slice_spacing is not None:
        if len(slice_spacing) != 2 or not 0 < float(slice_spacing[0]) <= float(slice_spacing[1]):
            raise InputError("--slice-spacing must be MIN MAX in mm with 0 < MIN <= MAX.")
        summary["slice_spacing_mm"] = [float(v) for v in slice_spacing]
    if others:
        summary["averaged_runs"] = [{"run": s.get("config", {}).get("name"), "seed": s.get("config", {}).get("seed"),
                                     "steps": int(s.get("step", 0))} for s in [state, *others.values()]]
        summary["method"] += f", generator weights averaged over {len(others) + 1} runs of the recipe (seeds)"
    metadata = make_metadata(
        config,
        name=name or run_name,
        version=version or f"0.{int(state.get('step', 0))}",
        description=f"Low-dose CT denoiser ({summary['method']}); 2.5D, {config.in_channels} slices in.",
        license="Apache-2.0",
        training=summary,
        hu_normalisation=_normalisation(state),
    )
    return save_model(generator.eval(), metadata, out_path)
