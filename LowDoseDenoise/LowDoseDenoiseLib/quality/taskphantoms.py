"""Task-based image-quality phantoms: low-contrast detectability and resolution.

PSNR on anatomy says little about the two things a radiologist checks first in a learned
denoiser: does a small, faint lesion survive, and does fine detail survive.  This module
makes the two phantoms and the measures that answer those questions, as CT physics
groups do (MITA CCT189-style low-contrast phantom; bar-pattern / star / texture
resolution inserts), on noise from the project's own simulator.

Measures (all by *paired signal injection*: the same noise realisation is added to the
background with and without the signal, so the noise cancels in the difference for a
linear method and what remains is the signal the method let through):

* :func:`contrast_ratio` — least-squares gain of ``method(bg + s + n) − method(bg + n)``
  on the true signal ``s`` inside the insert (1.00 = identity, 0.5 = half the contrast
  erased).
* :func:`npw_detectability` — non-prewhitening matched-filter observer with the known
  signal template: d′ and AUC = Φ(d′/√2) from signal-present vs signal-absent images.
* :func:`pattern_energy_kept` — the fraction of the true pattern's spectral content in a
  band (default 0.1–0.5 cycles/pixel) that survives, in phase:
  Σ Re(D·T*) / Σ |T|² over the band (identity = 1; a linear filter with transfer H gives
  Σ H|T|² / Σ |T|², which the tests check for a Gaussian).

No torch here: methods are passed as callables on (z, y, x) float32 HU arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import erf, sqrt
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

__all__ = [
    "LCD_INSERTS",
    "TaskPhantom",
    "contrast_ratio",
    "evaluate_method",
    "lcd_phantom",
    "noisy_pairs",
    "npw_detectability",
    "pattern_energy_kept",
    "prewhitened_detectability",
    "resolution_phantom",
]

#: MITA CCT189-like inserts: (diameter mm, contrast HU), in the order of the standard phantom.
LCD_INSERTS: Tuple[Tuple[float, float], ...] = ((3.0, 14.0), (5.0, 7.0), (7.0, 5.0), (10.0, 3.0))
#: Background of the water-equivalent cylinder, HU (soft-tissue-like, as the MITA phantom).
CYLINDER_HU = 40.0
#: Nominal noise of the full-dose phantom scan (HU) used to define the dose fraction: the
#: simulated scan at dose ``a`` has noise ``FULL_DOSE_NOISE_HU / sqrt(a)``.
FULL_DOSE_NOISE_HU = 10.0

Method = Callable[[np.ndarray], np.ndarray]


@dataclass
class Insert:
    """One signal of a task phantom: its name, true signal image (HU above background) and ROI."""

    name: str
    signal: np.ndarray  #: (y, x) true signal, HU relative to the background
    roi: Tuple[slice, slice]  #: where the observer looks (a square around the insert)
    diameter_mm: float = 0.0
    contrast_hu: float = 0.0
    band: Optional[Tuple[float, float]] = None  #: resolution patterns: cycles/pixel band


@dataclass
class TaskPhantom:
    """A noise-free background slice plus separately known signals (same shape)."""

    background: np.ndarray  #: (y, x) HU
    inserts: List[Insert]
    spacing: Tuple[float, float]
    name: str = ""
    meta: Dict[str, object] = field(default_factory=dict)

    def with_signals(self) -> np.ndarray:
        out = self.background.copy()
        for insert in self.inserts:
            out += insert.signal
        return out


def _grid(size: int, pixel_mm: float) -> Tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) - (size - 1) / 2.0) * pixel_mm
    return np.meshgrid(c, c, indexing="xy")


def _soft_disc(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, radius: float, pixel_mm: float) -> np.ndarray:
    """A disc with a partial-volume edge about one pixel wide (as a reconstructed insert)."""
    r = np.hypot(xx - cx, yy - cy)
    return np.clip(0.5 - (r - radius) / pixel_mm, 0.0, 1.0)


def _body(size: int, pixel_mm: float, diameter_mm: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    xx, yy = _grid(size, pixel_mm)
    if diameter_mm > size * pixel_mm:
        raise InputError(f"A {diameter_mm:g} mm cylinder does not fit {size} pixels of {pixel_mm:g} mm.")
    cylinder = _soft_disc(xx, yy, 0.0, 0.0, diameter_mm / 2.0, pixel_mm)
    background = -1000.0 + (1000.0 + CYLINDER_HU) * cylinder
    return background.astype(np.float32), xx, yy


def lcd_phantom(size: int = 320, pixel_mm: float = 0.8, diameter_mm: float = 200.0,
                inserts: Sequence[Tuple[float, float]] = LCD_INSERTS, ring_mm: float = 50.0) -> TaskPhantom:
    """A MITA-LCD-like phantom: a 20 cm water-equivalent cylinder with low-contrast discs.

    ``inserts`` are (diameter mm, contrast HU) placed on a ring of radius ``ring_mm``; the
    observer ROI of each is a square of twice its diameter (at least 15 pixels).
    """
    if pixel_mm <= 0 or size < 32:
        raise InputError("The LCD phantom needs a positive pixel size and at least 32 pixels.")
    background, xx, yy = _body(size, pixel_mm, diameter_mm)
    out = []
    for i, (diameter, contrast) in enumerate(inserts):
        angle = 2 * np.pi * i / len(inserts) + np.pi / 4
        cx, cy = ring_mm * np.cos(angle), ring_mm * np.sin(angle)
        signal = (contrast * _soft_disc(xx, yy, cx, cy, diameter / 2.0, pixel_mm)).astype(np.float32)
        half = max(7, int(round(diameter / pixel_mm)))
        px = int(round(cx / pixel_mm + (size - 1) / 2.0))
        py = int(round(cy / pixel_mm + (size - 1) / 2.0))
        roi = (slice(py - half, py + half + 1), slice(px - half, px + half + 1))
        out.append(Insert(f"{diameter:g} mm / {contrast:g} HU", signal, roi, diameter, contrast))
    return TaskPhantom(background, out, (pixel_mm, pixel_mm), "lcd", {"diameter_mm": diameter_mm})


def resolution_phantom(size: int = 384, pixel_mm: float = 0.68, contrast_hu: float = 100.0,
                       diameter_mm: Optional[float] = None, seed: int = 0) -> TaskPhantom:
    """Fine-detail inserts in a soft-tissue cylinder: bar patterns (periods 2.5–8 pixels), a
    Siemens star and a fine random texture, each of ``contrast_hu`` (a 3D-printed pattern
    of a resolution phantom).  Each insert's band is 0.1–0.5 cycles/pixel.  The cylinder is
    ``diameter_mm`` across (default: 90% of the field of view, at most 240 mm).
    """
    if pixel_mm <= 0 or size < 128:
        raise InputError("The resolution phantom needs a positive pixel size and at least 128 pixels.")
    if diameter_mm is None:
        diameter_mm = min(240.0, 0.9 * size * pixel_mm)
    if diameter_mm < 150.0:
        raise InputError(f"The resolution patterns need a cylinder of at least 150 mm; {size} pixels of "
                         f"{pixel_mm:g} mm give {size * pixel_mm:g} mm. Use more pixels or larger ones.")
    background, xx, yy = _body(size, pixel_mm, diameter_mm)
    rng = np.random.default_rng(seed)
    inserts = []
    box = int(round(28.0 / pixel_mm)) // 2 * 2  # a 28 mm square region per pattern
    centres_mm = [(-45.0, -45.0), (45.0, -45.0), (-45.0, 45.0), (45.0, 45.0)]
    yy_px, xx_px = np.mgrid[0:size, 0:size]

    def region(cx_mm: float, cy_mm: float) -> Tuple[slice, slice]:
        px = int(round(cx_mm / pixel_mm + (size - 1) / 2.0))
        py = int(round(cy_mm / pixel_mm + (size - 1) / 2.0))
        return (slice(py - box // 2, py + box // 2), slice(px - box // 2, px + box // 2))

    # bar patterns: four groups of periods (pixels) side by side, vertical bars
    roi = region(*centres_mm[0])
    signal = np.zeros_like(background)
    sub = signal[roi]
    periods = (2.5, 3.3, 5.0, 8.0)
    width = sub.shape[1] // len(periods)
    for j, period in enumerate(periods):
        cols = np.arange(width)
        bars = (np.sin(2 * np.pi * cols / period) > 0).astype(np.float32)
        sub[:, j * width:(j + 1) * width] = bars[None, :]
    signal[roi] = sub * contrast_hu
    inserts.append(Insert("bar patterns", signal.astype(np.float32), roi, contrast_hu=contrast_hu, band=(0.1, 0.5)))

    # Siemens star: 24 spokes
    roi = region(*centres_mm[1])
    cy = (roi[0].start + roi[0].stop - 1) / 2.0
    cx = (roi[1].start + roi[1].stop - 1) / 2.0
    theta = np.arctan2(yy_px - cy, xx_px - cx)
    radius = np.hypot(yy_px - cy, xx_px - cx)
    star = ((np.sin(24 * theta) > 0) & (radius < box / 2.0 - 1)).astype(np.float32)
    signal = np.zeros_like(background)
    signal[roi] = star[roi] * contrast_hu
    inserts.append(Insert("Siemens star", signal, roi, contrast_hu=contrast_hu, band=(0.1, 0.5)))

    # fine random texture: binary white pattern of 1-pixel cells (the hardest: no structure to lean on)
    for name, centre, cell in (("fine random texture", centres_mm[2], 1), ("coarse random texture", centres_mm[3], 2)):
        roi = region(*centre)
        h, w = roi[0].stop - roi[0].start, roi[1].stop - roi[1].start
        cells = rng.random((h // cell + 1, w // cell + 1)) > 0.5
        pattern = np.kron(cells, np.ones((cell, cell)))[:h, :w].astype(np.float32)
        signal = np.zeros_like(background)
        signal[roi] = (pattern - pattern.mean()) * contrast_hu
        inserts.append(Insert(name, signal, roi, contrast_hu=contrast_hu, band=(0.1, 0.5)))
    return TaskPhantom(background, inserts, (pixel_mm, pixel_mm), "resolution", {"diameter_mm": diameter_mm})


def noisy_pairs(phantom: TaskPhantom, dose_fraction: float, realisations: int, seed: int = 0,
                texture: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Signal-absent and signal-present noisy images with *identical* noise, (R, y, x) each.

    The noise is the project's projection-domain simulator (quality.simulate) on the
    background, scaled so the scan at ``dose_fraction`` has ``FULL_DOSE_NOISE_HU/sqrt(a)``
    of noise in the cylinder; the inserts are too faint (or too small) to change the noise.
    """
    from .simulate import noise_field

    if not 0 < dose_fraction <= 1:
        raise InputError(f"Dose fraction must be in (0, 1], got {dose_fraction}.")
    if realisations < 2:
        raise InputError("Task measures need at least 2 noise realisations.")
    stack = np.repeat(phantom.background[None], realisations, axis=0)
    fields = np.asarray(noise_field(stack, phantom.spacing, texture=texture, photons=1.0, seed=seed), dtype=np.float32)
    inside = phantom.background > -500
    target_sd = FULL_DOSE_NOISE_HU / sqrt(dose_fraction)
    fields *= target_sd / max(float(fields[:, inside].std()), 1e-6)
    absent = stack + fields
    present = absent + (phantom.with_signals() - phantom.background)[None]
    return absent.astype(np.float32), present.astype(np.float32)


