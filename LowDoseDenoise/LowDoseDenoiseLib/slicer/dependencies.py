"""Python packages the Slicer module needs, checked without importing them; device listing.

Opening the module panel must neither import torch (seconds of freezing on a healthy
install; a DLL error on a broken one would stop the panel from loading) nor query
CUDA.  :func:`torch_status` reads the installed version from the package metadata, as
PyTorchUtils does before it imports anything.  torch is imported only when it is needed
(:func:`torch_environment`, :func:`device_choices`), guarded, so a broken install
becomes a message and not a traceback.

Installation itself goes through the PyTorch extension (``PyTorchUtils``), never a raw
``pip install torch``; :func:`install_list` is what the one confirmation dialog shows:
PyTorchUtils installs torch and torchvision with light-the-torch, which it installs
first.  Nothing here imports Qt or ``slicer``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = [
    "MINIMUM_TORCH",
    "TorchEnvironment",
    "TorchStatus",
    "device_choices",
    "install_list",
    "package_version",
    "torch_environment",
    "torch_status",
    "version_tuple",
]

#: Oldest torch the engine is tested with (CUDA out-of-memory caught as torch.cuda.OutOfMemoryError).
MINIMUM_TORCH = "2.1"
#: What PyTorchUtils.installTorch installs, with light-the-torch (which picks the CUDA build).
TORCH_PACKAGES = ("torch", "torchvision")
INSTALLER_PACKAGE = "light-the-torch>=0.5"


def package_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name`` from its metadata, or None; imports nothing."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:  # broken metadata of a half-removed install
        return None


def version_tuple(version: str) -> Tuple[int, ...]:
    """(2, 5, 1) from "2.5.1+cu121" or "2.6.0.dev20241001"; leading numeric parts only."""
    numbers = []
    for part in version.split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


@dataclass
class TorchStatus:
    """Whether torch is installed and recent enough, from package metadata only."""

    version: Optional[str]
    minimum: str = MINIMUM_TORCH

    @property
    def installed(self) -> bool:
        return self.version is not None

    @property
    def recent_enough(self) -> bool:
        return self.installed and version_tuple(str(self.version)) >= version_tuple(self.minimum)

    def problem(self) -> str:
        """What stops denoising, with what to do; "" when torch is fine."""
        if not self.installed:
            return f"PyTorch is not installed; it is installed (version {self.minimum} or newer) on the first Apply."
        if not self.recent_enough:
            return (
                f"PyTorch {self.version} is installed, but this module needs {self.minimum} or newer. "
                "Update it in the PyTorch Utils module (or let this module reinstall it), then restart Slicer."
            )
        return ""


def torch_status(minimum: str = MINIMUM_TORCH) -> TorchStatus:
    """The installed torch version (package metadata, no import) and the requirement."""
    version = package_version("torch")
    if version is not None and importlib.util.find_spec("torch") is None:
        version = None  # metadata left behind by an uninstall
    return TorchStatus(version=version, minimum=minimum)


def install_list(status: TorchStatus) -> List[str]:
    """Every package the installation will add, one line each, for the confirmation dialog."""
    lines = [
        f"torch {'>=' + status.minimum} (CPU or CUDA build chosen for this computer)",
        "torchvision (installed with torch by the PyTorch extension)",
    ]
    if package_version("light-the-torch") is None:
        lines.insert(0, f"{INSTALLER_PACKAGE} (the PyTorch extension's installer)")
    return lines


@dataclass
class TorchEnvironment:
    """torch, CUDA and GPU facts for the panel's "About this computer" box."""

    torch_version: Optional[str] = None
    cuda_build: Optional[str] = None
    gpus: List[str] = field(default_factory=list)  # "NVIDIA RTX A5000, 24 GB"
    mps: bool = False
    error: str = ""

    def lines(self) -> List[str]:
        """Human-readable lines, with an upgrade hint where one applies."""
        if self.error:
            return [self.error]
        if self.torch_version is None:
            return ["PyTorch: not installed (installed on the first Apply)."]
        lines = [f"PyTorch {self.torch_version}" + (f", CUDA {self.cuda_build} build" if self.cuda_build else ", CPU build")]
        lines += [f"GPU {i}: {name}" for i, name in enumerate(self.gpus)] or ["No CUDA GPU found: runs on the CPU."]
        if self.mps:
            lines.append("Apple GPU (MPS) available.")
        if version_tuple(self.torch_version) < version_tuple(MINIMUM_TORCH):
            lines.append(f"Upgrade: this module needs PyTorch {MINIMUM_TORCH} or newer (PyTorch Utils module).")
        elif self.cuda_build is None and not self.mps:
            lines.append(
                "A CUDA build of PyTorch would be 10-50x faster on an NVIDIA GPU; reinstall PyTorch in the "
                "PyTorch Utils module if this computer has one."
            )
        return lines


def torch_environment() -> TorchEnvironment:
    """Import torch (guarded) and describe it; never raises, a broken install becomes ``error``."""
    status = torch_status()
    if not status.installed:
        return TorchEnvironment()
    try:
        import torch

        env = TorchEnvironment(torch_version=str(torch.__version__), cuda_build=getattr(torch.version, "cuda", None))
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                env.gpus.append(f"{props.name}, {props.total_memory / 2**30:.0f} GB")
        mps = getattr(torch.backends, "mps", None)
        env.mps = bool(mps is not None and mps.is_available())
        return env
    except Exception as error:  # OSError for a missing DLL, ImportError for a half install, ...
        return TorchEnvironment(
            torch_version=status.version,
            error=(
                f"PyTorch {status.version} is installed but cannot be loaded ({type(error).__name__}: {error}). "
                "Reinstall it in the PyTorch Utils module, then restart Slicer."
            ),
        )


def device_choices() -> List[Tuple[str, str]]:
    """(device id, label) for the device menu: auto, CPU, each GPU (imports torch, guarded).

    The engine's one device lister when it has one, else the same list built here;
    never raises.
    """
    from .. import engine

    lister = getattr(engine, "list_devices", None)
    if lister is not None:
        return list(lister())
    choices = [("auto", "Automatic (GPU if available)"), ("cpu", "CPU")]
    env = torch_environment()
    choices += [(f"cuda:{i}", f"GPU {i}: {name}") for i, name in enumerate(env.gpus)]
    if env.mps:
        choices.append(("mps", "Apple GPU (MPS)"))
    return choices
