"""Synthetic abdomen phantom: the demo input and the test workhorse.

A noise-free axial slab through the upper abdomen, drawn in millimetres so that any
matrix size and slice count show the same anatomy: body outline with skin, a
subcutaneous fat layer and muscle wall; liver with low-contrast lesions (spheres, 5–20
HU contrast, 4–12 mm radius); enhanced aorta, IVC and portal branches; vertebra with
cortical shell, cancellous bone and posterior elements; ribs; kidneys with cortex and
medulla; spleen; stomach and bowel with air.  Organs carry a few HU of smooth texture,
and structures drift, grow and shrink along z, so neighbouring slices are alike but not
equal.  Edges are partial-volume averaged (2× supersampling).  Outside the body is air.

Values are portal-venous-phase-like HU; the ground truth and label masks come with it,
and :func:`make_low_dose_phantom` adds simulated low-dose noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError

__all__ = ["DEFAULT_FOV_MM", "HU", "Phantom", "make_low_dose_phantom", "make_phantom"]


#: Default field of view (mm) when no spacing is given: a typical abdominal display FOV.
DEFAULT_FOV_MM = 400.0

HU = {
    "air": -1000.0,
    "skin": 30.0,
    "fat": -100.0,
    "visceral_fat": -90.0,
    "muscle": 50.0,
    "liver": 60.0,
    "spleen": 55.0,
    "aorta": 175.0,
    "ivc": 140.0,
    "portal": 160.0,
    "kidney_cortex": 150.0,
    "kidney_medulla": 90.0,
    "renal_pelvis": 10.0,
    "bowel_wall": 45.0,
    "bowel_fluid": 15.0,
    "cortical_bone": 850.0,
    "cancellous_bone": 250.0,
    "disc": 85.0,
    "csf": 15.0,
    "rib": 650.0,
}


@dataclass
class Phantom:
    """A synthetic abdomen: noise-free HU (z, y, x), label masks and geometry.

    ``spacing`` is (x, y, z) in mm as in :class:`~LowDoseDenoiseLib.volume.Volume`.
    ``labels`` holds boolean masks the same shape as ``hu``: body, fat, liver, lesions,
    vessels, bone, kidneys, spleen, bowel_air and noise_roi (a flat disc of liver free of
    lesions and vessels, for noise measurement).  ``lesions`` lists each lesion's
    centre (x, y, z mm), radius (mm) and contrast (HU).
    """

    hu: np.ndarray
    labels: Dict[str, np.ndarray]
    spacing: Tuple[float, float, float]
    lesions: List[Dict[str, object]] = field(default_factory=list)

    def volume(self):
        """The phantom as a :class:`~LowDoseDenoiseLib.volume.Volume` centred on the origin."""
        from ..volume import Volume

        nz, ny, nx = self.hu.shape
        origin = tuple(-0.5 * (n - 1) * s for n, s in zip((nx, ny, nz), self.spacing))
        return Volume(self.hu, spacing=self.spacing, origin=origin, metadata={"source": "phantom"})


def _ellipse(xx, yy, cx, cy, ax, ay, angle_deg=0.0):
    a = math.radians(angle_deg)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(a) + dy * math.sin(a)
    v = -dx * math.sin(a) + dy * math.cos(a)
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def _smooth_field(rng, shape: Tuple[int, int], spacing: float, scale_mm: float) -> np.ndarray:
    """Gaussian random field with unit SD and correlation length ~scale_mm."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0], spacing)[:, None]
    fx = np.fft.rfftfreq(shape[1], spacing)[None, :]
    gain = np.exp(-2 * (math.pi * scale_mm) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain, s=shape)
    return out / (out.std() + 1e-12)