def _apply(method: Method, images: np.ndarray) -> np.ndarray:
    out = np.asarray(method(images.astype(np.float32)), dtype=np.float64)
    if out.shape != images.shape:
        raise InputError(f"The method returned shape {out.shape} for input {images.shape}.")
    return out


def contrast_ratio(insert: Insert, absent_out: np.ndarray, present_out: np.ndarray) -> float:
    """Least-squares gain of the mean paired difference on the true signal inside the ROI."""
    diff = (present_out - absent_out).mean(axis=0)[insert.roi]
    template: np.ndarray = insert.signal[insert.roi].astype(np.float64)
    return float((diff * template).sum() / max((template * template).sum(), 1e-12))


def npw_detectability(insert: Insert, absent_out: np.ndarray, present_out: np.ndarray) -> Tuple[float, float]:
    """Non-prewhitening matched filter with the known signal template: (d′, AUC).

    The test statistic of image g is t = Σ_ROI s·g; d′ = (⟨t⟩present − ⟨t⟩absent) /
    sqrt((var_present + var_absent)/2), AUC = Φ(d′/√2).
    """
    template: np.ndarray = insert.signal[insert.roi].astype(np.float64)
    t_absent = (absent_out[:, insert.roi[0], insert.roi[1]] * template).sum(axis=(1, 2))
    t_present = (present_out[:, insert.roi[0], insert.roi[1]] * template).sum(axis=(1, 2))
    spread = sqrt(max(0.5 * (t_absent.var(ddof=1) + t_present.var(ddof=1)), 1e-12))
    d = float((t_present.mean() - t_absent.mean()) / spread)
    return d, float(0.5 * (1.0 + erf(d / 2.0)))


