"""Classical denoisers the model is measured against (and a reader study can include).

One definition of each peer, used by the benchmarks, the held-out evaluation and the
reader study.  Every filter takes a (z, y, x) float HU array and its spacing (x, y, z) mm
and returns float32 HU of the same shape; Gaussian, NLM and BM3D work slice by slice,
diffusion on the block as given.  The noise-aware ones (NLM, BM3D) are given the input's own noise SD
(and BM3D its noise power spectrum), measured by :func:`..quality.noise.estimate_noise_sd`
in flat soft tissue: scikit-image's wavelet ``estimate_sigma`` sees about a tenth of CT
noise, whose grain spans several pixels.

BM3D needs the optional ``bm3d`` package (``pip install -e .[bench]``; its licence is
non-commercial, so it is never a run-time dependency of the tool).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "CLASSICAL_FILTERS",
    "bm3d_available",
    "bm3d_filter",
    "curvature_diffusion",
    "gaussian",
    "nl_means",
    "noise_psd",
]

Filter = Callable[[np.ndarray, Sequence[float]], np.ndarray]


def gaussian(hu: np.ndarray, spacing: Sequence[float], sigma_px: float = 0.8) -> np.ndarray:
    """In-plane Gaussian smoothing, σ in pixels."""
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(hu, np.float32), (0.0, sigma_px, sigma_px)).astype(np.float32)


def curvature_diffusion(iterations: int = 5) -> Filter:
    """SimpleITK curvature anisotropic diffusion (conductance 1, time step 0.0625) on the array as
    given, as Slicer's "Curvature Anisotropic Diffusion" module runs it: a (z, y, x) block diffuses in
    3D, a one-slice block in-plane; ``iterations`` 1 or 5 are the usual peers."""

    def run(hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        import SimpleITK as sitk

        array = np.asarray(hu, np.float32)
        flt = sitk.CurvatureAnisotropicDiffusionImageFilter()
        flt.SetConductanceParameter(1.0)
        flt.SetTimeStep(0.0625)
        flt.SetNumberOfIterations(iterations)
        flt.DebugOff()
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK finds 0.0625 "unstable" below 1 mm; Slicer runs it anyway
        try:
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(tuple(float(s) for s in (list(spacing) + [1.0, 1.0, 1.0])[:3]))
            return sitk.GetArrayFromImage(flt.Execute(image)).astype(np.float32)
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)

    run.__name__ = f"curvature_diffusion_{iterations}"
    return run


def _sigma(hu: np.ndarray) -> float:
    from .noise import estimate_noise_sd

    return float(estimate_noise_sd(hu))


def nl_means(hu: np.ndarray, spacing: Sequence[float], sigma: Optional[float] = None) -> np.ndarray:
    """scikit-image non-local means (fast mode, patch 5, distance 6, h = 0.8σ), σ = the input's
    flat-tissue noise SD unless given."""
    from skimage.restoration import denoise_nl_means

    sigma = _sigma(hu) if sigma is None else sigma
    out = np.empty(np.shape(hu), dtype=np.float32)
    for k, image in enumerate(np.asarray(hu, np.float64)):
        out[k] = denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)
    return out


def noise_psd(hu: np.ndarray, shape: Tuple[int, int], size: int = 32) -> Optional[np.ndarray]:
    """The input's noise PSD on a ``shape`` grid in bm3d's convention (white noise σ: σ²·M·N), or None.

    Measured in flat soft-tissue ROIs (plane-detrended periodograms), turned into the noise
    autocorrelation, zero-padded to the slice size and transformed back.
    """
    from . import noise

    rois, _ = noise.flat_rois(hu, size)
    if len(rois) == 0:
        return None
    # with unit spacing the NPS is the mean periodogram / (size²), zero frequency centred
    periodogram = np.fft.ifftshift(noise.noise_power_spectrum_2d(rois, (1.0, 1.0), detrend="plane"))
    autocorrelation = np.fft.fftshift(np.real(np.fft.ifft2(periodogram)))
    padded = np.zeros(shape)
    cy, cx, h = shape[0] // 2, shape[1] // 2, size // 2
    padded[cy - h : cy + h, cx - h : cx + h] = autocorrelation
    psd = np.clip(np.real(np.fft.fft2(np.fft.ifftshift(padded))), 0.0, None)
    return psd * shape[0] * shape[1]


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def bm3d_filter(hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """BM3D for correlated noise, given the input's measured noise PSD (white σ if none is found)."""
    import bm3d

    if not hasattr(np, "trapz"):  # bm4d (under bm3d) still calls np.trapz, gone in numpy 2.4
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    array = np.asarray(hu, np.float32)
    psd = noise_psd(array, array.shape[-2:])
    sigma = psd if psd is not None else _sigma(array)
    return np.stack([np.asarray(bm3d.bm3d(image.astype(np.float64), sigma_psd=sigma), np.float32) for image in array])


#: The peers by the names tables and the reader study use.
CLASSICAL_FILTERS: Dict[str, Filter] = {
    "gaussian": gaussian,
    "cad1": curvature_diffusion(1),
    "cad": curvature_diffusion(5),
    "nlm": nl_means,
    "bm3d": bm3d_filter,
}
