"""Training data: CT series, a decoded cache, held-out blocks, noise banks and patch sampling.

The pipeline, in the order data flows:

1. :func:`load_series` reads a volume file or DICOM series folder once and caches the
   decoded HU as ``.npy`` under ``~/.cache/lowdose-denoise/data`` (outside the work tree),
   so training never decodes JPEG again.  An optional label map (the liver) is resampled
   onto the CT by physical coordinates.
2. :func:`split_blocks` splits one series into a contiguous training block and a
   contiguous held-out block with a gap between them (never random slices: their
   neighbours would leak into training through the 2.5D context).
3. :class:`NoiseBank` holds unit-SD noise fields per training slice and texture, made
   by :func:`noise_fields` — the one function that turns a clean slice into low-dose
   noise (the projection-domain simulator, or a measured scanner texture).  Scaling by the wanted SD happens per sample, so one bank
   serves every dose.
4. :class:`PatchSampler` draws seeded patches: 2k+1 slice context, copied-neighbour
   samples (every channel = the centre slice, as the engine feeds single slices and
   volume ends), air skipping, flips and 90° rotations, and in-plane rescaling to a
   random pixel size.  The batch of step ``s`` depends only on ``(seed, s, rank)``, so
   resuming reproduces the data stream exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..volume import as_xyz

__all__ = [
    "AIR_HU",
    "DEFAULT_CACHE",
    "PADDING_HU",
    "SHARED_DATA_ENV",
    "TEXTURES",
    "CTSeries",
    "NoiseBank",
    "PatchConfig",
    "PatchSampler",
    "SliceSource",
    "check_hu_like",
    "context_indices",
    "inject_details",
    "load_folder",
    "load_series",
    "measured_texture_filter",
    "noise_fields",
    "own_noise_fields",
    "series_noise_sd",
    "series_texture_filter",
    "shared_data_root",
    "split_blocks",
    "stationary_noise",
]


#: Environment variable that points at the shared real-CT folder.
SHARED_DATA_ENV = "LOWDOSE_SHARED_DATA"
#: Default cache folder for decoded series.
DEFAULT_CACHE = Path.home() / ".cache" / "lowdose-denoise" / "data"
#: HU below this are padding outside the reconstruction circle (e.g. −3024) and set to air.
PADDING_HU = -1500.0
AIR_HU = -1000.0


def shared_data_root(configured: Optional[str] = None, repo_root: Optional[Path] = None) -> Path:
    """The shared real-CT folder: $LOWDOSE_SHARED_DATA, else ``configured``, else ../shared/data."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    root = repo_root or Path(__file__).resolve().parents[3]
    return (root / ".." / "shared" / "data").resolve()


@dataclass
class CTSeries:
    """A decoded CT series: float32 HU (z, y, x), spacing (x, y, z) mm, optional label map."""

    name: str
    hu: np.ndarray
    spacing: Tuple[float, float, float]
    labels: Optional[np.ndarray] = None
    source: str = ""

    @property
    def pixel_size(self) -> float:
        """Mean in-plane pixel size in mm."""
        return float(self.spacing[0] + self.spacing[1]) / 2.0

    def liver_mask(self, label: int = 5) -> Optional[np.ndarray]:
        return None if self.labels is None else self.labels == label


def check_hu_like(hu: np.ndarray, source: str) -> None:
    """Refuse arrays that do not look like CT in HU (an 8-bit image, a normalised array)."""
    if hu.size == 0:
        raise InputError(f"{source} holds no voxels; give a CT volume.")
    if not np.all(np.isfinite(hu)):
        raise InputError(f"{source} contains NaN or infinite values; give a CT volume in HU.")
    lo, hi = float(np.percentile(hu, 1)), float(np.percentile(hu, 99))
    if lo > -500 or hi - lo < 300:
        raise InputError(
            f"{source} does not look like CT in Hounsfield units (1st–99th percentile {lo:.0f}..{hi:.0f}; "
            "CT has air near −1000 HU). Give HU volumes, not images rescaled to 0..255 or 0..1."
        )


