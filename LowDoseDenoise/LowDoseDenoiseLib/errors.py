"""Exceptions shared by the library, the CLI and the Slicer module.

Every message is meant for the person at the screen: it says what is wrong and what
to do about it.  The CLI maps :class:`InputError` (and its :class:`OutputError`) and :class:`ModelError` to exit
code 2 and :class:`Cancelled` to 130.
"""

__all__ = ["Cancelled", "DeviceError", "InputError", "LowDoseDenoiseError", "ModelError", "OutputError"]


class LowDoseDenoiseError(Exception):
    """Base class of the errors this library raises on purpose."""


class InputError(LowDoseDenoiseError, ValueError):
    """Bad input: a file, volume, option or value the user can fix."""


class ModelError(LowDoseDenoiseError):
    """A model file that is missing, not TorchScript, or carries bad metadata."""


class DeviceError(InputError):
    """A compute device that was asked for but is not available."""


class Cancelled(LowDoseDenoiseError):
    """The user cancelled a run; nothing was written."""


class OutputError(InputError):
    """An output that could not be written (disk full, permission); nothing was left behind."""
