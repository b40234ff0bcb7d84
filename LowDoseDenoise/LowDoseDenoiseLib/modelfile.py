"""Model files: one TorchScript file with its metadata inside, and the bundled-model registry.

A model file is written by :func:`save_model` with ``torch.jit.save``; the metadata is
the TorchScript extra file ``metadata.json`` (never a pickle).  :func:`load_model`
validates the file and the metadata and probes the network once, so that a broken or
foreign file is refused with a message that says what to do, before any voxel is
processed.

Metadata (format version 1)::

    format_version   int, this module's FORMAT_VERSION or lower
    name, version, description, license
    architecture     {"name", "context", "width", "levels", "res_blocks"} (network.GeneratorConfig)
    context_slices   k (2k+1 input slices)
    hu_normalisation {"clip": [lo, hi], "offset": o, "scale": s}: x = (clip(hu) - o) / s
    training         {"trained": bool, "pixel_size_mm": [lo, hi], "dose_fraction": [lo, hi],
                      "slice_spacing_mm": [lo, hi] (optional), "data": str, "steps": int, ...}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import ModelError

__all__ = [
    "DEFAULT_HU_NORMALISATION",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "MODELS_DIR",
    "MODELS_INDEX",
    "MODEL_ENV",
    "HUNormalisation",
    "LoadedModel",
    "ModelEntry",
    "bundled_model_path",
    "default_model_path",
    "describe",
    "error_summary",
    "file_sha256",
    "list_models",
    "load_model",
    "make_metadata",
    "read_metadata",
    "resolve_model",
    "save_model",
    "validate_metadata",
]

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"

#: Where the bundled models live, in the source tree and inside an installed Slicer module.
MODELS_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models"
#: The registry index in MODELS_DIR: {"default": NAME} picks the default bundled model.
MODELS_INDEX = "models.json"
#: Environment variable that overrides the default model (a model file path).
MODEL_ENV = "LOWDOSE_DENOISE_MODEL"


@dataclass(frozen=True)
class HUNormalisation:
    """How a model sees HU: ``x = (clip(hu, lo, hi) − offset) / scale`` (the model file's
    ``hu_normalisation``).  One type for the model file, the engine, training data and export.

    Voxels at or beyond the clip window (air outside the field of view, metal) are passed
    through unchanged by the engine, because the network never saw their true values.
    """

    clip: Tuple[float, float] = (-1024.0, 2048.0)
    offset: float = 0.0
    scale: float = 1000.0

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.clip)
        object.__setattr__(self, "clip", (lo, hi))
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "scale", float(self.scale))
        if not (hi > lo and self.scale > 0 and math.isfinite(self.offset)):
            raise ModelError("hu_normalisation has an empty clip window or a non-positive scale.")

    def to_model(self, hu: np.ndarray) -> np.ndarray:
        """HU -> model units (float32; a new array)."""
        lo, hi = self.clip
        with np.errstate(over="ignore"):  # beyond float32 is beyond the window: clipped like any other
            out = np.clip(np.asarray(hu, dtype=np.float32), lo, hi)
        out -= self.offset
        out /= self.scale
        return out

    def from_model(self, x: np.ndarray) -> np.ndarray:
        """Model units -> HU (for images; a difference of images needs only ``x * scale``)."""
        return np.asarray(x, dtype=np.float32) * self.scale + self.offset

    def outside(self, hu: np.ndarray) -> np.ndarray:
        """Voxels at or beyond the clip window, which the engine leaves as they are."""
        lo, hi = self.clip
        return (hu <= lo) | (hu >= hi)

    def to_dict(self) -> Dict[str, Any]:
        """The model file's JSON form: {"clip": [lo, hi], "offset": o, "scale": s}."""
        return {"clip": [self.clip[0], self.clip[1]], "offset": self.offset, "scale": self.scale}

    @classmethod
    def from_dict(cls, value: Any, source: str = "model file") -> HUNormalisation:
        """Parse the JSON form; ModelError naming ``source`` when it is malformed."""
        try:
            lo, hi = (float(v) for v in value["clip"])
            return cls((lo, hi), float(value["offset"]), float(value["scale"]))
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{source}: hu_normalisation needs 'clip' [lo, hi], 'offset' and 'scale'.") from None
        except ModelError as error:
            raise ModelError(f"{source}: {error}") from None


