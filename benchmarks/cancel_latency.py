"""How long Cancel takes in the Slicer path: request_cancel() to the job's end, on 512×512 slices.

Runs :class:`LowDoseDenoiseLib.slicer.scene.DenoiseJob` exactly as the module does (a
headless slicer-core scene, ``DenoiseLogic.prepare``, ``job.start()`` in a worker thread,
``job.request_cancel()`` from this thread) and measures, per trial, the time from the
cancel request until the job is ``cancelled``.  Two kinds of trial:

* ``worst``: the cancel comes just after the engine has checked for one and started a
  batch (2 ms after a progress report), so it waits for that whole batch;
* ``random``: the cancel comes at a random time during the run.

The engine checks for a cancel before every batch; the Slicer path uses one slice per
batch on the CPU (``scene.cancel_bounded_batch``), so the worst case is about one slice's
inference.  Prints a table (milliseconds) and the per-slice time for comparison.

    OMP_NUM_THREADS=1 python benchmarks/cancel_latency.py [--device cpu] [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LowDoseDenoise"))


def ct_like(slices: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """A 512×512 body-sized ellipse of soft tissue with 25 HU noise in air (int16, as CT is stored)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    body = ((y - size / 2) / (size * 0.38)) ** 2 + ((x - size / 2) / (size * 0.45)) ** 2 < 1
    voxels = np.where(body, 50.0, -1000.0)[None] + rng.normal(0, 25, (slices, size, size))
    return np.rint(voxels).astype(np.int16)


def add_volume(scene, voxels: np.ndarray):
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[...] = voxels.ravel()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    node.SetSpacing(0.8, 0.8, 2.5)
    node.SetAndObserveImageData(image)
    return node


def one_trial(logic, node, model, device: str, kind: str, rng: random.Random, slice_seconds: float) -> float:
    """Seconds from request_cancel() to the job's end."""
    job = logic.prepare(node, model=model, device=device)
    reported = threading.Event()
    original_run = job.run

    def run_with_progress(progress=None, cancel=None):
        return original_run(progress=lambda done, total: reported.set(), cancel=cancel)

    job.run = run_with_progress  # type: ignore[method-assign]
    job.start()
    reported.wait(60)  # the first slice is done: the model is warm
    if kind == "worst":
        reported.clear()
        reported.wait(60)
        time.sleep(0.002)  # the engine has checked for a cancel and started the next slice
    else:
        time.sleep(rng.uniform(0.0, 3.0 * slice_seconds))
    asked = time.perf_counter()
    job.request_cancel()
    while not job.finished:
        time.sleep(0.0005)
    waited = time.perf_counter() - asked
    if job.state != "cancelled":
        raise SystemExit(f"the job ended as {job.state}, not cancelled")
    return waited


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--slices", type=int, default=40)
    args = parser.parse_args(argv)

    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.slicer.headless import ApplicationScene
    from LowDoseDenoiseLib.slicer.scene import DenoiseLogic

    model = load_model(None)
    voxels = ct_like(args.slices)
    denoise_volume(voxels[:6], model=model, device=args.device, batch_size=1)  # warm-up
    start = time.perf_counter()
    denoise_volume(voxels[:6], model=model, device=args.device, batch_size=1)
    slice_seconds = (time.perf_counter() - start) / 6
    rng = random.Random(0)
    with ApplicationScene() as app:
        logic = DenoiseLogic(app.scene)
        node = add_volume(app.scene, voxels)
        batch = logic.prepare(node, model=model, device=args.device).batch_size
        rows = []
        for kind in ("worst", "random"):
            times = [one_trial(logic, node, model, args.device, kind, rng, slice_seconds) for _ in range(args.trials)]
            rows.append((kind, np.median(times) * 1e3, np.max(times) * 1e3))
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"model {model.name} {model.version}, device {args.device}, batch {batch} slice(s) of 512x512, "
          f"threads {threads}; one slice takes {slice_seconds * 1e3:.0f} ms")
    print(f"{'cancel':8s} {'median ms':>10s} {'max ms':>8s}   ({args.trials} trials each)")
    for kind, median, worst in rows:
        print(f"{kind:8s} {median:10.0f} {worst:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