def _check_args(size: int, slices: int, spacing) -> Tuple[int, int, Tuple[float, float, float]]:
    try:
        size, slices = int(size), int(slices)
    except (TypeError, ValueError):
        raise InputError(f"Phantom size and slices must be integers; got {size!r}, {slices!r}.") from None
    if size < 32 or size > 4096:
        raise InputError(f"Phantom size must be between 32 and 4096 pixels; got {size}.")
    if slices < 1 or slices > 2048:
        raise InputError(f"Phantom slice count must be between 1 and 2048; got {slices}.")
    if spacing is None:
        pixel = DEFAULT_FOV_MM / size
        spacing = (pixel, pixel, 2.5)
    values = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"Phantom spacing must be three positive mm values (x, y, z); got {spacing!r}.")
    return size, slices, values


def _lesion_list(rng) -> List[Dict[str, object]]:
    """Liver lesions: (x, y) in the liver, z near the slab centre; sizes and contrasts spread."""
    specs = [(-95.0, -20.0, 12.0, -15.0), (-40.0, -45.0, 9.0, 10.0), (-60.0, 25.0, 6.0, -20.0),
             (-105.0, 30.0, 4.5, 15.0), (-25.0, -5.0, 7.0, -8.0), (-80.0, -55.0, 5.0, 6.0)]  # fmt: skip
    lesions = []
    for x, y, r, c in specs:
        jitter = rng.uniform(-3, 3, size=2)
        lesions.append(
            {
                "centre_mm": (x + jitter[0], y + jitter[1], float(rng.uniform(-2, 2))),
                "radius_mm": r,
                "contrast_hu": c,
            }
        )
    return lesions


