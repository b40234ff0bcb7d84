"""The model menu of the Slicer panel: every bundled model, and a user's own model file.

Read from the model files' metadata without torch (``modelfile.read_metadata`` reads the
TorchScript archive as a zip), so the menu fills instantly on the GUI thread.  Nothing is
cached: a file that failed once is read again the next time, so a fixed file shows as
fixed without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .. import modelfile

__all__ = ["MODEL_FILE_KEY", "ModelChoice", "model_card_path", "model_choices", "model_details"]

#: Menu key of the "own model file" entry (a bundled model's key is its name).
MODEL_FILE_KEY = "file"


@dataclass
class ModelChoice:
    """One entry of the model menu: ``key`` goes into the parameter node."""

    key: str
    label: str
    details: str
    path: Optional[Path]
    default: bool = False


def model_choices() -> List[ModelChoice]:
    """The bundled models (the default first), then "Model file…"; never raises."""
    choices: List[ModelChoice] = []
    lister = getattr(modelfile, "list_models", None)
    if lister is not None:
        try:
            for entry in lister():
                if entry.problem:
                    continue
                label = f"{entry.name} {entry.version}" + (" (default)" if entry.default else "")
                choices.append(ModelChoice(entry.name, label, entry.line(), Path(entry.path), bool(entry.default)))
        except modelfile.ModelError:
            choices = []
    if not choices:  # a library without the registry: the files in Resources/Models
        finder = getattr(modelfile, "available_models", None)
        for index, path in enumerate(finder() if finder is not None else []):
            choices.append(ModelChoice(path.stem, path.stem, model_details(path), path, index == 0))
    choices.append(ModelChoice(MODEL_FILE_KEY, "Model file…", "A TorchScript model written by `lowdose-denoise export`.", None))
    return choices



def model_details(path: Optional[Path]) -> str:
    """Name, version, training dose and pixel range of a model file, or why it cannot be used."""
    if path is None or str(path) in ("", "."):
        return "Choose a model file (.pt)."
    path = Path(path)
    if not path.is_file():
        return f"Model file not found: {path}"
    reader = getattr(modelfile, "read_metadata", None)
    if reader is None:
        return path.name
    try:
        meta = reader(path)
    except modelfile.ModelError as error:
        return f"Cannot use this model: {error}"
    training = meta.get("training", {})
    parts = [f"{meta['name']} {meta['version']}"]
    if not training.get("trained", True):
        parts.append("UNTRAINED")
    dose = training.get("dose_fraction")
    if dose:
        parts.append(f"trained on {dose[0]:.0%}–{dose[1]:.0%} dose")
    pixels = training.get("pixel_size_mm")
    if pixels:
        parts.append(f"{pixels[0]:.2f}–{pixels[1]:.2f} mm pixels")
    summary = meta.get("summary") or meta.get("description") or ""
    return ", ".join(parts) + (f". {summary}" if summary else "")


def model_card_path() -> Optional[Path]:
    """The model card (Resources/Models/README.md) when it is installed."""
    path = Path(modelfile.MODELS_DIR) / "README.md"
    return path if path.is_file() else None
