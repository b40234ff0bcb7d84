"""Comparison figures: original, denoised and their difference in a CT window, and NPS curves.

Matplotlib with the Agg backend only (no display needed).  Used by the demo, the
`compare` command, the benchmarks and the model card.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError

__all__ = [
    "WINDOWS",
    "NPSCurve",
    "comparison_figure",
    "method_grid_figure",
    "nps_figure",
    "parse_window",
    "plot_nps_curves",
]


#: One radial NPS curve: (frequency in mm⁻¹, NPS in HU²·mm²), lists or arrays.
NPSCurve = Tuple[ArrayLike, ArrayLike]

#: Named display windows as (width, level) in HU.
WINDOWS: Dict[str, Tuple[float, float]] = {
    "liver": (400.0, 40.0),  # also called "abdomen soft tissue" on many consoles
    "abdomen": (350.0, 50.0),
    "soft-tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}


def parse_window(window: Union[str, Sequence[float]]) -> Tuple[float, float]:
    """'liver', 'abdomen', ... or 'W,L' or (W, L) -> (width, level); width must be > 0."""
    if isinstance(window, str):
        key = window.strip().lower()
        if key in WINDOWS:
            return WINDOWS[key]
        try:
            width, level = (float(v) for v in key.split(","))
        except ValueError:
            raise InputError(
                f"Unknown window '{window}'; use one of {', '.join(WINDOWS)} or 'W,L' in HU (e.g. 400,40)."
            ) from None
    else:
        width, level = (float(v) for v in window)
    if not width > 0:
        raise InputError(f"Window width must be positive, got {width:g}.")
    return width, level


def _middle_slice(volume: np.ndarray) -> int:
    return volume.shape[0] // 2


def comparison_figure(
    original: np.ndarray,
    denoised: np.ndarray,
    out_png: Union[str, os.PathLike],
    slice_index: Optional[int] = None,
    window: Union[str, Sequence[float]] = "liver",
    spacing: Optional[Sequence[float]] = None,
    reference: Optional[np.ndarray] = None,
    title: Optional[str] = None,
    zoom: Optional[Tuple[int, int, int]] = None,
    nps_curves: Optional[Mapping[str, NPSCurve]] = None,
    nps_note: Optional[str] = None,
) -> Path:
    """Write a PNG panel: original | denoised | difference (| reference) (| NPS), one axial slice.

    ``original``/``denoised`` are (z, y, x) HU arrays (or 2D slices). ``spacing`` is
    the pixel size (x, y[, z]) in mm as ``Volume.spacing``, for a correct aspect.
    ``zoom`` = (row, col, half_size) draws an enlarged inset of that region; by default
    the centre of the image.  ``nps_curves`` maps a label to (frequency in mm⁻¹, NPS in
    HU²·mm²) and adds a column with those noise power spectra; ``nps_note`` is shown
    there instead when the spectra could not be measured.  Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = np.asarray(original)
    denoised = np.asarray(denoised)
    if original.shape != denoised.shape:
        raise InputError(f"Original {original.shape} and denoised {denoised.shape} differ in size.")
    if original.ndim == 2:
        original, denoised = original[None], denoised[None]
        reference = None if reference is None else np.asarray(reference)[None]
    index = _middle_slice(original) if slice_index is None else int(slice_index)
    if not 0 <= index < original.shape[0]:
        raise InputError(f"Slice {index} is outside the volume (0..{original.shape[0] - 1}).")
    width, level = parse_window(window)
    lo, hi = level - width / 2, level + width / 2
    a = original[index].astype(np.float32)
    b = denoised[index].astype(np.float32)
    diff = a - b
    panels = [("Original", a, "gray", (lo, hi)), ("Denoised", b, "gray", (lo, hi))]
    limit = float(max(np.percentile(np.abs(diff), 99.5), 1.0))
    panels.append(("Removed (original − denoised)", diff, "RdBu_r", (-limit, limit)))
    if reference is not None:
        panels.append(("Reference", np.asarray(reference)[index].astype(np.float32), "gray", (lo, hi)))
    col_mm, row_mm = (float(spacing[0]), float(spacing[1])) if spacing is not None else (1.0, 1.0)
    aspect = row_mm / col_mm
    rows, cols = a.shape
    if zoom is None:
        half = max(8, min(rows, cols) // 8)
        zoom = (rows // 2, cols // 2, half)
    zr, zc, zh = zoom
    r0, r1 = max(zr - zh, 0), min(zr + zh, rows)
    c0, c1 = max(zc - zh, 0), min(zc + zh, cols)

    with_nps = nps_curves is not None or nps_note is not None
    columns = len(panels) + (1 if with_nps else 0)
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 8.4), squeeze=False)
    for column, (name, image, cmap, (vmin, vmax)) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        shown = top.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        top.add_patch(plt.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, edgecolor="yellow", linewidth=1))
        top.set_title(name)
        bottom.imshow(image[r0:r1, c0:c1], cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        bottom.set_title(f"{name} (zoom)")
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
        if cmap != "gray":
            fig.colorbar(shown, ax=top, fraction=0.046, pad=0.02, label="HU")
    if with_nps:
        plot_nps_curves(axes[0, -1], nps_curves or {}, note=nps_note)
        axes[1, -1].axis("off")
    window_text = f"window W {width:g} / L {level:g} HU, slice {index}"
    fig.suptitle(f"{title} — {window_text}" if title else window_text)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_nps_curves(axis, curves: Mapping[str, NPSCurve],
                    note: Optional[str] = None, log: bool = False, legend_outside: bool = False) -> None:
    """Draw radial NPS curves (label -> (frequency mm⁻¹, NPS HU²·mm²)) on a matplotlib axis."""
    styles = ["-", "--", "-.", ":"]
    for index, (label, (freq, power)) in enumerate(curves.items()):
        # the colour cycle has 10 colours; after that the line style changes
        axis.plot(np.asarray(freq), np.asarray(power), label=label, linewidth=1.5,
                  linestyle=styles[(index // 10) % len(styles)])
    axis.set_xlabel("spatial frequency (mm⁻¹)")
    axis.set_ylabel("NPS (HU²·mm²)")
    axis.set_title("Noise power spectrum")
    axis.grid(True, alpha=0.3)
    if log:
        axis.set_yscale("log")
    if curves and legend_outside:
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif curves:
        axis.legend(fontsize=8)
    if note:
        axis.text(0.5, 0.5, note, ha="center", va="center", wrap=True, fontsize=9, transform=axis.transAxes)


def nps_figure(curves: Mapping[str, NPSCurve], out_png: Union[str, os.PathLike],
               title: Optional[str] = None, log: bool = False) -> Path:
    """Write a PNG of radial noise power spectra, one curve per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8.6, 4.4))
    plot_nps_curves(axis, curves, log=log, legend_outside=True)
    if title:
        axis.set_title(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def method_grid_figure(
    images: Mapping[str, np.ndarray],
    out_png: Union[str, os.PathLike],
    window: Union[str, Sequence[float]] = "liver",
    spacing: Optional[Sequence[float]] = None,
    zoom: Optional[Tuple[int, int, int]] = None,
    title: Optional[str] = None,
    columns: int = 4,
) -> Path:
    """Write a PNG grid: the first image's whole slice with the zoom box, then every image zoomed.

    ``images`` maps a label to a 2D slice (the same slice for every method), all shown
    in one window, so noise texture and edges compare at a glance.  ``spacing`` is the
    pixel size (x, y[, z]) in mm; ``zoom`` = (row, col, half_size) in pixels (default:
    the centre, an eighth of the slice).  Used by the quality benchmark.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, level = parse_window(window)
    lo, hi = level - width / 2, level + width / 2
    labels = list(images)
    if not labels:
        raise InputError("No images to show.")
    first = np.asarray(images[labels[0]], dtype=np.float32)
    aspect = (float(spacing[1]) / float(spacing[0])) if spacing is not None else 1.0
    rows, cols = first.shape
    if zoom is None:
        zoom = (rows // 2, cols // 2, max(8, min(rows, cols) // 8))
    zr, zc, zh = zoom
    r0, r1, c0, c1 = max(zr - zh, 0), min(zr + zh, rows), max(zc - zh, 0), min(zc + zh, cols)
    cells = len(labels) + 1
    rows_count = int(np.ceil(cells / columns))
    fig, axes = plt.subplots(rows_count, columns, figsize=(3.3 * columns, 3.6 * rows_count), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    overview = axes.ravel()[0]
    overview.imshow(first, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
    overview.add_patch(plt.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, edgecolor="yellow", linewidth=1.2))
    overview.set_title(f"{labels[0]}: whole slice", fontsize=9)
    for axis, label in zip(axes.ravel()[1:], labels):
        image = np.asarray(images[label], dtype=np.float32)
        axis.imshow(image[r0:r1, c0:c1], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        axis.set_title(label, fontsize=9)
    window_text = f"zoomed, window W {width:g} / L {level:g} HU"
    fig.suptitle(f"{title} — {window_text}" if title else window_text, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