def _draw_slice(xx, yy, z: float, rng_offsets: np.ndarray, lesions) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """HU and tissue masks of one slice at height z (mm) on the (supersampled) grid xx, yy."""
    hu = np.full(xx.shape, HU["air"])
    owner = np.zeros(xx.shape, np.int16)  # which structure painted each pixel last
    ids: Dict[str, int] = {}

    def paint(mask, value, name):
        hu[mask] = value
        owner[mask] = ids.setdefault(name, len(ids) + 1)

    masks: Dict[str, np.ndarray] = {}
    breathe = 1.0 + 0.015 * math.sin(z / 23.0)
    ax, ay = 165.0 * breathe, 118.0 * breathe
    angle = np.arctan2(yy - 5.0, xx)
    lobe = 1.0 + 0.025 * np.cos(2 * angle + 0.3) + 0.015 * np.cos(3 * angle + rng_offsets[0])
    rr = np.hypot(xx / ax, (yy - 5.0) / ay) / lobe  # < 1 inside the body

    body = rr <= 1.0
    paint(body, HU["skin"], "skin")
    fat_outer = rr <= 1.0 - 2.5 / ay
    paint(fat_outer, HU["fat"], "fat")
    fat_thickness = 18.0 + 6.0 * np.cos(angle - 1.2) + 2.0 * math.sin(z / 17.0)
    muscle = rr <= 1.0 - fat_thickness / ay
    paint(muscle, HU["muscle"], "muscle")
    cavity = rr <= 1.0 - (fat_thickness + 10.0) / ay
    paint(cavity, HU["visceral_fat"], "visceral_fat")
    masks["body"] = body
    masks["fat"] = fat_outer & ~muscle

    for side in (-1, 1):  # paraspinal muscles
        paint(_ellipse(xx, yy, side * 38.0, 88.0, 27.0, 21.0, side * 10.0) & cavity, HU["muscle"], "muscle")

    # Liver (image left = patient right), shrinking caudally.
    shrink = math.sqrt(max(0.2, 1.0 - (z / 140.0) ** 2))
    liver = _ellipse(xx, yy, -62.0 + 0.05 * z, -8.0, 92.0 * shrink, 78.0 * shrink, -18.0)
    liver &= ~_ellipse(xx, yy, 10.0, -70.0, 40.0, 30.0) & (xx < 30.0 - 0.2 * yy) & cavity
    paint(liver, HU["liver"], "liver")
    masks["liver"] = liver.copy()

    spleen = _ellipse(xx, yy, 102.0, 25.0 + 0.1 * z, 28.0, 42.0 * shrink, 30.0) & cavity
    paint(spleen, HU["spleen"], "spleen")
    masks["spleen"] = spleen

    # Stomach and bowel loops (anterior, image right), with air anteriorly.
    bowel_air = np.zeros(xx.shape, bool)
    loops = [(58.0, -48.0, 40.0, 30.0)]
    for k in range(5):
        phase = rng_offsets[1 + k]
        loops.append((10.0 + 22.0 * k + 6 * math.sin(z / 15 + phase), -70.0 + 12 * math.cos(k + phase),
                      12.0, 11.0))  # fmt: skip
    for cx, cy, bx, by in loops:
        outer = _ellipse(xx, yy, cx, cy, bx, by) & cavity & ~liver
        inner = _ellipse(xx, yy, cx, cy, bx - 3.5, by - 3.5) & outer
        paint(outer, HU["bowel_wall"], "bowel")
        paint(inner, HU["bowel_fluid"], "bowel")
        air = inner & (yy < cy - 0.25 * by)
        paint(air, HU["air"], "bowel_air")
        bowel_air |= air
    masks["bowel_air"] = bowel_air

    # Kidneys, the right one (image left) lower.
    kidneys = np.zeros(xx.shape, bool)
    for cx, cy, ang, zc in ((70.0, 60.0, 25.0, 10.0), (-70.0, 66.0, -25.0, -12.0)):
        scale = 1.0 - ((z - zc) / 70.0) ** 2
        if scale <= 0.05:
            continue
        scale = math.sqrt(scale)
        kidney = _ellipse(xx, yy, cx, cy, 26.0 * scale, 38.0 * scale, ang) & cavity
        paint(kidney, HU["kidney_cortex"], "kidney")
        medulla = _ellipse(xx, yy, cx, cy, 26.0 * scale - 6, 38.0 * scale - 6, ang) & kidney
        paint(medulla, HU["kidney_medulla"], "kidney")
        pelvis = _ellipse(xx, yy, cx - math.copysign(8, cx), cy - 4, 6.0 * scale, 10.0 * scale, ang) & kidney
        paint(pelvis, HU["renal_pelvis"], "kidney")
        kidneys |= kidney
    masks["kidneys"] = kidneys

    # Vessels: aorta, IVC, portal branches in the liver.
    vessels = _ellipse(xx, yy, 12.0, 50.0, 11.0, 11.0)
    paint(vessels, HU["aorta"], "vessel")
    ivc = _ellipse(xx, yy, -24.0, 44.0, 13.0, 9.5)
    paint(ivc, HU["ivc"], "vessel")
    vessels = vessels | ivc
    portal = np.zeros(xx.shape, bool)
    for k, (px, py, pr) in enumerate(((-50.0, 5.0, 6.0), (-80.0, -5.0, 4.0), (-35.0, -25.0, 3.5),
                                      (-110.0, 5.0, 3.0), (-65.0, -35.0, 3.0))):  # fmt: skip
        drift = 0.3 * z * math.cos(rng_offsets[6 + k])
        portal |= _ellipse(xx, yy, px + drift, py + 0.2 * z * math.sin(rng_offsets[6 + k]), pr, pr)
    portal &= liver
    paint(portal, HU["portal"], "portal")
    masks["vessels"] = vessels | portal

    # Lesions: spheres in the liver, avoiding nothing (drawn under the vessels' values).
    lesion_mask = np.zeros(xx.shape, bool)
    for lesion in lesions:
        lx, ly, lz = lesion["centre_mm"]
        r2 = lesion["radius_mm"] ** 2 - (z - lz) ** 2
        if r2 <= 0:
            continue
        disc = _ellipse(xx, yy, lx, ly, math.sqrt(r2), math.sqrt(r2)) & liver & ~portal
        paint(disc, HU["liver"] + lesion["contrast_hu"], "lesion")
        lesion_mask |= disc
    masks["lesions"] = lesion_mask

    # Spine: vertebral body (or disc), canal, posterior elements; ribs.
    bone = np.zeros(xx.shape, bool)
    in_disc = (z % 32.0) < 7.0
    vb_outer = _ellipse(xx, yy, 0.0, 80.0, 21.0, 18.0)
    if in_disc:
        paint(vb_outer, HU["disc"], "disc")
    else:
        paint(vb_outer, HU["cortical_bone"], "bone")
        paint(_ellipse(xx, yy, 0.0, 80.0, 18.5, 15.5), HU["cancellous_bone"], "bone")
        bone |= vb_outer
    arch = _ellipse(xx, yy, 0.0, 110.0, 14.0, 12.0) & (yy > 102.0)
    arch |= _ellipse(xx, yy, 0.0, 128.0, 4.0, 12.0)
    for side in (-1, 1):
        arch |= _ellipse(xx, yy, side * 27.0, 100.0, 13.0, 4.0, side * -15.0)
    arch &= body
    paint(arch, HU["cortical_bone"] - 100.0, "bone")
    canal = _ellipse(xx, yy, 0.0, 106.0, 8.0, 7.5)
    paint(canal, HU["csf"], "csf")
    bone |= arch & ~canal
    rib_ring = 1.0 - (fat_thickness + 5.0) / ay
    for k in range(9):
        phi = math.radians(-20 + 25 * k) + 0.004 * z + 0.05 * math.sin(rng_offsets[11 + k])
        if 0.45 * math.pi < phi % (2 * math.pi) < 0.55 * math.pi:
            continue  # no ribs behind the spine
        rx = rib_ring * ax * math.cos(phi) / (1.0 + 0.0)
        ry = 5.0 + rib_ring * ay * math.sin(phi)
        rib = _ellipse(xx, yy, rx, ry, 6.0, 4.5, math.degrees(phi)) & body
        paint(rib, HU["rib"], "bone")
        bone |= rib
    masks["bone"] = bone

    def owned(*names):
        return np.isin(owner, [ids[n] for n in names if n in ids])

    # Masks of what is visible: later structures (kidney, vessels...) cut earlier ones.
    masks["liver"] = owned("liver", "lesion", "portal")
    masks["liver_parenchyma"] = owned("liver")
    masks["spleen"] = owned("spleen")
    masks["kidneys"] = owned("kidney")
    masks["fat"] = owned("fat")
    masks["lesions"] = owned("lesion")
    masks["vessels"] = owned("vessel", "portal")
    masks["bone"] = owned("bone")
    masks["bowel_air"] = owned("bowel_air")
    return hu, masks