#: tiles of noise nearest an insert that estimate its noise spectrum (prewhitened_detectability)
NEAREST_TILES = 24


def prewhitened_detectability(insert: Insert, absent: np.ndarray, flat: np.ndarray) -> float:
    """The Hotelling (prewhitening matched filter) d′ of the known signal on the *input* images: the
    ceiling of every method's NPW d′ (:func:`npw_detectability`) at any contrast it keeps.

    Why it bounds them: for Gaussian noise n of covariance Σ, Stein's lemma makes the output's
    template statistic t = sᵀG(x+n) covary with the prewhitened noise wᵀn (w = Σ⁻¹s) by
    sᵀE[J]s = c·|s|², c the kept contrast; by Cauchy–Schwarz var t ≥ c²|s|⁴ / sᵀΣ⁻¹s, so the NPW
    d′ = c|s|²/sd t ≤ √(sᵀΣ⁻¹s), whatever G does (for small signals).  With white noise that means
    a method keeping a share c of a faint lesion keeps at least c² of the noise that looks like it.

    Estimated with the noise taken as stationary: the mean periodogram of ROI-sized tiles of the
    signal-absent images' noise (each minus the realisations' mean, rescaled for it) inside
    ``flat``, the :data:`NEAREST_TILES` nearest the insert, and d′² = Σ_f |S(f)|² / E|N(f)|² over
    the tile's frequencies (circulant approximation).
    """
    template: np.ndarray = insert.signal[insert.roi].astype(np.float64)
    h, w = template.shape
    images = np.asarray(absent, dtype=np.float64)
    count = images.shape[0]
    if count < 2:
        raise InputError("The prewhitened d′ needs at least 2 noise realisations.")
    noise = (images - images.mean(axis=0)) * np.sqrt(count / (count - 1.0))
    centre = ((insert.roi[0].start + insert.roi[0].stop) / 2.0, (insert.roi[1].start + insert.roi[1].stop) / 2.0)
    corners = []
    for top in range(0, flat.shape[0] - h + 1, max(1, h // 2)):
        for left in range(0, flat.shape[1] - w + 1, max(1, w // 2)):
            if flat[top : top + h, left : left + w].all():
                corners.append((float(np.hypot(top + h / 2.0 - centre[0], left + w / 2.0 - centre[1])), top, left))
    if not corners:
        raise InputError(f"No flat region of {h}×{w} pixels to measure the noise spectrum for '{insert.name}'.")
    # CT noise is not stationary over a cylinder (higher at its centre): the tiles nearest the insert
    nearest = sorted(corners)[:NEAREST_TILES]
    tiles = np.concatenate([noise[:, top : top + h, left : left + w] for _, top, left in nearest], axis=0)
    power = (np.abs(np.fft.fft2(tiles)) ** 2).mean(axis=0)
    signal_power = np.abs(np.fft.fft2(template)) ** 2
    usable = power > 1e-9 * power.max()
    return float(np.sqrt((signal_power[usable] / power[usable]).sum()))


def pattern_energy_kept(insert: Insert, absent_out: np.ndarray, present_out: np.ndarray) -> float:
    """Share of the true pattern's content in its band that survives, in phase (identity = 1)."""
    band = insert.band or (0.1, 0.5)
    template: np.ndarray = insert.signal[insert.roi].astype(np.float64)
    diff = (present_out - absent_out)[:, insert.roi[0], insert.roi[1]]
    h, w = template.shape
    window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    ft = np.fft.fft2(template * window)
    fd = np.fft.fft2(diff * window[None], axes=(1, 2)).mean(axis=0)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fx, fy)
    mask = (radius >= band[0]) & (radius <= band[1])
    denominator = float((np.abs(ft[mask]) ** 2).sum())
    if denominator <= 0:
        raise InputError(f"The pattern '{insert.name}' has no content in {band[0]}–{band[1]} cycles/pixel.")
    return float(np.real(fd[mask] * np.conj(ft[mask])).sum() / denominator)


def evaluate_method(phantom: TaskPhantom, method: Method, absent: np.ndarray, present: np.ndarray,
                    ) -> Dict[str, Dict[str, float]]:
    """Every task measure of one method on one phantom's noisy pairs, per insert.

    Also the noise SD of the processed signal-absent images in the flat cylinder (away
    from the inserts), so a method cannot look good by removing signal and noise alike
    without it showing, and for every disc the input's prewhitened d′ (the ceiling of any
    method's NPW d′, :func:`prewhitened_detectability`).
    """
    absent_out = _apply(method, absent)
    present_out = _apply(method, present)
    flat = (phantom.background > CYLINDER_HU - 1) & (np.abs(phantom.with_signals() - phantom.background) < 1e-3)
    for insert in phantom.inserts:  # keep noise ROIs away from the inserts' surroundings
        pad = 10
        ys, xs = insert.roi
        flat[max(0, ys.start - pad):ys.stop + pad, max(0, xs.start - pad):xs.stop + pad] = False
    noise = float(np.std(absent_out[:, flat] - absent_out[:, flat].mean(axis=0)))
    results: Dict[str, Dict[str, float]] = {}
    ceilings: Dict[str, float] = {}
    for insert in phantom.inserts:
        row: Dict[str, float] = {"noise_sd": noise}
        if insert.band is None:
            row["contrast_ratio"] = contrast_ratio(insert, absent_out, present_out)
            row["d_prime"], row["auc"] = npw_detectability(insert, absent_out, present_out)
            if insert.name not in ceilings:
                ceilings[insert.name] = prewhitened_detectability(insert, absent, flat)
            row["d_prime_ceiling"] = ceilings[insert.name]
        else:
            row["energy_kept"] = pattern_energy_kept(insert, absent_out, present_out)
        results[insert.name] = row
    return results