def _read_raw(path: Path):
    """Read a DICOM folder or image file with SimpleITK; returns a SimpleITK image."""
    import SimpleITK as sitk

    if not path.exists():
        raise InputError(f"Training data {path} does not exist; check the path in the config.")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(str(path))
            if not ids:
                raise InputError(f"{path} holds no DICOM series; give a folder of DICOM slices or a volume file.")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), ids[0]))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise InputError(f"Cannot read {path}: unreadable or corrupt ({reason}).") from None


def _cache_key(path: Path, labels: Optional[Path]) -> str:
    parts = []
    for item in (path, labels):
        if item is None:
            continue
        stat_target = item if item.is_file() else item
        files = sorted(stat_target.iterdir()) if stat_target.is_dir() else [stat_target]
        parts.append(str(item.resolve()))
        parts += [f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_series(
    path: os.PathLike,
    name: Optional[str] = None,
    labels: Optional[os.PathLike] = None,
    cache_dir: Optional[os.PathLike] = DEFAULT_CACHE,
) -> CTSeries:
    """Read a CT series (file or DICOM folder) through the decoded-HU cache.

    ``labels`` is a label-map file resampled onto the CT by physical coordinates
    (nearest neighbour).  Padding below −1500 HU is set to −1000 (air).
    """
    import SimpleITK as sitk

    path = Path(path)
    labels_path = Path(labels) if labels else None
    if not path.exists():
        raise InputError(f"Training data {path} does not exist; check the path in the config.")
    if labels_path is not None and not labels_path.is_file():
        raise InputError(f"Label map {labels_path} does not exist; check the path in the config.")
    name = name or path.name
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser() / f"{name}-{_cache_key(path, labels_path)}"
        if (cache / "hu.npy").is_file():
            meta = json.loads((cache / "meta.json").read_text())
            hu = np.load(cache / "hu.npy").astype(np.float32)
            lab = np.load(cache / "labels.npy") if (cache / "labels.npy").is_file() else None
            return CTSeries(name, hu, as_xyz(meta["spacing"]), lab, str(path))
    image = _read_raw(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components; give a scalar CT.")
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise InputError(f"{path} is {hu.ndim}D; give a 3D CT volume or a 2D slice.")
    hu[hu < PADDING_HU] = AIR_HU
    check_hu_like(hu, str(path))
    lab = None
    if labels_path is not None:
        seg = sitk.ReadImage(str(labels_path))
        seg = sitk.Resample(seg, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        lab = sitk.GetArrayFromImage(seg).astype(np.uint8)
    raw_spacing = [float(s) for s in image.GetSpacing()]
    spacing = as_xyz(raw_spacing if len(raw_spacing) == 3 else raw_spacing[:2] + [1.0])  # a 2D slice: 1 mm
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / "hu.npy", np.clip(hu, -32768, 32767).astype(np.int16))
        if lab is not None:
            np.save(cache / "labels.npy", lab)
        (cache / "meta.json").write_text(json.dumps({"spacing": spacing, "source": str(path)}))
    return CTSeries(name, hu, spacing, lab, str(path))


def load_folder(path: os.PathLike, cache_dir: Optional[os.PathLike] = DEFAULT_CACHE) -> List[CTSeries]:
    """Every volume in a folder (image files and DICOM series subfolders), or the folder itself
    when it is a DICOM series.  Raises InputError when nothing is found."""
    from ..io.imagefiles import is_image_file

    path = Path(path)
    if not path.is_dir():
        if path.is_file():
            return [load_series(path, cache_dir=cache_dir)]
        raise InputError(f"Training data folder {path} does not exist; check the path in the config.")
    files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
    dicom_dirs = [p for p in sorted(path.iterdir()) if p.is_dir() and any(p.glob("*"))]
    series = [load_series(p, cache_dir=cache_dir) for p in files]
    for sub in dicom_dirs:
        try:
            series.append(load_series(sub, cache_dir=cache_dir))
        except InputError:
            continue
    if not series and any(path.iterdir()):
        series = [load_series(path, cache_dir=cache_dir)]
    if not series:
        raise InputError(f"Training data folder {path} is empty; put CT volumes or DICOM series in it.")
    return series


def split_blocks(n_slices: int, holdout: Sequence[int], gap: int) -> Tuple[List[int], List[int]]:
    """Training and held-out slice indices for one series.

    ``holdout`` is the half-open block ``[start, stop)``; ``gap`` slices on each side of
    it are used by neither (the 2.5D context must not reach across).  An empty
    ``holdout`` holds nothing out.  Returns (train indices, held-out indices).
    """
    if not holdout:
        return list(range(n_slices)), []
    start, stop = holdout
    if not (0 <= start < stop <= n_slices):
        raise InputError(f"Held-out block {start}..{stop} does not fit a series of {n_slices} slices.")
    held = list(range(start, stop))
    train = [i for i in range(n_slices) if i < start - gap or i >= stop + gap]
    return train, held


# --------------------------------------------------------------------------- noise


def measured_texture_filter(hu: np.ndarray, size: int = 64, lo: float = 0.0, hi: float = 120.0,
                            band: Tuple[float, float] = (-200.0, 250.0)) -> np.ndarray:
    """An amplitude filter sqrt(NPS) measured from flat soft tissue of a noisy series.

    Takes ``size``² tiles whose mean lies in [lo, hi] HU and whose SD is in the lowest
    quarter (flat tissue), removes each tile's plane, and averages |FFT|².  Used to
    synthesise noise with a real scanner's texture.  Returns an rfft-shaped array.
    """
    tiles = []
    step = size // 2
    for sl in hu:
        for y in range(0, sl.shape[0] - size, step):
            for x in range(0, sl.shape[1] - size, step):
                tile = sl[y : y + size, x : x + size]
                mean = float(tile.mean())
                if lo <= mean <= hi and tile.min() > band[0] and tile.max() < band[1]:
                    tiles.append(tile)
    if len(tiles) < 8:
        raise InputError("Too few flat soft-tissue regions to measure the noise texture.")
    sds = np.array([t.std() for t in tiles])
    tiles = [t for t, s in zip(tiles, sds) if s <= np.percentile(sds, 25)]
    yy, xx = np.mgrid[0:size, 0:size]
    design = np.stack([np.ones(size * size), yy.ravel(), xx.ravel()], 1)
    power = np.zeros((size, size // 2 + 1))
    for tile in tiles:
        coef, *_ = np.linalg.lstsq(design, tile.ravel(), rcond=None)
        detrended = tile - (design @ coef).reshape(size, size)
        power += np.abs(np.fft.rfft2(detrended * np.hanning(size)[:, None] * np.hanning(size)[None])) ** 2
    power[0, 0] = 0.0
    return np.sqrt(power / len(tiles)).astype(np.float32)


def _filtered_noise(shape: Tuple[int, ...], amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise of ``shape`` (rows, columns) shaped by an amplitude filter sampled on a coarser grid (interpolated)."""
    import torch
    import torch.nn.functional as F

    full_rows, full_cols = shape[0], shape[1] // 2 + 1
    amp = np.fft.fftshift(amplitude, axes=0)
    amp_t = torch.from_numpy(np.ascontiguousarray(amp))[None, None]
    amp_full = F.interpolate(amp_t, size=(full_rows, full_cols), mode="bilinear", align_corners=True)[0, 0]
    amp_full = np.fft.ifftshift(amp_full.numpy(), axes=0)
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * amp_full
    noise = np.fft.irfft2(spectrum, s=shape)
    return (noise / max(noise.std(), 1e-8)).astype(np.float32)


#: Named noise textures: the Hann apodisation cutoff of the FBP filter as a fraction of
#: Nyquist (simulate.py's ``texture``): larger is sharper grain.  "measured" is not here:
#: it uses the NPS measured from the real low-dose series (set up by the trainer).
TEXTURES: Dict[str, float] = {
    "sharp": 2.0,
    "standard": 1.0,
    "smooth": 0.6,
    "very-smooth": 0.4,
}


def noise_fields(
    clean: np.ndarray,
    spacing: Sequence[float],
    texture: str,
    seed: int,
    measured: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Unit-SD low-dose noise for one clean slice (y, x) at a named texture.

    The one place noise is made: the projection-domain simulator (``quality.simulate``:
    Poisson noise on the sinogram, FBP of the noise with the texture's apodisation;
    non-stationary, with streaks near bone).  ``measured`` is the amplitude filter of a
    real scanner's noise (texture "measured"), used as stationary noise.
    """
    rng = np.random.default_rng(seed)
    if texture == "measured":
        if measured is None:
            raise InputError("Texture 'measured' needs a measured noise filter (real low-dose data).")
        return _filtered_noise(clean.shape, measured, rng)
    if texture not in TEXTURES:
        raise InputError(f"Unknown noise texture '{texture}'; choose from {sorted(TEXTURES)} or 'measured'.")
    return _simulator_noise(clean, spacing, texture, seed)


def _simulator_noise(clean: np.ndarray, spacing: Sequence[float], texture: str, seed: int) -> np.ndarray:
    """Unit noise from simulate.noise_field (projection domain).

    The field keeps its non-stationarity (more noise behind bone and through long paths);
    it is scaled to unit SD over the body so a per-sample SD can be applied.
    """
    from ..quality.simulate import noise_field

    noise = np.asarray(
        noise_field(clean, (float(spacing[0]), float(spacing[1])), texture=TEXTURES[texture], photons=1.0, seed=seed),
        dtype=np.float32,
    )
    body = clean > -500
    sd = float(noise[body].std()) if body.sum() > 100 else float(noise.std())
    return noise / max(sd, 1e-8)


@dataclass
class NoiseBank:
    """Unit-SD noise fields: ``fields[(slice_key, texture)]`` -> list of (y, x) arrays."""

    fields: Dict[Tuple[str, str], List[np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        slices: Dict[str, Tuple[np.ndarray, Sequence[float]]],
        textures: Sequence[str],
        realisations: int,
        seed: int,
        measured: Optional[np.ndarray] = None,
        own: Optional[Dict[str, np.ndarray]] = None,
    ) -> NoiseBank:
        """Fields for every slice and texture.  Texture "own" is each series' *own* noise
        texture: ``own[series name]`` is the amplitude filter measured on that series
        (:func:`measured_texture_filter`), so a B70f scan gets B70f grain and a B10f scan
        B10f mottle."""
        bank = cls()
        for i, (key, (clean, spacing)) in enumerate(sorted(slices.items())):
            for j, texture in enumerate(textures):
                if texture == "own":
                    series = key.rsplit(":", 1)[0]
                    if not own or series not in own:
                        raise InputError(f"Texture 'own' needs the measured noise texture of series {series}.")
                    filt: Optional[np.ndarray]
                    texture_name, filt = "measured", own[series]
                else:
                    texture_name, filt = texture, measured
                bank.fields[(key, texture)] = [
                    noise_fields(clean, spacing, texture_name, seed + 1000003 * i + 7919 * j + r, filt)
                    for r in range(realisations)
                ]
        return bank


def own_noise_fields(hu: np.ndarray, spacing: Sequence[float], realisations: int, seed: int) -> List[np.ndarray]:
    """Fields with a noisy series' *own* noise statistics, for recorrupted (R2R) targets.

    ``hu`` is a (z, y, x) block of the series; returns ``realisations`` arrays of the same
    shape, in HU: the simulator at 50% dose adds exactly the series' own flat-tissue noise
    SD with the texture fitted to its own noise power spectrum (and the projection-domain
    non-stationarity), which is what recorrupting needs.  Raises InputError when the
    simulator cannot calibrate on the block (no flat soft tissue).
    """
    from ..quality.simulate import simulate_low_dose

    out = []
    for r in range(realisations):
        noisy = simulate_low_dose(hu, spacing, 0.5, seed=seed + 7907 * r)
        out.append((np.asarray(noisy, dtype=np.float32) - hu).astype(np.float16))
    return out


# --------------------------------------------------------------------------- patches


@dataclass
class SliceSource:
    """One series as seen by the sampler: HU volume and the centre slices it may use."""

    name: str
    hu: np.ndarray
    pixel_size: float
    centres: List[int]
    #: the contiguous block(s) the context may reach into (indices outside are replaced
    #: by the nearest block edge, as the engine replicates volume ends)
    allowed: List[int]
    weight: float = 1.0


@dataclass
class PatchConfig:
    """What :class:`PatchSampler` draws."""

    patch: int = 64
    context: int = 1
    copy_neighbours: float = 0.3
    pixel_size: Tuple[float, float] = (0.5, 1.5)
    min_tissue: float = 0.3
    flips: bool = True
    pixel_size_log: bool = False  #: draw the target pixel size log-uniformly instead of uniformly
    context_distance: Tuple[int, int] = (1, 1)  #: neighbour distance in slices, drawn uniformly


def context_indices(centre: int, context: int, allowed: Sequence[int], distance: int = 1) -> List[int]:
    """The 2k+1 slice indices around ``centre``, ``distance`` slices apart; an index outside
    ``allowed`` moves towards the centre until it is inside (the engine replicates volume ends)."""
    allowed_set = set(allowed)
    out = []
    for offset in range(-context, context + 1):
        index = centre + offset * distance
        step = 1 if offset < 0 else -1
        while index not in allowed_set:
            index += step
        out.append(index)
    return out


class PatchSampler:
    """Seeded random 2.5D patches from a list of :class:`SliceSource`.

    ``sample(rng)`` returns ``(stack, centre_key, offset)``: the (2k+1, P, P) HU stack, the
    key of its centre slice in the noise bank, and the geometry applied (so the same
    crop, rescale, flip and rotation can be applied to a noise field).
    """

    def __init__(self, sources: Sequence[SliceSource], config: PatchConfig):
        if not sources:
            raise InputError("No training slices: the data folders are empty or the held-out block takes all.")
        self.sources = list(sources)
        self.config = config
        weights = np.array([s.weight * len(s.centres) for s in self.sources], dtype=float)
        if weights.sum() <= 0:
            raise InputError("No training slices left after the held-out split; make the held-out block smaller.")
        self.weights = weights / weights.sum()
        for source in self.sources:
            max_size = int(np.ceil(config.patch * config.pixel_size[1] / source.pixel_size)) + 2
            need = int(np.ceil(config.patch * config.pixel_size[0] / source.pixel_size)) + 2
            if min(source.hu.shape[1:]) < min(need, max_size):
                raise InputError(
                    f"Patch size {config.patch} at {config.pixel_size[0]} mm needs {need} pixels but "
                    f"{source.name} is only {source.hu.shape[1]}×{source.hu.shape[2]}; use a smaller patch."
                )

    def draw_pixel_size(self, rng: np.random.Generator) -> float:
        """A target pixel size (mm) over the configured range, log-uniform if ``pixel_size_log``."""
        low, high = self.config.pixel_size
        if self.config.pixel_size_log:
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(rng.uniform(low, high))

    def draw_geometry(self, rng: np.random.Generator) -> Dict:
        """Pick source, centre, context, crop box, target pixel size, flips and rotation."""
        cfg = self.config
        source_index = int(rng.choice(len(self.sources), p=self.weights))
        source = self.sources[source_index]
        centre = int(source.centres[rng.integers(len(source.centres))])
        copied = bool(rng.random() < cfg.copy_neighbours)
        distance = int(cfg.context_distance[0])
        if cfg.context_distance[1] > distance:  # drawn only then: older configs keep their random sequence
            distance = int(rng.integers(distance, cfg.context_distance[1] + 1))
        indices = ([centre] * (2 * cfg.context + 1) if copied
                   else context_indices(centre, cfg.context, source.allowed, distance))
        target = self.draw_pixel_size(rng)
        crop = int(round(cfg.patch * target / source.pixel_size))
        crop = max(4, min(crop, min(source.hu.shape[1:])))
        flat = source.hu[centre]
        y = x = 0
        for _ in range(20):
            y = int(rng.integers(0, flat.shape[0] - crop + 1))
            x = int(rng.integers(0, flat.shape[1] - crop + 1))
            tissue = float(np.mean(flat[y : y + crop : 4, x : x + crop : 4] > -500))
            if tissue >= cfg.min_tissue:
                break
        return {
            "source": source_index,
            "centre": centre,
            "indices": indices,
            "copied": copied,
            "distance": distance,
            "crop": (y, x, crop),
            "pixel_size": target,
            "flip": (bool(rng.random() < 0.5) and cfg.flips, bool(rng.random() < 0.5) and cfg.flips),
            "rot": int(rng.integers(4)) if cfg.flips else 0,
        }

    def apply(self, images: np.ndarray, geometry: Dict) -> np.ndarray:
        """Crop, rescale to the patch size, flip and rotate (C, H, W) -> (C, P, P)."""
        import torch
        import torch.nn.functional as F

        y, x, crop = geometry["crop"]
        region = np.ascontiguousarray(images[:, y : y + crop, x : x + crop], dtype=np.float32)
        size = self.config.patch
        if crop != size:
            tensor = torch.from_numpy(region)[None]
            tensor = F.interpolate(
                tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=crop > size
            )
            region = tensor[0].numpy()
        if geometry["flip"][0]:
            region = region[:, ::-1]
        if geometry["flip"][1]:
            region = region[:, :, ::-1]
        region = np.rot90(region, geometry["rot"], axes=(1, 2))
        return np.ascontiguousarray(region)

    def apply_noise(self, fields: np.ndarray, geometry: Dict) -> np.ndarray:
        """Place added-noise fields (C, H, W) on the patch grid: the P×P window around the
        crop's centre, flipped and rotated like the image but *not* resampled.

        A scan's noise grain lives on its own pixel grid whatever its pixel size; resampling
        the noise with the image (as :meth:`apply` does) smoothed it by the rescale filter, so
        the network rarely saw pixel-level grain and did little on sharp-kernel noise
        (measured: 27.7 dB vs curvature diffusion's 29.5 dB on the sharp texture).
        """
        y, x, crop = geometry["crop"]
        size = self.config.patch
        height, width = fields.shape[1:]
        top = int(min(max(y + crop // 2 - size // 2, 0), height - size))
        left = int(min(max(x + crop // 2 - size // 2, 0), width - size))
        region = np.asarray(fields[:, top : top + size, left : left + size], dtype=np.float32)
        if geometry["flip"][0]:
            region = region[:, ::-1]
        if geometry["flip"][1]:
            region = region[:, :, ::-1]
        return np.ascontiguousarray(np.rot90(region, geometry["rot"], axes=(1, 2)))

    def stack(self, geometry: Dict) -> np.ndarray:
        source = self.sources[geometry["source"]]
        return self.apply(source.hu[geometry["indices"]], geometry)

    def key(self, geometry: Dict) -> str:
        source = self.sources[geometry["source"]]
        return f"{source.name}:{geometry['centre']}"


# --------------------------------------------------------------------------- detail inserts


def _disc(size: int, cy: Union[float, np.ndarray], cx: Union[float, np.ndarray], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.clip(0.5 - (np.hypot(yy - cy, xx - cx) - radius), 0.0, 1.0).astype(np.float32)


def inject_details(stack: np.ndarray, pixel_mm: float, rng: np.random.Generator,
                   contrast_hu: Sequence[float] = (3.0, 30.0),
                   diameter_mm: Sequence[float] = (2.0, 12.0),
                   pattern_share: float = 0.5, discs: bool = True,
                   pattern_contrast_hu: Sequence[float] = (30.0, 200.0),
                   min_diameter_px: float = 0.0, copies_alike: bool = False) -> np.ndarray:
    """Add small low-contrast discs and fine high-contrast patterns to a clean (C, P, P) HU stack.

    Why: a denoiser trained with an L1/L2 loss on anatomy alone learns that faint small
    blobs and pixel-scale texture are noise, and erases them (the bundled 2.0 model kept
    56% of the contrast of 5–7 mm, 5–7 HU lesions and 16% of fine-pattern energy).  The
    inserts are added to the image *before* the noise, so the target contains them and
    erasing them costs loss.  Discs (1–4, ``diameter_mm``, ±``contrast_hu``, one-pixel
    partial-volume edge) sit on soft tissue; a pattern (bars of period 2–6 pixels or a
    random binary texture, ``pattern_contrast_hu``, uniform) is added with probability ``pattern_share``.  All
    2k+1 channels get the same insert, the neighbours scaled by 0.5–1 (partial volume in z).
    ``discs`` false: the pattern alone (with ``pattern_share`` 1, the trainer's transparency probes).
    ``min_diameter_px``: discs smaller than this many pixels on the patch grid are drawn at this
    size instead (0: no floor; the trainer's transparency probes, LossConfig.transparency_min_pixels).
    ``copies_alike``: when every channel is the same image (a copied-neighbour stack, the network's
    single-image mode), every channel gets the insert at full strength (DataConfig.copied_inserts_alike).
    """
    out = stack.astype(np.float32, copy=True)
    channels, size = out.shape[0], out.shape[-1]
    centre = channels // 2
    copied = copies_alike and all(np.array_equal(out[c], out[centre]) for c in range(channels))

    def z_weight(c: int) -> float:  # partial volume in z for real neighbours; none in a copied stack
        return 1.0 if c == centre or copied else float(rng.uniform(0.5, 1.0))

    soft = (out[centre] > -150) & (out[centre] < 300)
    if soft.mean() < 0.05:
        return out
    ys, xs = np.nonzero(soft)
    inside = soft.astype(np.float32)  # inserts live in soft tissue: none spill into air or bone
    for _ in range(int(rng.integers(1, 5)) if discs else 0):
        j = int(rng.integers(len(ys)))
        radius = 0.5 * float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1])))) / pixel_mm
        radius = max(radius, 0.5 * min_diameter_px)
        contrast = float(np.exp(rng.uniform(np.log(contrast_hu[0]), np.log(contrast_hu[1]))))
        contrast *= 1.0 if rng.random() < 0.5 else -1.0
        disc = _disc(size, ys[j], xs[j], max(radius, 0.75)) * contrast * inside
        for c in range(channels):
            out[c] += disc * z_weight(c)
    if rng.random() < pattern_share:
        side = int(rng.integers(8, max(9, size // 4)))
        j = int(rng.integers(len(ys)))
        top = int(min(max(ys[j] - side // 2, 0), size - side))
        left = int(min(max(xs[j] - side // 2, 0), size - side))
        if rng.random() < 0.5:
            period = float(rng.uniform(2.0, 6.0))
            phase = np.arange(side) * 2 * np.pi / period
            pattern = (np.sin(phase) > 0).astype(np.float32)[None, :].repeat(side, 0)
            if rng.random() < 0.5:
                pattern = pattern.T
        else:
            cell = int(rng.integers(1, 3))
            cells = rng.random((side // cell + 1, side // cell + 1)) > 0.5
            pattern = np.kron(cells, np.ones((cell, cell)))[:side, :side].astype(np.float32)
        pattern = (pattern - pattern.mean()) * float(rng.uniform(pattern_contrast_hu[0], pattern_contrast_hu[1]))
        pattern = pattern * inside[top:top + side, left:left + side]
        for c in range(channels):
            out[c, top:top + side, left:left + side] += pattern * z_weight(c)
    return out


def series_texture_filter(hu: np.ndarray) -> np.ndarray:
    """A series' own noise texture (:func:`measured_texture_filter`), with smaller tiles and a
    wider HU band when 64-pixel tiles of flat soft tissue are too few (sharp kernels, chest scans)."""
    attempts = ((64, (-200.0, 250.0)), (32, (-250.0, 330.0)), (32, (-400.0, 500.0)))
    for size, band in attempts:
        try:
            return measured_texture_filter(hu, size=size, band=band)
        except InputError:
            continue
    raise InputError("Too few flat soft-tissue regions to measure this series' noise texture; "
                     "drop the 'own' texture or the series.")


def series_noise_sd(hu: np.ndarray, indices: Sequence[int]) -> float:
    """A series' own noise SD (HU) from up to 8 of ``indices``, by the library's flat-tissue estimator."""
    from ..quality.noise import estimate_noise_sd

    chosen = list(indices)[:: max(1, len(indices) // 8)][:8]
    return float(estimate_noise_sd(hu[chosen]))


def stationary_noise(shape: Tuple[int, ...], amplitude: np.ndarray, realisations: int, seed: int) -> List[np.ndarray]:
    """Unit-SD stationary noise fields with a measured texture (``measured_texture_filter``):
    ``realisations`` arrays of ``shape`` (z, y, x) or (y, x), float16 as the banks keep them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(realisations):
        if len(shape) == 2:
            out.append(_filtered_noise(shape, amplitude, rng).astype(np.float16))
        else:
            out.append(np.stack([_filtered_noise(shape[1:], amplitude, rng) for _ in range(shape[0])]).astype(np.float16))
    return out