def _texture_amplitude(labels_fraction: Dict[str, np.ndarray]) -> np.ndarray:
    amp = np.zeros_like(labels_fraction["body"])
    amp += 4.0 * labels_fraction["fat"]
    amp += 3.0 * labels_fraction["liver"] + 2.5 * labels_fraction["spleen"] + 4.0 * labels_fraction["kidneys"]
    return amp


def _noise_roi(liver: np.ndarray, clear: np.ndarray, spacing: float) -> np.ndarray:
    """A disc (radius ≈ 12 mm) of liver free of lesions and vessels, near the liver's centre."""
    from .noise import sliding_extreme

    good = (liver & clear).astype(np.uint8)
    for radius_mm in (12.0, 8.0, 5.0, 3.0):
        w = max(3, 2 * int(round(radius_mm / spacing)) + 1)
        if w > min(good.shape):
            continue
        valid: np.ndarray = sliding_extreme(good, w, np.min).astype(bool)
        ys, xs = np.nonzero(valid)
        if len(ys):
            cy, cx = np.nonzero(liver)
            k = int(np.argmin((ys - cy.mean()) ** 2 + (xs - cx.mean()) ** 2))
            yy, xx = np.mgrid[0 : liver.shape[0], 0 : liver.shape[1]]
            h = w // 2
            return (yy - (ys[k] + h)) ** 2 + (xx - (xs[k] + h)) ** 2 <= h * h
    return np.zeros_like(liver)


