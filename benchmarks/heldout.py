"""Held-out evaluation: whole scans the model never saw, and the project's task phantoms.

The numbers that choose and publish a model come from here (issue 12).  Everything the
model is run on goes through the one inference path (``engine.denoise_volume``) and every
measure is the library's (``quality.metrics``, ``quality.noise``, ``quality.taskphantoms``).

Sections, each against the same peers in the same run (identity, Gaussian σ 0.8 px,
curvature anisotropic diffusion 5 it., NLM and BM3D given the input's measured noise SD
and PSD; BM3D is a benchmark-only extra):

1. **Held-out scans at simulated 25% and 10% dose**: whole series that no training config
   reads (``HELD_OUT`` below; training/configs/generalist.yaml lists what it trains on).
   Reference = the routine-dose scan, which carries its own noise; the perfect denoiser's
   PSNR gain against such a reference is 20·log10(√(1/a − 1)) dB (4.8 dB at 25%, 9.5 at 10%).
   Liver-window (W400/L40) PSNR and SSIM over the body, noise SD (flat-tissue estimator),
   bias in soft tissue.
2. **Pixel sizes and kernels as rows**: one held-out scan resampled to 0.5, 2 and 3 mm
   pixels, and the soft/sharp kernel pair (B40f/B70f) of one acquisition.
3. **A real low-dose scan without reference** (a held-out GE series): noise SD, NPS mean
   frequency, and the removed part's correlation with anatomy (edges).
4. **Low-contrast detectability** (MITA-LCD-like phantom, 10% and 25% dose, paired
   signal injection, many noise realisations): contrast ratio, NPW d′ and AUC, noise.
5. **Resolution** (bars, Siemens star, fine random texture at 0.68 mm): in-band (0.1–0.5
   cycles/pixel) pattern energy kept.
6. **The phantoms with each slice alone** (the models only): the network's single-image mode, which
   2D images and thick-slice series (the engine's thick-slice rule) get; sections 4–5 give each
   slice its two neighbours, as a phantom scanned in thin slices has.

Usage: python benchmarks/heldout.py [--model F ...] [--slices 3] [--realisations 12] [--no-bm3d]
       [--quick] [--out docs/heldout] [--threads 2]
Writes OUT/heldout.json, OUT/heldout.md and figures; prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LowDoseDenoise"))

#: Whole scans no training config reads: (name, folder under the shared data, what it is).
HELD_OUT: Tuple[Tuple[str, str, str], ...] = (
    ("pancreas", "pancreas-ct-philips/dicom",
     "Philips Brilliance Big Bore, kernel B + iDose 3, 1.07 mm pixels, 3 mm slices, abdomen"),
    ("siemens-B40f", "lung-pet-ct-dx-kernels/dicom/siemens-B40f",
     "Siemens Sensation 10, B40f (medium), 0.65 mm pixels, 8 mm slices, chest"),
    ("siemens-B70f", "lung-pet-ct-dx-kernels/dicom/siemens-B70f",
     "Siemens Sensation 10, B70f (very sharp), 0.65 mm pixels, 8 mm slices, chest"),
)
#: A real low-dose scan no training config reads (no reference exists).
HELD_OUT_LOW_DOSE = ("ge-study2", "acrin-flt-breast-ct/dicom/ge-study2-80mA", "GE Discovery LS, 80 mA, SOFT")
#: Pixel-size rows: (label, source scan, target pixel size mm).
PIXEL_ROWS = (("0.5 mm", "siemens-B40f", 0.5), ("2 mm", "pancreas", 2.0), ("3 mm", "pancreas", 3.0))
#: Split B of the leave-one-vendor-out rotation (training/configs/rotation_b*.yaml train on the
#: Siemens and GE scans only): every Philips scan is held out.
HELD_OUT_B: Tuple[Tuple[str, str, str], ...] = (
    HELD_OUT[0],
    ("philips-B", "lung-pet-ct-dx-kernels/dicom/philips-B",
     "Philips Brilliance 16, kernel B (soft), 0.84 mm pixels, 5 mm slices, chest"),
    ("philips-L", "lung-pet-ct-dx-kernels/dicom/philips-L",
     "Philips Brilliance 16, kernel L (sharp), 0.84 mm pixels, 5 mm slices, chest"),
)
PIXEL_ROWS_B = (("0.5 mm", "philips-L", 0.5), ("2 mm", "pancreas", 2.0), ("3 mm", "pancreas", 3.0))
#: --split: (held-out scans, pixel-size rows). A: the shipped model's split (its configs never read
#: these scans); B: the rotation. The real low-dose scan (ge-study2) is held out in both.
SPLITS = {"A": (HELD_OUT, PIXEL_ROWS), "B": (HELD_OUT_B, PIXEL_ROWS_B)}
DOSES = (0.25, 0.10)
LIVER_WINDOW = "liver"  # W400 / L40

Method = Callable[[np.ndarray, Sequence[float]], np.ndarray]


@dataclass
class Block:
    """A routine-dose block of 3 slices (the centre is measured), its spacing and source."""

    name: str
    hu: np.ndarray
    spacing: Tuple[float, float, float]
    description: str


def shared_data_dir() -> Path:
    from LowDoseDenoiseLib.training.data import shared_data_root

    return shared_data_root()


def load(path: Path, name: str):
    from LowDoseDenoiseLib.training.data import load_series

    return load_series(path, name)


def centre_indices(n: int, count: int) -> List[int]:
    """``count`` centre slices spread over the middle 60% of a series (the body is in view)."""
    lo, hi = max(1, int(0.2 * n)), min(n - 2, int(0.8 * n))
    if hi <= lo:
        return [n // 2]
    return sorted({int(round(v)) for v in np.linspace(lo, hi, count)})


def resample_block(block: np.ndarray, spacing: Tuple[float, float, float], pixel_mm: float):
    """In-plane resampling to ``pixel_mm`` (area-averaged when coarser), as a scan reconstructed
    on that grid; the routine-dose noise follows the resampling, as it would."""
    from skimage.transform import resize

    factor = spacing[0] / pixel_mm
    shape = (int(round(block.shape[1] * factor)), int(round(block.shape[2] * factor)))
    out = np.stack([resize(s, shape, order=1, anti_aliasing=factor < 1, preserve_range=True) for s in block])
    return out.astype(np.float32), (pixel_mm, pixel_mm, spacing[2])


def body_and_soft_masks(reference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    body = ndimage.binary_erosion(reference > -500, iterations=5)
    smooth = ndimage.uniform_filter(reference, 7)
    soft = body & (smooth > -100) & (smooth < 200)
    return body, soft


def measure_slice(output: np.ndarray, reference: np.ndarray, noisy: np.ndarray, spacing) -> Dict[str, float]:
    from LowDoseDenoiseLib.quality import metrics
    from LowDoseDenoiseLib.quality.noise import estimate_noise_sd

    body, soft = body_and_soft_masks(reference)
    row = {
        "psnr": metrics.psnr(output, reference, window=LIVER_WINDOW, mask=body),
        "ssim": metrics.ssim(output[None], reference[None], window=LIVER_WINDOW, mask=body[None]),
        "psnr_input": metrics.psnr(noisy, reference, window=LIVER_WINDOW, mask=body),
        "ssim_input": metrics.ssim(noisy[None], reference[None], window=LIVER_WINDOW, mask=body[None]),
        "noise_sd": estimate_noise_sd(output),
        "noise_sd_input": estimate_noise_sd(noisy),
        "bias": float(np.mean(output[soft] - reference[soft])),
    }
    row["gain"] = row["psnr"] - row["psnr_input"]
    row["noise_ratio"] = row["noise_sd"] / max(row["noise_sd_input"], 1e-6)
    return row


def single_slice(method: Callable) -> Callable:
    """``method`` given the block's centre slice as all three slices (no neighbours)."""
    def run(block: np.ndarray, spacing) -> np.ndarray:
        centre = block.shape[0] // 2
        return method(np.repeat(block[centre : centre + 1], block.shape[0], axis=0), spacing)

    return run


