"""LowDoseDenoise library: the engine behind the `lowdose-denoise` CLI and the 3D Slicer module.

Nothing in this package imports Qt, ctk or ``slicer.app``; torch is imported only
inside the functions that need it, so that Slicer can load the module before torch
is installed.  Importing the package itself imports nothing heavy: the public API
below is loaded on first use.

Public API::

    from LowDoseDenoiseLib import denoise_volume, load_model, list_models, read_volume, write_volume

    model = load_model()                     # the default bundled model (or a NAME or a file)
    volume = read_volume("ct.nrrd")          # a Volume: voxels (z, y, x) + geometry
    hu = denoise_volume(volume.hu(), model, strength=0.8, spacing=volume.spacing)
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Tuple

__version__ = "0.1.0"

#: Public name -> (module, attribute), imported on first access (PEP 562).
_API: Dict[str, Tuple[str, str]] = {
    "denoise_volume": ("engine", "denoise_volume"),
    "list_devices": ("engine", "list_devices"),
    "resolve_device": ("engine", "resolve_device"),
    "Predictor": ("engine", "Predictor"),
    "load_model": ("modelfile", "load_model"),
    "list_models": ("modelfile", "list_models"),
    "LoadedModel": ("modelfile", "LoadedModel"),
    "ModelEntry": ("modelfile", "ModelEntry"),
    "HUNormalisation": ("modelfile", "HUNormalisation"),
    "Volume": ("volume", "Volume"),
    "read_volume": ("io.imagefiles", "read_volume"),
    "write_volume": ("io.imagefiles", "write_volume"),
    "simulate_low_dose": ("quality.simulate", "simulate_low_dose"),
    "estimate_noise_sd": ("quality.noise", "estimate_noise_sd"),
    "LowDoseDenoiseError": ("errors", "LowDoseDenoiseError"),
    "InputError": ("errors", "InputError"),
    "ModelError": ("errors", "ModelError"),
    "DeviceError": ("errors", "DeviceError"),
    "Cancelled": ("errors", "Cancelled"),
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'LowDoseDenoiseLib' has no attribute '{name}'") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_API))
