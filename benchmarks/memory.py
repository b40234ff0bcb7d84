"""Peak memory of `lowdose-denoise denoise` and `evaluate` on a 512x512x300 series (issue 15 item 19).

Each command runs in its own process on a synthetic int16 CT volume (NRRD, gzip; and the
same size as a DICOM series), which reports its own peak resident set size at exit (VmHWM
on Linux, else ``getrusage(RUSAGE_SELF).ru_maxrss``).  Targets: denoise <= input + output +
0.5 GB (voxels in their stored int16 type), evaluate <= 1.5 GB.  GB here is GiB (2**30).
The engine writes into an array of the input's type and evaluate measures in blocks of
slices (quality.metrics.BLOCK_SLICES), which is what keeps both near the voxels they hold.
Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/memory.py [--slices 300] [--size 512] [--model NAME|FILE]
        [--no-dicom]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "LowDoseDenoise"))

GB = 1024 ** 3


def _synthetic_ct(slices: int, size: int) -> np.ndarray:
    """A body-like int16 HU volume (air, soft tissue, a bone ring) with noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 < 1
    ring = np.abs(np.hypot(yy - c, xx - c) - 0.3 * size) < 0.02 * size
    plane = np.where(body, 50.0, -1000.0) + np.where(ring, 650.0, 0.0)
    out = np.empty((slices, size, size), np.int16)
    for k in range(slices):
        out[k] = np.rint(plane + rng.normal(0, 20, plane.shape) * body)
    return out


# The child's own peak: VmHWM of /proc/self/status on Linux (the high-water mark of this process's memory
# map, new at exec), since ru_maxrss survives fork and exec there and would report the benchmark's own peak
# (e.g. after it wrote the DICOM series); ru_maxrss elsewhere.
_CHILD = (
    "import resource, sys\n"
    "from LowDoseDenoiseLib import cli\n"
    "code = cli.main(sys.argv[2:])\n"
    "def peak_kib():\n"
    "    try:\n"
    "        for line in open('/proc/self/status'):\n"
    "            if line.startswith('VmHWM:'):\n"
    "                return int(line.split()[1])\n"
    "    except OSError:\n"
    "        pass\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "open(sys.argv[1], 'w').write(str(peak_kib()))\n"
    "sys.exit(code)\n"
)


def _peak_rss(argv, report: Path) -> tuple:
    """Run the CLI in a child that reports its own peak RSS; (bytes, seconds)."""
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO / "LowDoseDenoise"))
    result = subprocess.run([sys.executable, "-c", _CHILD, str(report), "-q", *map(str, argv)], env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{result.stderr}")
    return int(report.read_text()) * 1024, seconds  # VmHWM and ru_maxrss are in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--model", help="model NAME or FILE for denoise (default: the default model)")
    parser.add_argument("--no-dicom", action="store_true", help="skip the DICOM series row (writing it takes a while)")
    args = parser.parse_args()

    from LowDoseDenoiseLib.io.imagefiles import write_volume
    from LowDoseDenoiseLib.volume import Volume

    voxels = _synthetic_ct(args.slices, args.size)
    volume_bytes = voxels.nbytes
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        source = write_volume(Volume(voxels, spacing=(0.7, 0.7, 2.5)), tmp / "in.nrrd")
        shifted = write_volume(Volume(voxels + np.int16(3), spacing=(0.7, 0.7, 2.5)), tmp / "ref.nrrd")
        del voxels
        peak, seconds = _peak_rss(["evaluate", "--denoised", source, "--input", source, "--json", tmp / "m.json"],
                                  tmp / "rss-evaluate")
        rows.append(("evaluate (no-reference, with --input)", peak, 1.5 * GB, seconds))
        roi = f"liver={args.slices // 2},{args.size // 2},{args.size // 2},20"
        peak, seconds = _peak_rss(["evaluate", "--denoised", source, "--reference", shifted, "--input", source,
                                   "--roi", roi, "--json", tmp / "m2.json"], tmp / "rss-evaluate-ref")
        rows.append(("evaluate (--reference, --input, --roi)", peak, 1.5 * GB, seconds))
        model = ["--model", args.model] if args.model else []
        peak, seconds = _peak_rss(["denoise", source, tmp / "out.nrrd", "--device", "cpu", *model], tmp / "rss-denoise")
        rows.append(("denoise (NRRD in, NRRD out)", peak, 2 * volume_bytes + 0.5 * GB, seconds))
        if not args.no_dicom:
            sys.path.insert(0, str(REPO / "Testing" / "Python"))
            from dicom_fixtures import write_ct_series  # the test suite's synthetic CT series writer

            series = write_ct_series(tmp / "dicom", shape=(args.slices, args.size, args.size), unsigned=False,
                                     intercept=0.0, spacing=(0.7, 0.7, 2.5))
            del series
            peak, seconds = _peak_rss(["denoise", tmp / "dicom", tmp / "out-dicom", "--device", "cpu", *model],
                                      tmp / "rss-denoise-dicom")
            rows.append(("denoise (DICOM series in, DICOM out)", peak, 2 * volume_bytes + 0.5 * GB, seconds))
    print(f"peak RSS on a {args.size}x{args.size}x{args.slices} int16 series ({volume_bytes / GB:.2f} GB of voxels)")
    print(f"{'command':40s} {'peak RSS':>10s} {'target':>10s} {'met':>4s} {'time':>8s}")
    for name, peak, target, seconds in rows:
        print(f"{name:40s} {peak / GB:8.2f} GB {target / GB:8.2f} GB {'yes' if peak <= target else 'no':>4s} "
              f"{seconds:7.1f}s")


if __name__ == "__main__":
    main()
