"""LowDoseDenoise library: the engine behind the `lowdose-denoise` CLI and the 3D Slicer module.

Nothing in this package imports Qt, ctk or ``slicer.app``; torch is imported only
inside the functions that need it, so that Slicer can load the module before torch
is installed.
"""

__version__ = "0.1.0"
