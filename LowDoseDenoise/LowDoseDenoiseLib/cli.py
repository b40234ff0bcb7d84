"""`lowdose-denoise`: the command line, thin over the library.

Subcommands: denoise, simulate, phantom, demo, models, info, series, compare, evaluate, train, export.
Exit codes: 0 success, 2 bad input or usage, or an output that could not be written
(one-line reason on stderr, no traceback), 130 when interrupted (Ctrl-C), 143 when
terminated (SIGTERM, as batch schedulers and `timeout` send).  Every output goes
through :mod:`.io.outputs`: checked before any work (never one of the inputs, never
inside an input folder, an existing one only with --overwrite, no two outputs of a
batch on one path) and written to a temporary name renamed into place when complete,
so a failed, interrupted or terminated run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .engine import NEIGHBOURS  # --neighbours: engine.denoise_volume(neighbours=...)
from .errors import Cancelled, InputError, LowDoseDenoiseError
from .volume import Volume, cast_like

__all__ = [
    "DICOM_COMPRESSIONS",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "MODEL_HELP",
    "OUTPUT_FORMATS",
    "ProgressLog",
    "Terminated",
    "build_parser",
    "cmd_compare",
    "cmd_demo",
    "cmd_denoise",
    "cmd_evaluate",
    "cmd_export",
    "cmd_info",
    "cmd_models",
    "cmd_phantom",
    "cmd_series",
    "cmd_simulate",
    "cmd_train",
    "main",
]


log = logging.getLogger("lowdose_denoise")

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143
OUTPUT_FORMATS = {"nrrd": ".nrrd", "nifti": ".nii.gz", "mha": ".mha", "dicom": ""}
MODEL_HELP = "a bundled model's name (see `lowdose-denoise models`) or a TorchScript model file (default: the default model)"
#: File endings each --output-format accepts for an explicit OUT file.
_FORMAT_SUFFIXES = {"nrrd": (".nrrd", ".nhdr"), "nifti": (".nii.gz", ".nii"), "mha": (".mha", ".mhd")}
DICOM_COMPRESSIONS = ("auto", "none", "rle", "jpeg2000", "jpeg-ls")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every atomic writer cleans up as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised through a subprocess
    raise Terminated()


# ---------------------------------------------------------------- helpers


class ProgressLog:
    """Progress as plain lines for logs and batch jobs: every ``step`` of the total or ``seconds``."""

    def __init__(self, total: int, desc: str, stream: Optional[TextIO] = None, step: float = 0.1,
                 seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.stream = max(int(total), 1), desc, stream
        self.step, self.seconds, self.clock = step, seconds, clock
        self.start = self.last = clock()
        self.next_count = 0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        total = max(int(total), 1)
        if done < total and done < self.next_count and now - self.last < self.seconds:
            return
        self.last = now
        self.next_count = int(done + math.ceil(self.step * total))
        elapsed = now - self.start
        left = f", about {elapsed / done * (total - done):.0f} s left" if 0 < done < total else ""
        print(f"{self.desc}: {done}/{total} slices ({100 * done // total}%), {elapsed:.0f} s elapsed{left}",
              file=self.stream or sys.stderr, flush=True)


def _progress_bar(total: int, quiet: bool, desc: str) -> Optional[Callable[[int, int], None]]:
    """A tqdm bar on a terminal; plain progress lines (every 10% or 30 s) when stderr is not one."""
    if quiet:
        return None
    if not sys.stderr.isatty():
        return ProgressLog(total, desc)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="slice", leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= _total:
            bar.close()

    return update


def _number(kind, name: str, accept: Callable[[float], bool], expected: str, allow_auto: bool = False):
    """An argparse type: parse ``kind`` (int or float) and check it, with a message naming ``name``."""

    def parse(text: str):
        if allow_auto and text == "auto":
            return "auto"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {expected}, got '{text}'") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{name} must be {expected}, got {value:g}")
        return value

    return parse


_strength = _number(float, "strength", lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_batch_size = _number(int, "batch size", lambda v: v >= 1, "'auto' or a whole number of at least 1", allow_auto=True)
_dose = _number(float, "dose", lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1] (e.g. 0.25 for 25%)")
_positive_int = _number(int, "the value", lambda v: v >= 1, "a whole number of at least 1")
_texture = _number(float, "texture", lambda v: math.isfinite(v) and v > 0,
                   "'auto' or a positive apodisation cutoff (e.g. 0.8)", allow_auto=True)


def _check_ct_like(volume, source: str, force: bool) -> None:
    from .engine import ct_range_problem

    problem = ct_range_problem(volume.voxels)
    if problem:
        if not force:
            raise InputError(f"{source}: {problem}; pass --force to process it anyway.")
        warnings.warn(f"{source}: {problem}; processing anyway (--force).", stacklevel=2)


def _check_finite(volume, source: str) -> None:
    if np.issubdtype(volume.voxels.dtype, np.floating) and not np.isfinite(volume.voxels).all():
        bad = int(np.count_nonzero(~np.isfinite(volume.voxels)))
        raise InputError(f"{source} contains {bad} NaN or infinite value(s); fix or mask them first.")


def _check_result(hu: np.ndarray, source: str) -> None:
    """Refuse a non-finite result (an input far outside any CT range) before anything is written."""
    if not np.isfinite(hu).all():
        raise InputError(f"{source}: the result holds NaN or infinite values (the input's values are far outside "
                         "the CT range); nothing was written.")


def _check_shape(volume, source: str, min_size: int) -> None:
    """The blocker that --force cannot lift, checked before the value range."""
    from .engine import check_volume

    try:
        check_volume(volume.voxels, min_size)
    except InputError as error:
        raise InputError(f"{source}: {error} Choose a larger volume (or a model with a smaller minimum).") from None


def _is_dicom_input(source: Path) -> bool:
    from .io.imagefiles import is_dicom_file

    return source.is_dir() or source.suffix.lower() == ".dcm" or is_dicom_file(source)


def _input_paths(source: Path, dicom_output: bool = False) -> List[Path]:
    """What an input occupies: the path, and for a DICOM output from a DICOM file also its folder.

    A derived series written into the folder of a source DICOM file would be read with
    it next time; an image file written there would not.
    """
    if dicom_output and source.is_file() and _is_dicom_input(source):
        return [source, source.parent]
    return [source]


def _check_inputs(inputs: Sequence[Path]) -> None:
    """Each input exists and is a type this program reads, blamed on the input, before any output is planned."""
    from .io.imagefiles import is_image_file

    for source in inputs:
        if not source.exists():
            raise InputError(f"Input {source} does not exist; check the path.")
        if source.is_file() and not is_image_file(source) and not _is_dicom_input(source):
            raise InputError(f"Input {source.name} is neither an image file this program reads (.nrrd, .nhdr, .nii, "
                             ".nii.gz, .mha, .mhd) nor a DICOM file; give one of those or a DICOM series folder.")


def _plan_output(source: Path, out: Path, many: bool, fmt: str) -> Tuple[Path, bool]:
    """(target path, as DICOM?) for one input: OUT itself, or a name inside the folder OUT."""
    from .io.imagefiles import is_image_file

    is_dicom = _is_dicom_input(source)
    into_folder = many or out.is_dir()
    stem = source.name.split(".")[0]
    if not into_folder and fmt in _FORMAT_SUFFIXES and not out.name.lower().endswith(_FORMAT_SUFFIXES[fmt]):
        raise InputError(f"OUT {out.name} does not end in {' or '.join(_FORMAT_SUFFIXES[fmt])}, but --output-format "
                         f"{fmt} asks for that format; make them agree (or leave --output-format out).")
    if not into_folder and fmt == "dicom" and is_image_file(out):
        raise InputError(f"OUT {out.name} is an image file name, but --output-format dicom writes a series folder; "
                         "give a folder path (or another --output-format).")
    if fmt == "auto":
        fmt = "dicom" if is_dicom and (into_folder or not is_image_file(out)) else "same"
    if fmt == "dicom":
        return (out / f"{stem}_denoised" if into_folder else out), True
    if not into_folder:
        return out, False
    if fmt == "same":
        lower = source.name.lower()
        suffix = ".nii.gz" if lower.endswith(".nii.gz") else (".nrrd" if is_dicom else source.suffix)
        return out / f"{stem}_denoised{suffix}", False
    return out / f"{stem}_denoised{OUTPUT_FORMATS[fmt]}", False


def _written(args: argparse.Namespace) -> List[Path]:
    """The outputs this run completed so far (for the summary after a failure or an interrupt)."""
    if not hasattr(args, "written_outputs"):
        args.written_outputs = []
    return args.written_outputs


# ---------------------------------------------------------------- commands


def cmd_denoise(args: argparse.Namespace) -> int:
    from . import engine, modelfile
    from .io import imagefiles, outputs

    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output)
    many = len(inputs) > 1
    _check_inputs(inputs)
    if many and not out.is_dir():
        raise InputError(f"With {len(inputs)} inputs, OUT must be an existing folder; {out} is not.")
    occupied = [p for source in inputs for p in _input_paths(source)]
    plans = []
    for source in inputs:
        target, dicom_out = _plan_output(source, out, many, args.output_format)
        if dicom_out:
            folders = [p for s in inputs for p in _input_paths(s, dicom_output=True)]
            outputs.check_output(target, folders, overwrite=args.overwrite, folder=True)
        else:
            imagefiles.check_output_path(target, occupied, overwrite=args.overwrite)
        plans.append((source, target, dicom_out))
    outputs.check_distinct([(source, target) for source, target, _ in plans])
    compression = None if args.dicom_compression == "auto" else args.dicom_compression
    if compression is not None and any(dicom_out for _, _, dicom_out in plans):
        from .io import dicomwrite

        dicomwrite.resolve_compression(compression, None)
    engine.resolve_device(args.device)
    model = modelfile.load_model(args.model)
    if not args.quiet:
        print(f"model: {model.summary()}", file=sys.stderr)
    written = _written(args)
    failed: List[Tuple[Path, InputError]] = []
    for source, target, dicom_out in plans:
        try:
            result = _denoise_one(args, model, source, target, dicom_out, occupied, compression)
        except InputError as error:
            if not many:
                raise
            failed.append((source, error))
            print(f"lowdose-denoise: error: {error}", file=sys.stderr)
            continue
        written.append(result)
        print(result)
    if failed:
        print(f"lowdose-denoise: {len(written)} of {len(plans)} input(s) denoised; failed: "
              + "; ".join(str(source) for source, _ in failed)
              + (". Written: " + ", ".join(str(p) for p in written) if written else ". Nothing was written."),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _denoise_one(args, model, source: Path, target: Path, dicom_out: bool, occupied, compression) -> Path:
    from . import engine
    from .io import imagefiles

    volume = imagefiles.read_volume(source, series_uid=args.series, force=args.force)
    _check_shape(volume, str(source), model.min_size)
    _check_finite(volume, str(source))
    _check_ct_like(volume, str(source), args.force)
    grid = None
    if args.regularize:
        from .io import regulargrid

        grid = regulargrid.regularize(volume)
        if not args.quiet:
            back = (" The derived series is sampled back at each source slice's own position." if dicom_out else
                    f" {target.name} holds the regular grid.")
            print(f"{source.name}: " + (grid.notes[0] + back if grid.resampled else
                                        "already on a regular grid; --regularize resamples nothing."),
                  file=sys.stderr)
    work = grid.volume if grid is not None else volume
    # The result goes straight into an array of the input's type (int16 stays int16, rounded and
    # clipped batch by batch; the engine refuses a non-finite result), and the input is let go
    # before writing: memory stays near input + output (benchmarks/memory.py).  A regularized
    # series is denoised in float32 on its grid.
    denoised = work.with_voxels(np.empty_like(work.voxels))
    engine.denoise_volume(
        work.voxels,
        model,
        device=args.device,
        batch_size=args.batch_size,
        strength=args.strength,
        progress=_progress_bar(work.voxels.shape[0], args.quiet, source.name),
        spacing=work.spacing,
        out=denoised.voxels,
        neighbours=NEIGHBOURS[args.neighbours],
        ensemble=args.ensemble,
    )
    del volume, work
    info = {"name": model.name, "version": model.version, "sha256": model.sha256, "strength": args.strength,
            "ensemble": args.ensemble}
    if grid is not None and grid.resampled:
        return _write_regularized(args, grid, denoised, target, dicom_out, occupied, compression, info)
    if dicom_out:
        from .io import dicomwrite

        return dicomwrite.write_derived_series(denoised, None, target, model_info=info,
                                               overwrite=args.overwrite, inputs=occupied, compression=compression)
    return imagefiles.write_volume(denoised, target, overwrite=args.overwrite, inputs=occupied)


def _write_regularized(args, grid, denoised: Volume, target: Path, dicom_out: bool, occupied, compression,
                       info) -> Path:
    """A result on the regular grid: as a derived series, sampled back at each source slice (its true
    position, referencing it); as an image file, the grid itself in the input's pixel type (a file
    holds one regular grid)."""
    from .io import imagefiles

    if dicom_out:
        from .io import dicomwrite

        hu = grid.to_source(denoised.voxels)
        return dicomwrite.write_derived_series(grid.source, hu, target, model_info=info, overwrite=args.overwrite,
                                               inputs=occupied, compression=compression)
    voxels = cast_like(denoised.voxels, grid.source.voxels.dtype)
    return imagefiles.write_volume(denoised.with_voxels(voxels), target, overwrite=args.overwrite, inputs=occupied)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .io import imagefiles
    from .quality import simulate

    source, out = Path(args.input), Path(args.output)
    _check_inputs([source])
    occupied = _input_paths(source)
    imagefiles.check_output_path(out, occupied, overwrite=args.overwrite)
    volume = imagefiles.read_volume(source, force=args.force)
    _check_finite(volume, str(source))
    _check_ct_like(volume, str(source), args.force)
    hu = simulate.simulate_low_dose(
        volume.hu(), volume.spacing, args.dose, seed=args.seed, photons=args.photons, texture=args.texture
    )
    _check_result(hu, str(source))
    print(imagefiles.write_volume(volume.with_voxels(cast_like(hu, volume.pixel_type)), out,
                                  overwrite=args.overwrite, inputs=occupied))
    return EXIT_OK


def cmd_phantom(args: argparse.Namespace) -> int:
    from .io import imagefiles
    from .quality import phantom

    out = Path(args.output)
    imagefiles.check_output_path(out, overwrite=args.overwrite)
    result = phantom.make_phantom(size=args.size, slices=args.slices, seed=args.seed)
    volume = result.volume()
    volume = volume.with_voxels(cast_like(volume.voxels, np.int16))
    print(imagefiles.write_volume(volume, out, overwrite=args.overwrite))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic low-dose abdomen -> bundled model -> input, output, reference and a PNG.

    OUT is checked first and written in one piece (a temporary folder renamed into
    place), so a refused or failed demo creates nothing.
    """
    from . import engine, modelfile
    from .io import imagefiles, outputs
    from .quality import figures, phantom

    out = Path(args.out)
    outputs.check_output(out, overwrite=args.overwrite, folder=True)
    model = modelfile.load_model(args.model)
    if args.size < model.min_size:
        raise InputError(f"--size {args.size} is below the model's minimum in-plane size of {model.min_size} "
                         f"pixels; use --size {max(model.min_size, 64)} or more. Nothing was written.")
    print(f"model: {model.summary()}")
    truth = phantom.make_phantom(size=args.size, slices=args.slices, seed=args.seed)
    clean, low_dose, spacing = phantom.make_low_dose_phantom(
        size=args.size, slices=args.slices, dose_fraction=args.dose, seed=args.seed
    )
    progress = _progress_bar(low_dose.shape[0], args.quiet, "demo")
    hu = engine.denoise_volume(low_dose, model, device=args.device, progress=progress, spacing=spacing)
    _check_result(hu, "the demo phantom")
    names = ("input_low_dose", "denoised", "reference_full_dose")
    with outputs.atomic_folder(out) as tmp:
        for name, voxels in zip(names, (low_dose, hu, clean)):
            volume = Volume(voxels=np.rint(voxels).astype(np.int16), spacing=spacing)
            imagefiles.write_volume(volume, tmp / f"{name}.nrrd")
        figures.comparison_figure(
            low_dose, hu, tmp / "comparison.png", window="liver", spacing=spacing,
            reference=clean, title=f"{model.name} on a synthetic abdomen at {args.dose:.0%} dose",
        )
    _written(args).append(out)
    liver = truth.labels["liver"]
    before = float(np.std((low_dose - clean)[liver]))
    after = float(np.std((hu - clean)[liver]))
    bias = float(np.mean((hu - clean)[liver]))
    print(f"liver error SD vs the noise-free phantom: {before:.1f} HU (low dose) -> {after:.1f} HU (denoised); "
          f"mean bias {bias:+.1f} HU")
    for name in names:
        print(f"{name}: {out / (name + '.nrrd')}")
    print(f"comparison figure: {out / 'comparison.png'}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled models with name, version, summary and training dose; mark the default."""
    import os

    from . import modelfile

    entries = modelfile.list_models()
    if not entries:
        print(f"no bundled models in {modelfile.MODELS_DIR}; give --model FILE")
    for entry in entries:
        print(entry.line())
    override = os.environ.get(modelfile.MODEL_ENV)
    if override:
        print(f"(${modelfile.MODEL_ENV} is set: the default is {override})")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from . import modelfile

    print(modelfile.describe(modelfile.load_model(args.model)))
    return EXIT_OK


def cmd_series(args: argparse.Namespace) -> int:
    from .io import dicomread

    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the folder that holds the DICOM files.")
    summaries = dicomread.list_series(folder)
    for index, summary in enumerate(summaries):
        print(("* " if index == 0 else "  ") + summary.line())
    if len(summaries) > 1:
        print("(* = the series `denoise` reads by default; pick another with --series UID)")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Original | denoised | difference with a zoomed inset, and the two noise power spectra."""
    from .io import imagefiles, outputs
    from .quality import figures, metrics

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"{out.name}: the comparison figure is a PNG; give a file name ending in .png.")
    sources = [Path(args.original), Path(args.denoised)]
    _check_inputs(sources)
    outputs.check_output(out, [p for source in sources for p in _input_paths(source)], overwrite=args.overwrite)
    figures.parse_window(args.window)
    original = imagefiles.read_volume(args.original)
    denoised = imagefiles.read_volume(args.denoised)
    _check_finite(original, str(args.original))
    _check_finite(denoised, str(args.denoised))
    metrics.check_same_geometry(original, denoised, ("original", "denoised"))
    depth = original.voxels.shape[0]
    index = depth // 2 if args.slice is None else args.slice
    if not 0 <= index < depth:
        raise InputError(f"Slice {index} is outside the volume (0..{depth - 1}).")
    block = slice(max(0, index - 8), min(depth, index + 8))  # NPS from up to 16 slices around the shown one
    curves, note = {}, None
    try:
        before, after = metrics.nps_pair(original.hu()[block], denoised.hu()[block], original.spacing)
        curves = {f"original (mean {before.mean_frequency:.2f} mm⁻¹)": (before.frequency, before.nps),
                  f"denoised (mean {after.mean_frequency:.2f} mm⁻¹)": (after.frequency, after.nps)}
    except InputError as error:
        note = f"NPS not measured:\n{error}"
    with outputs.atomic_file(out) as handle:
        figures.comparison_figure(original.hu(), denoised.hu(), handle.path, slice_index=index,
                                  window=args.window, spacing=original.spacing, nps_curves=curves, nps_note=note)
    print(out)
    return EXIT_OK




def _check_roi_spec(spec: str) -> None:
    """A circle ROI must be four finite numbers; say which part is not (before any file is read)."""
    from .quality.metrics import ROI_SYNTAX

    body = spec.split("=", 1)[1] if "=" in spec and not Path(spec).exists() else spec
    parts = [part.strip() for part in body.split(",")]
    if len(parts) != 4 or Path(body).exists() or any(c in body for c in "/\\:"):
        return
    for label, part in zip(("Z", "Y", "X", "R"), parts):
        try:
            value = float(part)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise InputError(f"--roi {spec}: {label} is '{part}', not a finite number; a circle ROI is Z,Y,X,R "
                             f"({ROI_SYNTAX}).")


def _roi_files(specs: Sequence[str]) -> List[Path]:
    """The label-map files the --roi values read (they are inputs too)."""
    files = []
    for spec in specs:
        for candidate in (spec, spec.split("=", 1)[-1], spec.split("=", 1)[-1].rsplit(":", 1)[0]):
            if candidate and Path(candidate).is_file():
                files.append(Path(candidate))
                break
    return files


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Full-reference (with --reference) or no-reference image-quality metrics of a denoised volume."""
    import json

    from .io import imagefiles, outputs
    from .quality import metrics

    sources = [Path(p) for p in (args.denoised, args.reference, args.input) if p]
    _check_inputs(sources)
    for spec in args.roi or []:
        _check_roi_spec(spec)
    occupied = [p for source in sources for p in _input_paths(source)] + _roi_files(args.roi or [])
    json_out = Path(args.json) if args.json else None
    if json_out is not None:
        outputs.check_output(json_out, occupied, overwrite=args.overwrite)
    metrics.window_bounds(args.window)
    denoised = imagefiles.read_volume(args.denoised)
    reference = imagefiles.read_volume(args.reference) if args.reference else None
    original = imagefiles.read_volume(args.input) if args.input else None
    for volume, source in ((denoised, args.denoised), (reference, args.reference), (original, args.input)):
        if volume is not None:
            _check_finite(volume, str(source))
    rois = []
    for index, spec in enumerate(args.roi or []):
        rois.extend(metrics.rois_from_spec(spec, denoised, index))
    report = metrics.evaluate(denoised, reference=reference, input=original, rois=rois, window=args.window)
    report["files"] = {"denoised": str(args.denoised), "reference": args.reference, "input": args.input}
    for line in metrics.format_report(report):
        if not line.startswith("WARNING: "):
            print(line)
    for message in report["warnings"]:  # part of the report, so printed even where warnings are filtered
        print(f"warning: {message}", file=sys.stderr)
    if json_out is not None:
        outputs.write_text(json_out, json.dumps(outputs.json_ready(report), indent=1, allow_nan=False))
        print(f"metrics: {json_out}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    config = Path(args.config)
    if config.is_file():
        try:
            config.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"Training config {config} is not a text file (YAML or TOML); give the .yaml or .toml "
                             "config of the run.") from None
    from .training import trainer

    print(trainer.train_from_config(args.config, resume=not args.restart, progress=not args.quiet, seed=args.seed))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .training import export

    print(export.export_checkpoint(args.checkpoint, args.output, name=args.name, version=args.version,
                                   overwrite=args.overwrite, keep_low_sigma=args.keep_low_sigma,
                                   slice_spacing=args.slice_spacing, average=args.average))
    return EXIT_OK


# ---------------------------------------------------------------- parser



def build_parser() -> argparse.ArgumentParser:
    from . import engine  # numpy and the model file reader only; torch is imported when a model runs

    parser = argparse.ArgumentParser(
        prog="lowdose-denoise",
        description="Denoise low-dose CT with a deep-learning generator (the LowDoseDenoise engine).",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, notes or warnings")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print the library's log notes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("denoise", help="denoise image files or DICOM series folders")
    p.add_argument("inputs", nargs="+", metavar="IN", help="NRRD, NIfTI, MHA/MHD file or DICOM series folder")
    p.add_argument("output", metavar="OUT", help="output file, or a folder for several inputs")
    p.add_argument("--model", metavar="NAME|FILE", help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--strength", type=_strength, default=1.0, help="0 = unchanged, 1 = full model output")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="slices per batch (default auto)")
    p.add_argument("--neighbours", choices=sorted(NEIGHBOURS), default="auto",
                   help="give the network the neighbouring slices: auto (unless the slices lie farther apart than "
                        "in the model's training; then each slice is denoised on its own), on, off")
    p.add_argument("--ensemble", type=int, choices=sorted(engine.ENSEMBLES), default=engine.DEFAULT_ENSEMBLE,
                   help="self-ensemble: run the network on this many in-plane symmetries of each slice (transposed, "
                        f"rotated, flipped) and average; 1 = one pass (fastest), default {engine.DEFAULT_ENSEMBLE}")
    p.add_argument("--output-format", choices=["auto", *OUTPUT_FORMATS], default="auto",
                   help="auto: DICOM for a DICOM input, else the input's format or OUT's extension")
    p.add_argument("--series", help="Series Instance UID to read when a folder holds several series")
    p.add_argument("--dicom-compression", choices=DICOM_COMPRESSIONS, default="auto",
                   help="transfer syntax of a DICOM output: auto (as the source when it can be encoded losslessly, "
                        "else none), none, rle, jpeg2000 or jpeg-ls (all lossless)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--force", action="store_true", help="process input that does not look like CT")
    p.add_argument("--regularize", action="store_true",
                   help="a DICOM series with gantry tilt, a missing slice or uneven spacing: resample it onto a "
                        "regular grid (orthogonal to the slices, the smallest slice distance) for denoising, as "
                        "dcm2niix does; a DICOM output is sampled back so that each derived slice lies at its "
                        "source slice's position and references it, an image file holds the grid. Regular "
                        "series pass through unchanged")
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("simulate", help="simulate a lower-dose scan (projection-domain noise insertion)")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--dose", type=_dose, required=True, help="dose fraction of the input's dose, e.g. 0.25")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photons", type=float, help="fixed photons per ray at full dose (default: calibrate from the input's noise)")
    p.add_argument("--texture", type=_texture, default="auto",
                   help="'auto' (match the input's noise) or an apodisation cutoff")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--force", action="store_true", help="process input that does not look like CT")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("phantom", help="write a synthetic abdominal CT phantom")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--slices", type=_positive_int, default=16)
    p.add_argument("--size", type=_positive_int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("demo", help="denoise a synthetic low-dose abdomen and write a comparison figure")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--model", metavar="NAME|FILE", help=MODEL_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=_positive_int, default=320)
    p.add_argument("--slices", type=_positive_int, default=8)
    p.add_argument("--dose", type=_dose, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the bundled models (name, version, summary, dose range, default)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="show a model's metadata and SHA-256")
    p.add_argument("model", nargs="?", metavar="NAME|FILE", help=MODEL_HELP)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("series", help="list the DICOM series in a folder")
    p.add_argument("folder")
    p.set_defaults(func=cmd_series)

    p = sub.add_parser("compare", help="write a comparison figure of an original and its denoised result")
    p.add_argument("original")
    p.add_argument("denoised")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--slice", type=int, help="axial slice index (default: middle)")
    p.add_argument("--window", default="liver", help="liver, abdomen, lung, bone or W,L in HU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=cmd_compare)

    from .quality.metrics import ROI_SYNTAX

    p = sub.add_parser("evaluate", help="image-quality metrics of a denoised volume, with or without a reference")
    p.add_argument("--denoised", required=True, help="the denoised volume (file or DICOM folder)")
    p.add_argument("--reference", help="full-dose reference on the same grid: full-reference metrics")
    p.add_argument("--input", help="the low-dose input that was denoised: residual check and before/after noise")
    p.add_argument("--roi", action="append", metavar="SPEC", help=f"repeatable; {ROI_SYNTAX}. "
                   "CNR is computed between the first two ROIs")
    p.add_argument("--window", default="liver", help="display window for PSNR/SSIM: liver, abdomen or W,L in HU")
    p.add_argument("--json", metavar="OUT", help="also write all metrics (and NPS curves) to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="train a generator (unpaired CycleGAN or paired) from a config file")
    p.add_argument("--config", required=True, help="YAML or TOML training config")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming the run's checkpoint")
    p.add_argument("--seed", type=int,
                   help="this seed instead of the config's, in its own run folder (<name>-seed<N>): runs of one "
                        "recipe for `export --average`")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a training checkpoint as a TorchScript model file")
    p.add_argument("checkpoint")
    p.add_argument("output", metavar="OUT.pt")
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    p.add_argument("--keep-low-sigma", type=float, metavar="PX",
                   help="export with a low-frequency pass-through of this σ in pixels (the Gaussian low-pass part "
                        "of the predicted noise is not removed: faint large lesions keep their contrast); "
                        "default: as trained")
    p.add_argument("--slice-spacing", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="the distances (mm) between context slices seen in training, for a checkpoint written "
                        "before the trainer recorded them; the engine denoises slices farther apart one by one")
    p.add_argument("--average", action="append", default=[], metavar="CHECKPOINT",
                   help="another checkpoint of the same recipe (another seed, the same start); the exported "
                        "generator is the mean of all their weights (repeatable)")
    p.set_defaults(func=cmd_export)

    from .readerstudy.cli import add_parser as add_reader_study_parser

    add_reader_study_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library warnings reach the user through `warnings` (printed below); the log repeats
    # them for Slicer's log window, so the CLI shows log records only when asked.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s: %(message)s")
    if args.quiet:
        warnings.simplefilter("ignore")
    else:
        warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    args.written_outputs = []
    previous = _install_sigterm()
    try:
        return args.func(args)
    except Terminated:
        print(f"lowdose-denoise: terminated (SIGTERM); {_kept(args)}", file=sys.stderr)
        return EXIT_TERMINATED
    except (Cancelled, KeyboardInterrupt):
        print(f"lowdose-denoise: interrupted; {_kept(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LowDoseDenoiseError as error:
        print(f"lowdose-denoise: error: {error}", file=sys.stderr)
        if args.written_outputs:
            print(f"lowdose-denoise: {_kept(args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # reading an input the library did not check (permission, I/O error)
        where = f" {error.filename}" if error.filename else ""
        print(f"lowdose-denoise: error:{where}: {error.strerror or error}; {_kept(args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        _restore_sigterm(previous)


def _kept(args: argparse.Namespace) -> str:
    written = getattr(args, "written_outputs", [])
    if not written:
        return "nothing was written."
    return (f"the output being written was removed; {len(written)} finished output(s) were kept: "
            + ", ".join(str(p) for p in written) + ".")


def _install_sigterm():
    """Turn SIGTERM into :class:`Terminated` (main thread only; elsewhere signals cannot be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - an embedding that owns the signals
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
