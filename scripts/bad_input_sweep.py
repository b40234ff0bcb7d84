"""The longer bad-input sweep of issue 15: many careless, unlucky or hostile command lines.

Each case runs `lowdose-denoise` as its own process in a fresh copy of a folder of
inputs (good and bad images, DICOM series, model files, configs) and checks what the
fast pytest suite (Testing/Python/test_bad_inputs.py) checks, over a wider set:

* the exit code (2 for bad input, unless the case says otherwise);
* a one-line ``error:`` message on stderr and no Python traceback;
* every input byte-identical afterwards (SHA-256 of every file before and after);
* nothing half-written: no ``.partial`` file or folder, and a refused run adds no file.

It prints one line per case and a summary, and exits 1 when any case fails.  About three
minutes on two cores::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bad_input_sweep.py [-k SUBSTRING] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "LowDoseDenoise"))
sys.path.insert(0, str(REPO / "Testing" / "Python"))

PARTIAL = ".partial"  # io.outputs.PARTIAL: the marker of the atomic writer's temporary names


@dataclass
class Case:
    """One command line: ``argv`` with {placeholders} for files of the work folder (``{w}`` is the folder)."""

    name: str
    argv: Sequence[str]
    expect: str = ""  # a fragment the message must contain
    code: int = 2
    setup: Optional[Callable[[Path], None]] = None
    may_add: Sequence[str] = field(default_factory=tuple)  # files a (partly) successful run may add


# ------------------------------------------------------------------ the folder of inputs


def _write_inputs(folder: Path) -> None:
    """Good and bad inputs, written once and copied for every case."""
    import SimpleITK as sitk
    from dicom_fixtures import write_ct_series

    from conftest import save_test_model
    from LowDoseDenoiseLib.io.imagefiles import write_volume
    from LowDoseDenoiseLib.volume import Volume

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:5, 0:40, 0:48]
    body = ((y - 20) / 17.0) ** 2 + ((x - 24) / 21.0) ** 2 < 1.0
    ct = np.rint(np.where(body, 50.0, -1000.0) + rng.normal(0, 25, body.shape)).astype(np.int16)
    geometry = dict(spacing=(0.73, 0.81, 2.5), origin=(-120.5, 33.25, 410.0))
    write_volume(Volume(ct, **geometry), folder / "ct.nrrd")
    write_volume(Volume(ct, **geometry), folder / "ct.nii.gz")
    write_volume(Volume(ct, spacing=(0.9, 0.9, 3.0)), folder / "other_grid.nrrd")
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    write_volume(Volume(ct, **geometry), folder / "a" / "x.nrrd")
    write_volume(Volume(ct, **geometry), folder / "b" / "x.nrrd")
    write_volume(Volume(np.full(ct.shape, np.nan, np.float32)), folder / "nan.nrrd")
    with_inf = ct.astype(np.float32)
    with_inf[2, 10, 10] = np.inf
    write_volume(Volume(with_inf), folder / "inf.nrrd")
    huge = np.where(body, np.finfo(np.float64).max, -1000.0)
    write_volume(Volume(huge), folder / "huge.nrrd")
    write_volume(Volume(np.full((1, 1, 1), 40, np.int16)), folder / "tiny.nrrd")
    write_volume(Volume(rng.integers(0, 255, ct.shape).astype(np.uint8)), folder / "eightbit.nrrd")
    write_volume(Volume(body.astype(np.int16)), folder / "mask.nrrd")
    sitk.WriteImage(sitk.Image([48, 40, 5], sitk.sitkVectorFloat32, 3), str(folder / "rgb.mha"))
    sitk.WriteImage(sitk.Image([48, 40, 5, 2], sitk.sitkInt16), str(folder / "4d.nii.gz"))
    good = (folder / "ct.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "garbage.nrrd").write_bytes(b"NRRD0004\ntype: banana\n\n" + bytes(range(256)) * 4)
    (folder / "garbage.nii.gz").write_bytes(gzip.compress(b"not nifti at all" * 100))
    (folder / "empty.nrrd").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "existing.nrrd").write_bytes(b"an earlier result\n")
    (folder / "existing.png").write_bytes(b"an earlier figure\n")
    (folder / "existing.json").write_text("{}\n")
    (folder / "emptydir").mkdir()
    write_ct_series(folder / "series", shape=(4, 40, 48))
    write_ct_series(folder / "mr", shape=(3, 40, 48), modality="MR")
    write_ct_series(folder / "two", shape=(3, 40, 48), prefix="a")
    write_ct_series(folder / "two", shape=(3, 40, 48), prefix="b", series_number=4)
    save_test_model(folder / "model.pt")
    import torch

    torch.save({"weights": torch.zeros(3)}, folder / "weights.pt")
    (folder / "garbage.pt").write_bytes(b"\x00not a model" * 100)
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (folder / "broken.yaml").write_text("model: [unclosed\n  - : :\n")
    (folder / "labels.nrrd").write_bytes(b"")  # an empty label-map file


# ------------------------------------------------------------------ the cases


def cases() -> List[Case]:
    m = ["--model", "{w}/model.pt"]
    out = "{w}/out.nrrd"
    dn = ["denoise"]
    c = [
        # inputs that cannot be read or are not CT
        Case("denoise: missing input", [*dn, "{w}/nope.nrrd", out, *m], "does not exist"),
        Case("denoise: a text file", [*dn, "{w}/notes.txt", out, *m], "neither an image file"),
        Case("denoise: empty .nrrd", [*dn, "{w}/empty.nrrd", out, *m]),
        Case("denoise: garbage .nrrd", [*dn, "{w}/garbage.nrrd", out, *m], "Cannot read"),
        Case("denoise: garbage .nii.gz", [*dn, "{w}/garbage.nii.gz", "{w}/o.nii.gz", *m]),
        Case("denoise: truncated .nii.gz", [*dn, "{w}/truncated.nii.gz", "{w}/o.nii.gz", *m], "truncated"),
        Case("denoise: all NaN", [*dn, "{w}/nan.nrrd", out, *m], "NaN or infinite"),
        Case("denoise: one inf voxel", [*dn, "{w}/inf.nrrd", out, *m], "NaN or infinite"),
        Case("denoise: float64 max (non-finite result)", [*dn, "{w}/huge.nrrd", out, "--force", *m],
             "NaN or infinite"),
        Case("denoise: colour image", [*dn, "{w}/rgb.mha", out, *m], "components"),
        Case("denoise: 4D image", [*dn, "{w}/4d.nii.gz", "{w}/o.nii.gz", *m], "4D"),
        Case("denoise: 1x1x1 volume", [*dn, "{w}/tiny.nrrd", out, *m], "below the model's minimum"),
        Case("denoise: 8-bit picture", [*dn, "{w}/eightbit.nrrd", out, *m], "8-bit"),
        Case("denoise: a mask", [*dn, "{w}/mask.nrrd", out, *m], "looks like a mask"),
        Case("denoise: empty folder", [*dn, "{w}/emptydir", "{w}/o", *m]),
        Case("denoise: MR series", [*dn, "{w}/mr", "{w}/o", *m], "MR"),
        Case("denoise: two series, unknown --series", [*dn, "{w}/two", "{w}/o", "--series", "1.2.3.4", *m],
             "1.2.3.4"),
        # outputs
        Case("denoise: output onto its input", [*dn, "{w}/ct.nrrd", "{w}/ct.nrrd", *m]),
        Case("denoise: output onto its input, --overwrite", [*dn, "{w}/ct.nrrd", "{w}/ct.nrrd", "--overwrite", *m]),
        Case("denoise: existing output", [*dn, "{w}/ct.nrrd", "{w}/existing.nrrd", *m], "--overwrite"),
        Case("denoise: output folder missing", [*dn, "{w}/ct.nrrd", "{w}/no/such/o.nrrd", *m], "does not exist"),
        Case("denoise: unknown output extension", [*dn, "{w}/ct.nrrd", "{w}/o.txt", *m], "extension"),
        Case("denoise: --output-format vs extension", [*dn, "{w}/ct.nrrd", out, "--output-format", "nifti", *m],
             "--output-format"),
        Case("denoise: series into itself", [*dn, "{w}/series", "{w}/series", "--overwrite", *m]),
        Case("denoise: series inside itself", [*dn, "{w}/series", "{w}/series/derived", *m]),
        Case("denoise: two inputs, OUT not a folder", [*dn, "{w}/ct.nrrd", "{w}/ct.nii.gz", out, *m], "folder"),
        Case("denoise: colliding batch names", [*dn, "{w}/a/x.nrrd", "{w}/b/x.nrrd", "{w}/emptydir", *m]),
        # options
        *[Case(f"denoise: --strength {v}", [*dn, "{w}/ct.nrrd", out, "--strength", v, *m], "strength")
          for v in ("-1", "2", "nan", "abc")],
        *[Case(f"denoise: --batch-size {v}", [*dn, "{w}/ct.nrrd", out, "--batch-size", v, *m], "batch size")
          for v in ("0", "-3", "abc")],
        *[Case(f"denoise: --device {v}", [*dn, "{w}/ct.nrrd", out, "--device", v, *m], "device")
          for v in ("banana", "cuda:x", "cuda:99")],
        Case("denoise: --dicom-compression banana", [*dn, "{w}/series", "{w}/o", "--dicom-compression", "banana", *m],
             "invalid choice"),
        # models
        Case("denoise: model file missing", [*dn, "{w}/ct.nrrd", out, "--model", "{w}/nope.pt"], "not found"),
        Case("denoise: model is garbage", [*dn, "{w}/ct.nrrd", out, "--model", "{w}/garbage.pt"],
             "not a TorchScript model file"),
        Case("denoise: model is a pickle of weights", [*dn, "{w}/ct.nrrd", out, "--model", "{w}/weights.pt"],
             "lowdose-denoise export"),
        Case("denoise: unknown model name", [*dn, "{w}/ct.nrrd", out, "--model", "no-such-model"],
             "neither a model file nor a bundled model"),
        Case("info: garbage model", ["info", "{w}/garbage.pt"], "not a TorchScript"),
        # simulate, phantom, demo
        *[Case(f"simulate: --dose {v}", ["simulate", "{w}/ct.nrrd", out, "--dose", v], "dose") for v in ("0", "1.5", "abc")],
        *[Case(f"simulate: --texture {v}", ["simulate", "{w}/ct.nrrd", out, "--dose", "0.5", "--texture", v], "texture")
          for v in ("banana", "-1", "inf")],
        Case("simulate: onto its input", ["simulate", "{w}/ct.nrrd", "{w}/ct.nrrd", "--dose", "0.5", "--overwrite"]),
        Case("simulate: NaN input", ["simulate", "{w}/nan.nrrd", out, "--dose", "0.5"], "NaN or infinite"),
        *[Case(f"phantom: --{k} {v}", ["phantom", out, f"--{k}", v]) for k, v in (("size", "0"), ("slices", "-1"))],
        Case("phantom: existing output", ["phantom", "{w}/existing.nrrd"], "--overwrite"),
        Case("demo: --out is a file", ["demo", "--out", "{w}/existing.nrrd", *m]),
        Case("demo: --size below the model's minimum", ["demo", "--out", "{w}/demo", "--size", "4", *m], "--size"),
        # compare and evaluate
        Case("compare: not a .png", ["compare", "{w}/ct.nrrd", "{w}/ct.nrrd", "--out", "{w}/f.jpg"], ".png"),
        Case("compare: existing figure", ["compare", "{w}/ct.nrrd", "{w}/ct.nrrd", "--out", "{w}/existing.png"],
             "--overwrite"),
        Case("compare: other grid", ["compare", "{w}/ct.nrrd", "{w}/other_grid.nrrd", "--out", "{w}/f.png"],
             "geometry"),
        Case("compare: all NaN", ["compare", "{w}/ct.nrrd", "{w}/nan.nrrd", "--out", "{w}/f.png"], "NaN"),
        Case("compare: --window banana", ["compare", "{w}/ct.nrrd", "{w}/ct.nrrd", "--out", "{w}/f.png",
                                          "--window", "banana"]),
        Case("compare: --slice 99", ["compare", "{w}/ct.nrrd", "{w}/ct.nrrd", "--out", "{w}/f.png", "--slice", "99"],
             "outside the volume"),
        Case("evaluate: --json onto its input", ["evaluate", "--denoised", "{w}/ct.nrrd", "--json", "{w}/ct.nrrd",
                                                 "--overwrite"]),
        Case("evaluate: existing --json", ["evaluate", "--denoised", "{w}/ct.nrrd", "--json", "{w}/existing.json"],
             "--overwrite"),
        Case("evaluate: --roi with nan", ["evaluate", "--denoised", "{w}/ct.nrrd", "--roi=2,10,10,nan"], "R is 'nan'"),
        Case("evaluate: --roi label map missing", ["evaluate", "--denoised", "{w}/ct.nrrd", "--roi", "{w}/nope.nrrd"],
             "does not exist"),
        Case("evaluate: --roi outside the image", ["evaluate", "--denoised", "{w}/ct.nrrd", "--roi", "2,10,10,50"],
             "reaches past the edge"),
        Case("evaluate: --roi empty label file", ["evaluate", "--denoised", "{w}/ct.nrrd", "--roi", "{w}/labels.nrrd"]),
        Case("evaluate: --window of zero width", ["evaluate", "--denoised", "{w}/ct.nrrd", "--window", "0,40"]),
        Case("evaluate: reference on another grid", ["evaluate", "--denoised", "{w}/ct.nrrd", "--reference",
                                                     "{w}/other_grid.nrrd"], "geometry"),
        Case("evaluate: 8-bit reference", ["evaluate", "--denoised", "{w}/ct.nrrd", "--reference",
                                           "{w}/eightbit.nrrd"]),
        # series, train, export
        Case("series: not a folder", ["series", "{w}/ct.nrrd"], "not a folder"),
        Case("train: binary config", ["train", "--config", "{w}/binary.yaml"], "not a text file"),
        Case("train: broken YAML", ["train", "--config", "{w}/broken.yaml"], "YAML"),
        Case("train: missing config", ["train", "--config", "{w}/nope.yaml"]),
        Case("export: garbage checkpoint", ["export", "{w}/garbage.pt", "{w}/m.pt"]),
        Case("export: missing checkpoint", ["export", "{w}/nope.pt", "{w}/m.pt"]),
        Case("export: onto the checkpoint", ["export", "{w}/weights.pt", "{w}/weights.pt", "--overwrite"]),
        Case("export: existing output", ["export", "{w}/weights.pt", "{w}/model.pt"], "--overwrite"),
    ]
    return c


# ------------------------------------------------------------------ running


def _tree(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Result:
    case: Case
    code: int
    seconds: float
    problems: List[str]
    message: str


def run_case(case: Case, template: Path, scratch: Path) -> Result:
    work = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
    shutil.rmtree(work)
    shutil.copytree(template, work, symlinks=True)
    if case.setup:
        case.setup(work)
    before = _tree(work)
    argv = [a.replace("{w}", str(work)) for a in case.argv]
    env = dict(os.environ, PYTHONPATH=str(REPO / "LowDoseDenoise"), OMP_NUM_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "LowDoseDenoiseLib.cli", *argv], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    after = _tree(work)
    err = proc.stderr
    problems = []
    if proc.returncode != case.code:
        problems.append(f"exit {proc.returncode}, expected {case.code}")
    if "Traceback" in err:
        problems.append("traceback")
    lines = [line for line in err.splitlines() if "error:" in line]
    if case.code != 0 and not lines:
        problems.append("no error: line")
    if case.expect and case.expect not in err:
        problems.append(f"message lacks {case.expect!r}")
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    if changed:
        problems.append("inputs changed or removed: " + ", ".join(changed[:3]))
    added = [name for name in after if name not in before and not any(name.startswith(p) for p in case.may_add)]
    if case.code != 0 and added:
        problems.append("files added by a refused run: " + ", ".join(added[:3]))
    partial = [str(p.relative_to(work)) for p in work.rglob("*") if PARTIAL in p.name]
    if partial:
        problems.append("half-written: " + ", ".join(partial[:3]))
    message = (lines[-1] if lines else err.strip().splitlines()[-1] if err.strip() else "").replace(str(work), "W")
    shutil.rmtree(work, ignore_errors=True)
    return Result(case, proc.returncode, seconds, problems, message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", help="run only the cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (the inputs) afterwards")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    selected = [c for c in cases() if not args.k or args.k in c.name]
    scratch = Path(tempfile.mkdtemp(prefix="ldd-sweep-"))
    template = scratch / "inputs"
    template.mkdir()
    _write_inputs(template)
    results = []
    width = max(len(c.name) for c in selected)
    print(f"{'case':{width}s}  exit  {'time':>5s}  verdict  message")
    try:
        for case in selected:
            result = run_case(case, template, scratch)
            results.append(result)
            verdict = "ok" if not result.problems else "FAIL"
            detail = "; ".join(result.problems) if result.problems else result.message
            print(f"{case.name:{width}s}  {result.code:4d}  {result.seconds:4.1f}s  {verdict:7s}  {detail[:150]}",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    failed = [r for r in results if r.problems]
    print(f"\n{len(results)} cases, {len(results) - len(failed)} handled as required, {len(failed)} failed "
          f"({sum(r.seconds for r in results):.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps([{"case": r.case.name, "exit": r.code, "problems": r.problems,
                                                "message": r.message} for r in results], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