SINGLE_TITLE = "Single slices: the held-out scans' slices without their neighbours (a 2D image), 25% dose"


def mean_rows(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


# --------------------------------------------------------------------------- methods


def make_methods(models: Dict[str, object], use_bm3d: bool, device: str,
                 strengths: Sequence[float] = (), ensembles: Sequence[int] = ()) -> Dict[str, Callable]:
    """name -> f(block (3, y, x) HU, spacing) -> centre slice (y, x).  The model sees the 2.5D
    block through the engine (its default self-ensemble, engine.DEFAULT_ENSEMBLE, unless
    ``ensembles`` adds "<label> ×N" rows for the first model); the classical peers filter the centre
    slice in 2D."""
    from LowDoseDenoiseLib.engine import DEFAULT_ENSEMBLE, denoise_volume
    from LowDoseDenoiseLib.quality import filters

    def model_method(model, strength: float = 1.0, ensemble: int = DEFAULT_ENSEMBLE) -> Callable:
        def run(block: np.ndarray, spacing) -> np.ndarray:
            out = denoise_volume(block, model=model, device=device, spacing=spacing, strength=strength,
                                 ensemble=ensemble)
            return out[block.shape[0] // 2]

        return run

    def peer(flt) -> Callable:
        def run(block: np.ndarray, spacing) -> np.ndarray:
            centre = block.shape[0] // 2
            return flt(block[centre : centre + 1], spacing)[0]

        return run

    methods: Dict[str, Callable] = {"input": lambda block, spacing: block[block.shape[0] // 2]}
    for label, model in models.items():
        methods[label] = model_method(model)
        for strength in strengths:
            methods[f"{label} @{strength:g}"] = model_method(model, strength)
        for ensemble in ensembles if label == next(iter(models)) else ():  # the first model only
            if ensemble != DEFAULT_ENSEMBLE:
                methods[f"{label} ×{ensemble}"] = model_method(model, ensemble=ensemble)
    methods["Gaussian σ0.8"] = peer(filters.gaussian)
    methods["diffusion 5 it."] = peer(filters.curvature_diffusion(5))
    methods["NLM"] = peer(filters.nl_means)
    if use_bm3d and filters.bm3d_available():
        methods["BM3D"] = peer(filters.bm3d_filter)
    elif use_bm3d:  # the targets compare with the better of BM3D and diffusion: say so when BM3D is missing
        print("BM3D is not installed (pip install bm3d, or the package's [bench] extra): the tables and the "
              "targets compare with diffusion and NLM only; pass --no-bm3d to silence this.", file=sys.stderr)
    return methods


# --------------------------------------------------------------------------- sections


def scan_section(blocks: List[Block], methods, doses, seed: int,
                 keep: Optional[Dict[str, Dict[str, np.ndarray]]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """results[case@dose][method] = mean over the case's blocks of measure_slice.

    ``keep`` receives, for the first block of every case, the reference and every method's
    output (for the figures)."""
    from LowDoseDenoiseLib.quality.simulate import simulate_low_dose

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    timing: Dict[str, List[float]] = {}
    for dose in doses:
        per_case: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
        for i, block in enumerate(blocks):
            noisy = simulate_low_dose(block.hu, block.spacing, dose, seed=seed + 101 * i)
            centre = block.hu.shape[0] // 2
            case_key = f"{block.name}@{int(round(dose * 100))}%"
            first = keep is not None and case_key not in keep
            if first:
                keep[case_key] = {"reference": block.hu[centre]}
            for name, method in methods.items():
                start = time.perf_counter()
                out = np.asarray(method(noisy, block.spacing), np.float32)
                timing.setdefault(name, []).append(time.perf_counter() - start)
                row = measure_slice(out, block.hu[centre], noisy[centre], block.spacing)
                per_case.setdefault(block.name, {}).setdefault(name, []).append(row)
                if first:
                    keep[case_key][name] = out
        for case, by_method in per_case.items():
            results[f"{case}@{int(round(dose * 100))}%"] = {m: mean_rows(rows) for m, rows in by_method.items()}
    results["_seconds_per_slice"] = {m: {"s": float(np.median(t))} for m, t in timing.items()}
    return results


def real_low_dose_section(series, methods, count: int) -> Dict[str, Dict[str, float]]:
    from LowDoseDenoiseLib.quality import metrics
    from LowDoseDenoiseLib.quality.noise import estimate_noise_sd

    spacing = series.spacing
    rows: Dict[str, List[Dict[str, float]]] = {}
    for c in centre_indices(series.hu.shape[0], count):
        block = series.hu[c - 1 : c + 2]
        noisy = block[1]
        body = metrics.body_mask(noisy)
        for name, method in methods.items():
            out = np.asarray(method(block, spacing), np.float32)
            row = {"noise_sd": estimate_noise_sd(out)}
            try:
                row["nps_mean_frequency"] = metrics.noise_power_spectrum(out[None], spacing, mask=body[None]).mean_frequency
            except Exception:  # no flat ROI fits: leave the field out rather than fail the benchmark
                row["nps_mean_frequency"] = float("nan")
            row["mean_shift"] = float(np.mean(out[body] - noisy[body]))
            if name != "input":
                row["residual_edge_corr"] = metrics.residual_structure(noisy[None], out[None], spacing).correlation
            rows.setdefault(name, []).append(row)
    return {m: {k: float(np.nanmean([r.get(k, np.nan) for r in rs])) for k in rs[0]} for m, rs in rows.items()}


def phantom_section(methods, realisations: int, seed: int, quick: bool, alone: bool = False) -> Dict[str, Dict]:
    """The task phantoms' measures of every method.  ``alone``: each noisy slice is given without its
    neighbours (a one-slice series, which the engine repeats as its own neighbours: the network's
    single-image mode, as for a 2D image or under the thick-slice rule)."""
    from LowDoseDenoiseLib.quality import taskphantoms as tp

    def as_volume_method(method) -> Callable[[np.ndarray], np.ndarray]:
        # The (R, y, x) realisations are slices of a z-uniform phantom: each slice's neighbours
        # hold the same objects with independent noise, as a real phantom scan has.
        def run(stack: np.ndarray) -> np.ndarray:
            out = np.empty_like(stack)
            for r in range(stack.shape[0]):
                picked = [r] if alone else [max(r - 1, 0), r, min(r + 1, stack.shape[0] - 1)]
                out[r] = method(stack[picked], spacing)
            return out

        return run

    out: Dict[str, Dict] = {}
    lcd = tp.lcd_phantom(size=256 if quick else 320, pixel_mm=0.8)
    res = tp.resolution_phantom(size=256 if quick else 384, pixel_mm=0.68)
    for phantom in (lcd, res):
        spacing = (phantom.spacing[0], phantom.spacing[1], 1.0)
        for dose in (0.10, 0.25):
            absent, present = tp.noisy_pairs(phantom, dose, realisations, seed=seed)
            key = f"{phantom.name}@{int(round(dose * 100))}%"
            out[key] = {}
            for name, method in methods.items():
                out[key][name] = tp.evaluate_method(phantom, as_volume_method(method), absent, present)
    return out


# --------------------------------------------------------------------------- figures


def panel_figures(kept: Dict[str, Dict[str, np.ndarray]], folder: Path, spacing_of: Dict[str, Tuple]) -> List[Path]:
    """For each kept case: the methods zoomed in the liver window, and what each removed
    (input − output, window W 200 / L 0) so blurred anatomy shows as structure."""
    from LowDoseDenoiseLib.quality.figures import method_grid_figure

    written = []
    for case, images in kept.items():
        slug = case.replace(" ", "").replace("@", "_").replace("%", "").replace(".", "p")
        spacing = spacing_of.get(case.split("@")[0])
        rows, cols = images["reference"].shape
        zoom = (rows // 2, int(cols * 0.4), max(24, rows // 7))
        shown = {"routine-dose reference": images["reference"], **{k: v for k, v in images.items() if k != "reference"}}
        written.append(method_grid_figure(shown, folder / f"heldout_{slug}_panel.png", "liver", spacing, zoom,
                                          title=f"{case} (held-out scan)"))
        removed = {"input − reference (the added noise)": images["input"] - images["reference"]}
        removed.update({f"removed by {k}": images["input"] - v for k, v in images.items()
                        if k not in ("reference", "input")})
        written.append(method_grid_figure(removed, folder / f"heldout_{slug}_removed.png", "200,0", spacing, zoom,
                                          title=f"{case}: what each method removed"))
    return written


def task_figure(phantoms: Dict[str, Dict], folder: Path) -> Path:
    """Bar charts: LCD contrast ratio and d′ per insert, resolution energy kept per pattern, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(phantoms)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.2), squeeze=False)
    for axis, key in zip(axes[0], keys):
        by_method = phantoms[key]
        methods = list(by_method)
        inserts = list(by_method[methods[0]])
        lcd = key.startswith("lcd")
        measure = "contrast_ratio" if lcd else "energy_kept"
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            values = [by_method[m][i][measure] for i in inserts]
            axis.bar(np.arange(len(inserts)) + j * width, values, width, label=m)
        axis.axhline(0.9 if lcd else 0.85, color="k", linestyle="--", linewidth=0.8)
        axis.set_xticks(np.arange(len(inserts)) + 0.4 - width / 2)
        axis.set_xticklabels([i.replace(" / ", "\n") for i in inserts], fontsize=7)
        axis.set_ylim(0, 1.15)
        axis.set_title(("LCD contrast ratio" if lcd else "pattern energy kept") + f", {key.split('@')[1]} dose",
                       fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out = folder / "heldout_task_phantoms.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- report


def fmt(value: float, spec: str = ".2f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def scan_table(results, title: str) -> List[str]:
    lines = [f"### {title}", ""]
    cases = [k for k in results if not k.startswith("_")]
    methods = list(results[cases[0]])
    lines.append("| case | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---:|" * len(methods))
    for case in cases:
        dose = float(case.rsplit("@", 1)[1].rstrip("%")) / 100
        limit = 20 * math.log10(math.sqrt(1 / dose - 1))
        cells = []
        for m in methods:
            r = results[case][m]
            cells.append(f"{r['gain']:+.2f} dB / {r['ssim']:.3f} / ×{r['noise_ratio']:.2f} / {r['bias']:+.1f}")
        lines.append(f"| {case} (limit +{limit:.1f} dB) | " + " | ".join(cells) + " |")
    lines += ["", "Cells: liver-window PSNR gain over the input / SSIM / noise SD ratio to the input / "
              "soft-tissue bias (HU). The input column's gain is 0 by definition.", ""]
    return lines


ALONE_NOTE = ("Each noisy slice given alone (a one-slice series: the network's single-image mode, as for a 2D "
              "image or a series whose slices lie farther apart than the model's training, the engine's "
              "thick-slice rule); the peers see one slice in every table, so they are not repeated here.")


LCD_CAPTION = ("Cells: injected-contrast ratio (identity = 1.00) / NPW matched-filter d′. Ceiling: the "
               "prewhitened (Hotelling) d′ of the input slice, which no method's NPW d′ can exceed on one "
               "slice at any contrast it keeps (Stein's lemma, quality.taskphantoms.prewhitened_detectability); "
               "{looks}: the NPW d′ over 12 noise realisations varies by about ±20% (it can read above the "
               "ceiling by chance), the ceiling takes the noise as stationary near the insert.")
LOOKS_NEIGHBOURS = ("the model also sees the two neighbouring slices, independent looks at the same insert, whose "
                    "ceiling is √3 times as high. Both are estimates")
LOOKS_ALONE = "here the model sees that one slice too. The NPW d′ is an estimate"


def phantom_tables(results, alone: bool = False) -> List[str]:
    lines = []
    for key, by_method in results.items():
        methods = list(by_method)
        inserts = list(by_method[methods[0]])
        lcd = key.startswith("lcd")
        title = f"{'Low-contrast detectability' if lcd else 'Resolution'} phantom, {key.split('@')[1]} dose"
        lines += [f"### {title}{', each slice alone' if alone else ''}", ""]
        if alone:
            lines += [ALONE_NOTE, ""]
        lines.append("| insert | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---:|" * len(methods))
        for insert in inserts:
            cells = []
            for m in methods:
                r = by_method[m][insert]
                cell = f"{r['contrast_ratio']:.2f} / d′ {r['d_prime']:.2f}" if lcd else f"{r['energy_kept']:.2f}"
                if lcd and m == "input" and "d_prime_ceiling" in r:
                    ceiling = r["d_prime_ceiling"]
                    cell += f" (ceiling {ceiling:.2f})" if alone else f" (ceiling {ceiling:.2f}; 3 slices {ceiling * math.sqrt(3):.2f})"
                cells.append(cell)
            lines.append(f"| {insert} | " + " | ".join(cells) + " |")
        noise = {m: by_method[m][inserts[0]]["noise_sd"] for m in methods}
        lines.append("| noise SD (HU) | " + " | ".join(f"{noise[m]:.1f}" for m in methods) + " |")
        lines += ["", LCD_CAPTION.format(looks=LOOKS_ALONE if alone else LOOKS_NEIGHBOURS) if lcd else
                  "Cells: in-band (0.1–0.5 cycles/pixel) pattern energy kept (identity = 1.00).", ""]
    return lines


def real_table(results, description: str) -> List[str]:
    lines = [f"### Real low-dose scan, no reference ({description})", "",
             "| method | noise SD (HU) | NPS mean freq. (mm⁻¹) | mean HU shift | removed part vs edges |",
             "|---|---:|---:|---:|---:|"]
    for m, r in results.items():
        lines.append(f"| {m} | {fmt(r['noise_sd'], '.1f')} | {fmt(r['nps_mean_frequency'], '.3f')} | "
                     f"{fmt(r['mean_shift'], '+.1f')} | {fmt(r.get('residual_edge_corr', float('nan')), '+.2f')} |")
    return lines + [""]


def targets_table(report: Dict, model: str) -> List[str]:
    """Issue 12's targets for one model column, each with the measured value and the margin."""
    rows: List[Tuple[str, str, bool]] = []

    def gain(case_key: str, section: str, m: str) -> float:
        return report[section][case_key][m]["gain"]

    scans = {k: v for k, v in report.get("scans", {}).items() if not k.startswith("_")}
    pixels = {k: v for k, v in report.get("pixels", {}).items() if not k.startswith("_")}
    peers = [p for p in ("BM3D", "diffusion 5 it.") if scans and p in next(iter(scans.values()))]
    for case in scans:
        best_peer = max(gain(case, "scans", p) for p in peers)
        ours = gain(case, "scans", model)
        rows.append((f"{case}: PSNR gain ≥ best of BM3D/diffusion + 0.5 dB",
                     f"{ours:+.2f} vs {best_peer + 0.5:+.2f} dB ({ours - best_peer - 0.5:+.2f})", ours >= best_peer + 0.5))
        ssim, ssim_cad = scans[case][model]["ssim"], scans[case]["diffusion 5 it."]["ssim"]
        rows.append((f"{case}: SSIM ≥ diffusion's", f"{ssim:.3f} vs {ssim_cad:.3f}", ssim >= ssim_cad))
        bias = scans[case][model]["bias"]
        rows.append((f"{case}: abs(bias) ≤ 2 HU", f"{bias:+.1f} HU", abs(bias) <= 2.0))
        if case.endswith("@25%"):
            ratio = scans[case][model]["noise_ratio"]
            rows.append((f"{case}: noise ≤ 0.5× the input", f"×{ratio:.2f}", ratio <= 0.5))
    for case in pixels:
        ours, cad = gain(case, "pixels", model), gain(case, "pixels", "diffusion 5 it.")
        rows.append((f"{case}: gain ≥ diffusion's", f"{ours:+.2f} vs {cad:+.2f} dB", ours >= cad))
    phantoms = report.get("phantoms", {})
    for key, by_method in phantoms.items():
        if model not in by_method:
            continue
        if key.startswith("res"):
            for pattern, r in by_method[model].items():
                rows.append((f"{key} {pattern}: energy kept ≥ 0.85", f"{r['energy_kept']:.2f}", r["energy_kept"] >= 0.85))
        elif key == "lcd@10%":
            identity = by_method["input"]
            for insert, r in by_method[model].items():
                diameter, contrast = (float(v.split()[0]) for v in insert.split(" / "))
                if diameter >= 5 and contrast >= 5:
                    rows.append((f"{key} {insert}: contrast ratio ≥ 0.9", f"{r['contrast_ratio']:.2f}",
                                 r["contrast_ratio"] >= 0.9))
                rows.append((f"{key} {insert}: d′ ≥ the input's", f"{r['d_prime']:.2f} vs {identity[insert]['d_prime']:.2f}",
                             r["d_prime"] >= identity[insert]["d_prime"]))
            first = next(iter(by_method[model]))
            ratio = by_method[model][first]["noise_sd"] / identity[first]["noise_sd"]
            rows.append((f"{key}: noise ≤ 0.5× the input", f"×{ratio:.2f}", ratio <= 0.5))
    met = sum(ok for _, _, ok in rows)
    lines = [f"### Targets of issue 12 for {model}: {met} of {len(rows)} met", "",
             "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'met' if ok else '**missed**'} |" for name, value, ok in rows]
    return lines + [""]


def render(report: Dict, args_slices: int) -> List[str]:
    """The markdown report of a (possibly merged) held-out run."""
    models = report.get("models", {})
    lines = ["# Held-out evaluation", "",
             "Models: " + ", ".join(f"{k} (sha256 {m['sha256'][:12]})" for k, m in models.items()) + ". "
             "Produced by `python benchmarks/heldout.py`; every measure is the library's, every model runs "
             "through `engine.denoise_volume`. Peers in the same run and on the same inputs.", ""]
    if "scans" in report:
        lines += scan_table(report["scans"], f"Held-out scans, simulated dose (mean of {args_slices} slices per scan)")
        held_out = SPLITS[str(report.get("split", "A"))][0]
        lines += ["Held-out scans: " + "; ".join(f"**{n}**: {d}" for n, _, d in held_out) + ".", ""]
    if "single" in report:
        lines += scan_table(report["single"], SINGLE_TITLE)
    if "pixels" in report:
        lines += scan_table(report["pixels"], "Pixel sizes (held-out scans resampled)")
    if "real" in report:
        lines += real_table(report["real"], HELD_OUT_LOW_DOSE[2])
    if "phantoms" in report:
        lines += phantom_tables(report["phantoms"])
    if "phantoms_alone" in report:
        lines += phantom_tables(report["phantoms_alone"], alone=True)
    if "scans" in report and "_seconds_per_slice" in report["scans"]:
        seconds = report["scans"]["_seconds_per_slice"]
        lines += ["Median seconds per slice in this run (model: a 3-slice block through the engine; peers: "
                  "the centre slice): " + ", ".join(f"{m} {v['s']:.2f}" for m, v in seconds.items()) + ".", ""]
    for model in models:
        lines += targets_table(report, model)
    return lines


def merge(paths: Sequence[str], out: Path) -> int:
    """Combine the JSON reports of runs of different sections (same models and seed) into one."""
    import shutil

    report: Dict = {}
    for path in paths:
        part = json.loads(Path(path).read_text())
        for key, value in part.items():
            if key in ("models", "methods", "seed", "split") and key in report and report[key] != value:
                raise SystemExit(f"{path}: {key} differs from the first report; merge only runs of one set-up.")
            report.setdefault(key, value)
        for png in Path(path).parent.glob("*.png"):
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, out / png.name)
    out.mkdir(parents=True, exist_ok=True)
    lines = render(report, report.get("slices", 3))
    lines += [f"![{png.stem}]({png.name})" for png in sorted(out.glob("*.png"))]
    (out / "heldout.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "heldout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help="model file (repeatable; label = file stem); default: the bundled model")
    parser.add_argument("--slices", type=int, default=3, help="measured slices per held-out scan")
    parser.add_argument("--realisations", type=int, default=12, help="noise realisations per phantom and dose")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D even when installed")
    parser.add_argument("--strength", type=float, action="append", default=[],
                        help="also run each model at this strength (repeatable; 1.0 is always run)")
    parser.add_argument("--ensemble", type=int, action="append", default=[], choices=[1, 2, 4, 8],
                        help="also run the first model with this self-ensemble size (repeatable; every model runs "
                             "with the engine's default)")
    parser.add_argument("--quick", action="store_true", help="smaller phantoms, one dose for the scans")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["scans", "single", "pixels", "real", "phantoms", "phantoms-alone"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--split", default="A", choices=sorted(SPLITS),
                        help="held-out scans: A = the shipped model's split (default), B = the leave-one-vendor-out "
                             "rotation (every Philips scan; for models trained with training/configs/rotation_b*.yaml)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "heldout"))
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the heldout.json of runs of different sections into OUT, then stop")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from LowDoseDenoiseLib.modelfile import load_model

    started = time.time()
    models = {}
    for path in args.model or [None]:
        loaded = load_model(path)
        label = f"{loaded.name} {loaded.version}" if path is None else Path(path).stem
        models[label] = loaded
    methods = make_methods(models, not args.no_bm3d, args.device, args.strength, args.ensemble)
    root = shared_data_dir()
    report: Dict[str, object] = {"models": {k: {"name": m.name, "version": m.version, "sha256": m.sha256}
                                            for k, m in models.items()},
                                 "methods": list(methods), "seed": args.seed, "slices": args.slices,
                                 "split": args.split}
    held_out, pixel_rows = SPLITS[args.split]
    lines = ["# Held-out evaluation", "",
             f"Models: {', '.join(f'{k} (sha256 {m.sha256[:12]})' for k, m in models.items())}. "
             f"Produced by `python benchmarks/heldout.py` ({time.strftime('%Y-%m-%d')}).", ""]
    doses = DOSES[:1] if args.quick else DOSES
    if not root.is_dir():
        print(f"Shared data {root} absent: the held-out scans are skipped (phantoms only).")
        args.skip += ["scans", "pixels", "real"]
    series = {}
    if "scans" not in args.skip or "pixels" not in args.skip:
        for name, folder, description in held_out:
            series[name] = (load(root / folder, name), description)
    if "scans" not in args.skip:
        blocks = [Block(name, s.hu[c - 1 : c + 2], s.spacing, d)
                  for name, (s, d) in series.items() for c in centre_indices(s.hu.shape[0], args.slices)]
        kept: Dict[str, Dict[str, np.ndarray]] = {}
        report["scans"] = scan_section(blocks, methods, doses, args.seed, kept)
        lines += scan_table(report["scans"], "Held-out scans, simulated dose (mean of "
                            f"{args.slices} slices per scan)")
        lines += ["Held-out scans: " + "; ".join(f"**{n}**: {d}" for n, (_, d) in series.items()) + ".", ""]
        figure_dir = Path(args.out)
        figure_dir.mkdir(parents=True, exist_ok=True)
        chosen = {k: v for k, v in kept.items() if k.endswith("@25%") or args.quick}
        for png in panel_figures(chosen, figure_dir, {n: s.spacing for n, (s, _) in series.items()}):
            lines.append(f"![{png.stem}]({png.name})")
        lines.append("")
    if "single" not in args.skip and "scans" not in args.skip:
        # the same blocks and noise, the models given the centre slice alone (a 2D image, a one-slice
        # series: the engine repeats it as its own neighbours), so the context's part is seen
        single = {"input": methods["input"]}
        single.update({f"{label} (one slice)": single_slice(methods[label]) for label in models})
        report["single"] = scan_section(blocks, single, DOSES[:1], args.seed)
        lines += scan_table(report["single"], SINGLE_TITLE)
    if "pixels" not in args.skip:
        blocks = []
        for label, name, pixel in pixel_rows:
            s, d = series[name]
            for c in centre_indices(s.hu.shape[0], args.slices):
                hu, spacing = resample_block(s.hu[c - 1 : c + 2], s.spacing, pixel)
                blocks.append(Block(f"{name} @ {label}", hu, spacing, d))
        report["pixels"] = scan_section(blocks, methods, doses, args.seed + 7)
        lines += scan_table(report["pixels"], "Pixel sizes (held-out scans resampled)")
    if "real" not in args.skip:
        name, folder, description = HELD_OUT_LOW_DOSE
        report["real"] = real_low_dose_section(load(root / folder, name), methods, args.slices)
        lines += real_table(report["real"], description)
    if "phantoms" not in args.skip:
        report["phantoms"] = phantom_section(methods, args.realisations, args.seed, args.quick)
        lines += phantom_tables(report["phantoms"])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        png = task_figure(report["phantoms"], Path(args.out))
        lines += [f"![{png.stem}]({png.name})", ""]
    if "phantoms-alone" not in args.skip:
        alone = {"input": methods["input"]}
        alone.update({label: m for label, m in methods.items()
                      if any(label == k or label.startswith(k + " ") for k in models)})
        report["phantoms_alone"] = phantom_section(alone, args.realisations, args.seed, args.quick, alone=True)
        lines += phantom_tables(report["phantoms_alone"], alone=True)
    elapsed = time.time() - started
    lines.append(f"Run time {elapsed / 60:.1f} min on {os.cpu_count()} CPU cores.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "heldout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"Wrote {out / 'heldout.md'} and {out / 'heldout.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
