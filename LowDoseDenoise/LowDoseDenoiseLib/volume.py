"""The Volume value type every part of the library shares: a voxel array plus its geometry.

It lives in a module of its own (no I/O, no torch) so that readers, writers, the engine,
the quality code and the MRML logic can all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # the type only: volume.py imports no I/O module at run time
    from numpy.typing import DTypeLike

    from .io.dicomsource import DicomSource

__all__ = ["Volume", "as_xyz", "cast_like"]


@dataclass
class Volume:
    """A scalar CT volume: voxels in (z, y, x) order and ITK (LPS) geometry.

    ``voxels`` keeps the stored pixel type (int16 stays int16); use :meth:`hu` for
    float HU.  ``spacing`` and ``origin`` are (x, y, z) in mm, ``direction`` is the
    3×3 direction-cosine matrix (columns are the image axes), as SimpleITK reports.
    """

    voxels: np.ndarray
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    #: Free-form source information ("source": where it was read from, "notes": reader warnings).
    metadata: Dict[str, Any] = field(default_factory=dict)
    #: The DICOM series the voxels were read from (None for image files): what the
    #: derived-series writer needs to join its patient, study and frame of reference.
    dicom: Optional[DicomSource] = None

    @property
    def pixel_type(self) -> np.dtype:
        return self.voxels.dtype

    def hu(self) -> np.ndarray:
        """The voxels as float32 HU (a copy only when the type differs)."""
        return np.asarray(self.voxels, dtype=np.float32)

    def with_voxels(self, voxels: np.ndarray) -> Volume:
        """Same geometry and metadata, new voxels (shape must match)."""
        if voxels.shape != self.voxels.shape:
            raise ValueError(f"shape {voxels.shape} does not match the volume's {self.voxels.shape}")
        return replace(self, voxels=voxels, metadata=dict(self.metadata))


def as_xyz(values: Sequence[float]) -> Tuple[float, float, float]:
    """Three plain floats, e.g. a spacing or origin from SimpleITK, VTK or DICOM (exactly three values)."""
    x, y, z = values
    return (float(x), float(y), float(z))


def cast_like(hu: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """Float HU back to ``dtype``: rounded and clipped to its range for integer types."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(hu), info.min, info.max).astype(dtype)
    return hu.astype(dtype, copy=False)