def make_phantom(
    size: int = 256,
    slices: int = 8,
    spacing: Optional[Tuple[float, float, float]] = None,
    seed: int = 0,
) -> Phantom:
    """A noise-free synthetic abdomen of ``slices`` × ``size`` × ``size`` voxels.

    ``spacing`` is (x, y, z) in mm; by default a 400 mm field of view with 2.5 mm
    slices.  The same ``seed`` gives the same phantom.
    """
    size, slices, spacing = _check_args(size, slices, spacing)
    sx, sy, sz = spacing
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(0, 2 * math.pi, size=32)
    lesions = _lesion_list(rng)
    sup = 2
    coords_x = (np.arange(size * sup) - (size * sup - 1) / 2) * (sx / sup)
    coords_y = (np.arange(size * sup) - (size * sup - 1) / 2) * (sy / sup)
    xx, yy = np.meshgrid(coords_x, coords_y)
    field_a = _smooth_field(rng, (size, size), min(sx, sy), 10.0)
    field_b = _smooth_field(rng, (size, size), min(sx, sy), 10.0)

    hu = np.empty((slices, size, size), np.float32)
    names = ("body", "fat", "liver", "liver_parenchyma", "lesions", "vessels", "bone", "kidneys", "spleen",
             "bowel_air")  # fmt: skip
    labels: Dict[str, np.ndarray] = {name: np.zeros((slices, size, size), bool) for name in names}
    labels["noise_roi"] = np.zeros((slices, size, size), bool)
    for k in range(slices):
        z = (k - (slices - 1) / 2) * sz
        fine, masks = _draw_slice(xx, yy, z, offsets, lesions)
        coarse = fine.reshape(size, sup, size, sup).mean(axis=(1, 3))
        fractions = {n: masks[n].reshape(size, sup, size, sup).mean(axis=(1, 3)) for n in names}
        phase = z / 20.0
        texture = field_a * math.cos(phase) + field_b * math.sin(phase)
        hu[k] = coarse + _texture_amplitude(fractions) * texture
        for name in names:
            labels[name][k] = fractions[name] >= 0.5
        clear = labels["liver_parenchyma"][k]
        # Stay a few mm away from lesions and vessels: grow them by a box of ~6 mm.
        from .noise import sliding_extreme

        grow = max(3, 2 * int(round(3.0 / min(sx, sy))) + 1)
        blocked = np.pad(~clear, grow // 2).astype(np.uint8)
        clear = ~sliding_extreme(blocked, grow, np.max).astype(bool)
        labels["noise_roi"][k] = _noise_roi(labels["liver"][k], clear, min(sx, sy))
    del labels["liver_parenchyma"]
    return Phantom(hu=hu, labels=labels, spacing=(sx, sy, sz), lesions=lesions)


def make_low_dose_phantom(
    size: int = 256,
    slices: int = 8,
    dose_fraction: float = 0.25,
    seed: int = 0,
    spacing: Optional[Tuple[float, float, float]] = None,
    full_dose_noise_hu: Optional[float] = None,
    texture: Optional[float] = None,
) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float, float]]:
    """(clean HU, low-dose HU, spacing): the phantom and a simulated scan of it at ``dose_fraction``.

    The noise-free phantom stands for an infinite-dose image; the low-dose image has
    the total noise of a scan at ``dose_fraction`` of a typical full dose whose soft
    tissue noise is ``full_dose_noise_hu`` (default 10 HU), i.e. about
    ``full_dose_noise_hu / sqrt(dose_fraction)``, with the simulator's streaks and grain
    (``texture`` defaults to the simulator's :data:`DEFAULT_TEXTURE`).
    """
    from .simulate import DEFAULT_TEXTURE, TYPICAL_FULL_DOSE_NOISE_HU, check_dose, simulate_low_dose

    dose = check_dose(dose_fraction)
    phantom = make_phantom(size, slices, spacing, seed)
    sigma = TYPICAL_FULL_DOSE_NOISE_HU if full_dose_noise_hu is None else float(full_dose_noise_hu)
    # Added variance (1/b − 1)·σ² must equal the total σ²/a, so b = a / (1 + a).
    noisy = simulate_low_dose(
        phantom.hu,
        phantom.spacing,
        dose / (1.0 + dose),
        seed=seed,
        texture=DEFAULT_TEXTURE if texture is None else texture,
        input_noise_hu=sigma,
    )
    return phantom.hu, noisy, phantom.spacing
