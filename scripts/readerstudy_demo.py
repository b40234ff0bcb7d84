"""Demo of the reader-study workflow on the synthetic phantom; writes docs/figures/readerstudy_*.png.

1. four low-dose (25 %) phantom cases -> ``reader-study plan`` with original, the bundled
   model, curvature anisotropic diffusion and non-local means, two readers;
2. two SIMULATED readers score every pair: the noise score follows each image's measured
   liver noise SD (5 at <= 8 HU ... 1 at >= 40 HU), overall quality and confidence follow the
   noise score, sharpness drops with the share of the original's edge energy an image lost,
   artefacts are scored 4; each reader adds its own jitter (SD 0.5) and rounds to 1..5;
3. ``reader-study summarize`` -> report, JSON and the figure.

The scores are made up by this script to show what the tool writes; they are NOT a reader
study and say nothing about how physicians would rate the model.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/readerstudy_demo.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "LowDoseDenoise"))

from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume  # noqa: E402
from LowDoseDenoiseLib.quality.noise import estimate_noise_sd  # noqa: E402
from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom, make_phantom  # noqa: E402
from LowDoseDenoiseLib.readerstudy import protocol as p  # noqa: E402
from LowDoseDenoiseLib.readerstudy.plan import plan_study  # noqa: E402
from LowDoseDenoiseLib.readerstudy.scores import ReadingSession  # noqa: E402
from LowDoseDenoiseLib.readerstudy.summary import summarize_study  # noqa: E402
from LowDoseDenoiseLib.volume import Volume  # noqa: E402

SIZE, SLICES, SPACING, DOSE = 256, 4, (0.78, 0.78, 2.5), 0.25


def edge_energy(hu: np.ndarray) -> float:
    from scipy.ndimage import gaussian_gradient_magnitude

    return float(np.mean([gaussian_gradient_magnitude(np.clip(s, -160, 240), 1.0) ** 2 for s in hu]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "figures"), help="folder for readerstudy_*.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="readerstudy-demo-"))
    try:
        cases, truths = [], {}
        for seed in range(1, 5):
            _, low, spacing = make_low_dose_phantom(size=SIZE, slices=SLICES, dose_fraction=DOSE, seed=seed,
                                                    spacing=SPACING)
            path = write_volume(Volume(voxels=np.rint(low).astype(np.int16), spacing=spacing), work / f"c{seed}.nrrd")
            cases.append(path)
            truths[f"case_{seed:02d}"] = make_phantom(size=SIZE, slices=SLICES, spacing=SPACING, seed=seed)
        study = plan_study(cases, "original,model,cad,nlm", work / "study", readers=2, seed=2026, device="cpu",
                           progress=lambda message: print(message, file=sys.stderr)).folder
        key = json.loads((study / p.KEY_DIR / p.KEY_FILE).read_text())
        measured = {}
        for relative, image in key["images"].items():
            hu = read_volume(study / relative).hu()
            liver = truths[image["case"]].labels["liver"]
            measured[relative] = (estimate_noise_sd(hu, mask=liver), edge_energy(hu))
        original_edges = {key["images"][r]["case"]: e for r, (_, e) in measured.items()
                          if key["images"][r]["method"] == "original"}
        worklist = json.loads((study / p.WORKLIST_FILE).read_text())
        files = {item["id"]: item for item in worklist["items"]}
        for offset, reader in enumerate(("R1", "R2")):
            rng = np.random.default_rng(100 + offset)
            session = ReadingSession(study, reader)
            while (item := session.next_item()) is not None:
                scores = []
                for side in p.SIDES:
                    relative = files[item.id][side]
                    sd, edges = measured[relative]
                    kept = edges / original_edges[key["images"][relative]["case"]]
                    noise = 5 - 4 * np.clip((sd - 8) / 32, 0, 1)
                    sharp = 5 - 4 * np.clip((1 - kept) / 0.6, 0, 1) if kept < 1 else 5.0
                    raw = {"noise": noise, "sharpness": sharp, "overall": (noise + sharp) / 2,
                           "confidence": (noise + 2 * sharp) / 3, "artefacts": 4.0}
                    scores.append({k: int(np.clip(np.rint(v + rng.normal(0, 0.5)), 1, 5)) for k, v in raw.items()})
                a, b = scores[0]["overall"], scores[1]["overall"]
                session.record(item.id, scores[0], scores[1], "equal" if a == b else ("A" if a > b else "B"),
                               comment="")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = summarize_study(study, work / "report")
        shutil.copyfile(result.figure, out / "readerstudy_summary.png")
        print(result.report.read_text())
        print(f"figure: {out / 'readerstudy_summary.png'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