#: The normalisation of models trained before it was configurable (and of make_metadata's default).
DEFAULT_HU_NORMALISATION = HUNormalisation()

_REQUIRED = {
    "format_version": int,
    "name": str,
    "version": str,
    "description": str,
    "license": str,
    "architecture": dict,
    "context_slices": int,
    "hu_normalisation": dict,
    "training": dict,
}


@dataclass
class LoadedModel:
    """A validated model: the TorchScript module, its metadata, path and SHA-256."""

    module: Any  # torch.jit.ScriptModule
    metadata: Dict[str, Any]
    path: Optional[Path]
    sha256: str

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def context(self) -> int:
        return int(self.metadata["context_slices"])

    @property
    def min_size(self) -> int:
        arch = self.metadata["architecture"]
        return int(arch.get("min_size", 2 ** (int(arch.get("levels", 3)) + 1)))

    @property
    def normalisation(self) -> HUNormalisation:
        return HUNormalisation.from_dict(self.metadata["hu_normalisation"], str(self.path))

    @property
    def pixel_size_range(self) -> Optional[Tuple[float, float]]:
        value = self.metadata["training"].get("pixel_size_mm")
        return (float(value[0]), float(value[1])) if value else None

    @property
    def slice_spacing_range(self) -> Optional[Tuple[float, float]]:
        """[min, max] mm between the context slices the model saw in training (None: not recorded)."""
        value = self.metadata["training"].get("slice_spacing_mm")
        return (float(value[0]), float(value[1])) if value else None

    def summary(self) -> str:
        """One line for the GUI and logs: name, version, SHA-256 prefix, training dose."""
        dose = self.metadata["training"].get("dose_fraction")
        dose_text = f", trained on {int(dose[0] * 100)}–{int(dose[1] * 100)}% dose" if dose else ""
        trained = "" if self.metadata["training"].get("trained", True) else " (UNTRAINED)"
        return f"{self.name} {self.version}{trained}, sha256 {self.sha256[:12]}{dose_text}"


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelEntry:
    """A model file in the registry, described from its metadata (read without torch).

    ``problem`` is set, and the other fields are mostly empty, when the file cannot be used.
    """

    name: str
    version: str
    summary: str
    path: Path
    dose_range: Optional[Tuple[float, float]] = None
    pixel_size_range: Optional[Tuple[float, float]] = None
    trained: bool = True
    default: bool = False
    problem: Optional[str] = None

    def line(self) -> str:
        """One line for `lowdose-denoise models` and a model menu."""
        if self.problem:
            return f"{self.path.name}: unusable ({self.problem})"
        dose = f", {self.dose_range[0]:.0%}–{self.dose_range[1]:.0%} dose" if self.dose_range else ""
        pixels = (f", {self.pixel_size_range[0]:.2f}–{self.pixel_size_range[1]:.2f} mm pixels"
                  if self.pixel_size_range else "")
        flags = (" [default]" if self.default else "") + ("" if self.trained else " [UNTRAINED]")
        return f"{self.name} {self.version}{flags}: {self.summary}{dose}{pixels} ({self.path.name})"


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The validated metadata of a model file, read from the TorchScript archive without torch
    (fast, and safe on the GUI thread); ModelError when the file is not a model file."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
            if not names:
                raise ModelError(f"{path} carries no {METADATA_FILE}; re-export it with `lowdose-denoise export`.")
            raw = archive.read(names[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile) as error:
        raise ModelError(f"{path} is not a TorchScript model file ({error}).") from None
    try:
        metadata = json.loads(raw)
    except ValueError as error:
        raise ModelError(f"{path}: {METADATA_FILE} is not valid JSON ({error}).") from None
    return validate_metadata(metadata, str(path))


def _range(value: Any) -> Optional[Tuple[float, float]]:
    try:
        return (float(value[0]), float(value[1])) if value else None
    except (TypeError, ValueError, IndexError):
        return None


def _entry(path: Path, default_name: Optional[str]) -> ModelEntry:
    try:
        meta = read_metadata(path)
    except ModelError as error:
        return ModelEntry(path.stem, "", "", path, problem=str(error))
    train = meta["training"]
    name = str(meta["name"])
    return ModelEntry(
        name=name,
        version=str(meta["version"]),
        summary=str(meta.get("summary") or meta["description"]),
        path=path,
        dose_range=_range(train.get("dose_fraction")),
        pixel_size_range=_range(train.get("pixel_size_mm")),
        trained=bool(train.get("trained", True)),
        default=default_name in (name, path.stem, path.name),
    )


def _index_default(folder: Path) -> Optional[str]:
    """The default model named in folder/models.json, or None when there is no index."""
    index = folder / MODELS_INDEX
    if not index.is_file():
        return None
    try:
        data = json.loads(index.read_text())
        default = data["default"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{index} is not a valid model index ({error}); it needs {{\"default\": NAME}}.") from None
    if not isinstance(default, str) or not default:
        raise ModelError(f"{index}: 'default' must name a bundled model, got {default!r}.")
    return default


def list_models(folder: Union[str, Path, None] = None) -> List[ModelEntry]:
    """Every model file (*.pt) in ``folder`` (default: the bundled models), default first, then by name.

    The default is the one ``models.json`` names (by metadata name or file name); without
    an index a single model is the default.  Files that are not usable model files are
    listed with their ``problem``.
    """
    folder = Path(folder) if folder is not None else MODELS_DIR
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.pt"))
    default_name = _index_default(folder)
    if default_name is None and len(files) == 1:
        default_name = files[0].name
    entries = [_entry(path, default_name) for path in files]
    return sorted(entries, key=lambda e: (not e.default, e.problem is not None, e.name, e.version))


def default_model_path(folder: Union[str, Path, None] = None) -> Path:
    """The default model: $LOWDOSE_DENOISE_MODEL if set, else the registry's default."""
    override = os.environ.get(MODEL_ENV)
    if override and folder is None:
        return Path(override)
    folder = Path(folder) if folder is not None else MODELS_DIR
    entries = list_models(folder)
    chosen = [e for e in entries if e.default]
    if not chosen:
        names = ", ".join(e.name for e in entries) or "none"
        index = _index_default(folder)
        reason = f"{MODELS_INDEX} names '{index}', which is not among them" if index else f"no {MODELS_INDEX} says which"
        raise ModelError(f"No default model in {folder} (models: {names}; {reason}); give --model NAME or a file.")
    if chosen[0].problem:
        raise ModelError(f"The default model {chosen[0].path} cannot be used: {chosen[0].problem}")
    return chosen[0].path


#: Kept for callers of the first registry-less versions: the default model's path.
bundled_model_path = default_model_path


def resolve_model(model: Union[str, Path, None] = None, folder: Union[str, Path, None] = None) -> Path:
    """The model file ``model`` means: None for the default, an existing file, or the name of a
    bundled model (its metadata name, ``name@version`` or its file name without .pt)."""
    if model is None or str(model) == "":
        return default_model_path(folder)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    text = str(model)
    looks_like_path = path.suffix == ".pt" or "/" in text or "\\" in text
    entries = [e for e in list_models(folder) if e.problem is None]
    matches = [e for e in entries if text in (e.name, f"{e.name}@{e.version}", e.path.stem)]
    if len(matches) == 1:
        return matches[0].path
    if len(matches) > 1:
        raise ModelError(f"Several bundled models are called '{text}' "
                         f"({', '.join(f'{e.name}@{e.version}' for e in matches)}); give NAME@VERSION.")
    if looks_like_path:
        hint = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist)"
        raise ModelError(f"Model file {path} not found{hint}; give an existing TorchScript model file.")
    names = ", ".join(e.name for e in entries) or "none"
    raise ModelError(f"'{text}' is neither a model file nor a bundled model (bundled: {names}); "
                     "see `lowdose-denoise models`.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_metadata(
    config,
    *,
    name: str,
    version: str,
    description: str,
    license: str = "Apache-2.0",
    training: Optional[Dict[str, Any]] = None,
    hu_normalisation: Union[HUNormalisation, Dict[str, Any], None] = None,
) -> Dict[str, Any]:
    """Complete metadata for a generator of ``config`` (a network.GeneratorConfig)."""
    arch = config.to_dict()
    arch["min_size"] = config.min_size
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "description": description,
        "license": license,
        "architecture": arch,
        "context_slices": config.context,
        "hu_normalisation": _normalisation(hu_normalisation).to_dict(),
        "training": dict(training or {"trained": False}),
    }


def _normalisation(value: Union[HUNormalisation, Dict[str, Any], None]) -> HUNormalisation:
    if value is None:
        return DEFAULT_HU_NORMALISATION
    return value if isinstance(value, HUNormalisation) else HUNormalisation.from_dict(value, "hu_normalisation")


def validate_metadata(metadata: Any, source: str = "model file") -> Dict[str, Any]:
    """Check the metadata's fields and types; raise ModelError naming the first problem."""
    if not isinstance(metadata, dict):
        raise ModelError(f"{source}: metadata is not a JSON object; re-export the model with `lowdose-denoise export`.")
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise ModelError(
            f"{source}: metadata lacks {', '.join(missing)}; re-export the model with `lowdose-denoise export`."
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(metadata[key], kind) or (kind is int and isinstance(metadata[key], bool)):
            raise ModelError(f"{source}: metadata field '{key}' should be {kind.__name__}, got {metadata[key]!r}.")
    if metadata["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{source} uses model format {metadata['format_version']}, newer than this version of "
            f"LowDoseDenoise understands ({FORMAT_VERSION}); update LowDoseDenoise to use it."
        )
    if metadata["format_version"] < 1:
        raise ModelError(f"{source}: invalid format_version {metadata['format_version']}.")
    if metadata["context_slices"] < 0:
        raise ModelError(f"{source}: context_slices must be 0 or more, got {metadata['context_slices']}.")
    HUNormalisation.from_dict(metadata["hu_normalisation"], source)
    return metadata


#: Lines of torch's error texts that say nothing about this file (TorchScript trace headers, advice
#: about checkpoints that this program's messages replace).
_TORCH_BOILERPLATE = (
    "The following operation failed in the TorchScript interpreter",
    "Traceback of TorchScript",
    "This is an internal miniz error",
    "If you are seeing this error, there is a high likelihood",
    "This can happen if the checkpoint was not saved properly",
)


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a sentence end or between words, never mid-word."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    sentence = head.rfind(". ")
    if sentence >= limit // 2:
        return head[: sentence + 1]
    space = head.rfind(" ")
    return (head[:space] if space > 0 else head).rstrip(" ,;:") + "…"


def error_summary(error: BaseException, limit: int = 300) -> str:
    """The useful part of a long error text (torch's load and TorchScript errors), for a one-line message.

    TorchScript errors put the cause last, after a trace of serialized code; loader errors
    put it first and append generic advice.  Kept: the first and the last meaningful line
    (trace lines, code, ``<--- HERE`` markers and the boilerplate sentences dropped), each
    cut at a sentence end or between words, together at most about ``limit`` characters.
    """
    text = str(error).strip()
    meaningful = []
    for raw in text.splitlines():
        line = raw.strip()
        if (not line or raw[:1].isspace() or line.startswith(("File \"", "~", "^")) or "<--- HERE" in line
                or line.startswith(_TORCH_BOILERPLATE)):
            continue
        for phrase in _TORCH_BOILERPLATE:  # boilerplate appended to a meaningful sentence
            at = line.find(phrase)
            if at > 0:
                line = line[:at].rstrip()
        meaningful.append(line)
    if not meaningful:
        return type(error).__name__
    first, last = meaningful[0], meaningful[-1]
    if first == last:
        return _shorten(first, limit)
    half = max(limit // 2, 40)
    return f"{_shorten(first, half)} … {_shorten(last, limit - min(len(first), half))}"


def save_model(model, metadata: Dict[str, Any], path: Union[str, Path]) -> Path:
    """Script ``model`` (a torch.nn.Module) and write it with ``metadata`` inside, atomically."""
    import torch

    validate_metadata(metadata, "metadata to save")
    path = Path(path)
    scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model.eval())
    from .io.outputs import atomic_file  # the one atomic writer (temporary file, fsync, rename, umask)

    with atomic_file(path) as handle:
        torch.jit.save(scripted, str(handle.path), _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
    return path


def load_model(path: Union[str, Path, None] = None, probe: bool = True) -> LoadedModel:
    """Load and validate a model: a file, a bundled model's name, or None for the default model.

    Raises ModelError for a missing file, a file that is not TorchScript, missing or
    malformed metadata, a newer format, or a network whose output shape does not match
    its input in a one-slice probe.
    """
    import torch

    path = resolve_model(path)
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist)"
        raise ModelError(f"Model file {path} not found{hint}; give an existing TorchScript model file.")
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:  # torch raises RuntimeError or ValueError, with long texts
        reason = error_summary(error).rstrip(".")
        raise ModelError(
            f"{path} is not a TorchScript model file ({reason}). Export a trained network with "
            "`lowdose-denoise export CHECKPOINT OUT.pt`, or script it yourself with torch.jit.script "
            "and save it with LowDoseDenoiseLib.modelfile.save_model so the metadata is inside."
        ) from None
    raw = extra[METADATA_FILE]
    if not raw:
        raise ModelError(
            f"{path} is TorchScript but carries no {METADATA_FILE}; save it with "
            "LowDoseDenoiseLib.modelfile.save_model or `lowdose-denoise export`."
        )
    try:
        metadata = json.loads(raw)
    except ValueError as error:
        raise ModelError(f"{path}: {METADATA_FILE} is not valid JSON ({error}).") from None
    validate_metadata(metadata, str(path))
    module.eval()
    loaded = LoadedModel(module=module, metadata=metadata, path=path, sha256=file_sha256(path))
    if probe:
        _probe(loaded)
    return loaded


def _probe(model: LoadedModel) -> None:
    import torch

    size = max(model.min_size, 32)
    channels = 2 * model.context + 1
    try:
        with torch.inference_mode():
            out = model.module(torch.zeros(1, channels, size, size + model.min_size))
    except Exception as error:
        reason = error_summary(error).rstrip(".")
        raise ModelError(
            f"{model.path}: the network fails on a one-slice probe of {channels} channels "
            f"(context_slices={model.context}): {reason}. The metadata may not match the network."
        ) from None
    expected = (1, 1, size, size + model.min_size)
    if tuple(out.shape) != expected:
        raise ModelError(
            f"{model.path}: the network returns shape {tuple(out.shape)} for input "
            f"(1, {channels}, {size}, {size + model.min_size}); expected {expected}. "
            "A denoising model must return one slice of the input's size."
        )


def describe(model: LoadedModel) -> str:
    """Human-readable description for `lowdose-denoise info`."""
    meta = model.metadata
    arch = meta["architecture"]
    norm = meta["hu_normalisation"]
    train = meta["training"]
    lines = [
        f"file:          {model.path}",
        f"sha256:        {model.sha256}",
        f"name:          {meta['name']} {meta['version']}",
        f"description:   {meta['description']}",
        f"licence:       {meta['license']}",
        f"format:        {meta['format_version']}",
        "architecture:  " + ", ".join(f"{k}={v}" for k, v in arch.items()),
        f"context:       {meta['context_slices']} slice(s) each side ({2 * meta['context_slices'] + 1} in)",
        f"HU window:     {norm['clip'][0]:g}..{norm['clip'][1]:g}, (HU - {norm['offset']:g}) / {norm['scale']:g}",
        f"trained:       {'yes' if train.get('trained', True) else 'NO (untrained placeholder)'}",
    ]
    for key, value in train.items():
        if key != "trained":
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
