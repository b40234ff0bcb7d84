"""Can the CycleGAN's discriminator tell the low-dose domain from routine dose at all?

The paper's method needs a discriminator D_Y that tells routine-dose patches from G's outputs; at the
start, with G near the identity, that is telling the low-dose domain from the routine-dose domain.  This
probe trains the trainer's own D_Y (``trainer.Discriminators``, LSGAN loss, Adam 2e-4) on exactly that,
with G fixed at the identity, on the batches a CycleGAN config draws, and reports
its loss (0.25 = a constant guess) and, on batches it never trained on, the AUC of its per-patch mean
score (routine dose above low dose), for all low-dose samples, the real low-dose series and the simulated
low dose.  If the AUC stays near 0.5 the adversarial term gives G no direction (model card, "The paper's
CycleGAN").

Views: ``window`` is what the trainer's discriminators see (``Discriminators.view``: ``model.disc_window``
mapped to ±3); ``highpass`` is the image minus its Gaussian low-pass (σ 2 px) in units of 20 HU, clipped to ±3, in
soft tissue (−200..300 HU).

Usage: python benchmarks/discriminator_probe.py [--config CFG] [--steps 600] [--batch 4]
       [--view window --view highpass] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LowDoseDenoise"))

DEFAULT_CONFIG = ROOT / "LowDoseDenoise" / "LowDoseDenoiseLib" / "training" / "configs" / "cyclegan_lowpass.yaml"
HELD_OUT_STEP = 10**6  #: batches from this step on were never trained on (batches depend on seed and step)


def auc(high: np.ndarray, low: np.ndarray) -> float:
    """P(a score of ``high`` exceeds one of ``low``), ties counted half."""
    if not len(high) or not len(low):
        return float("nan")
    return float(np.mean(high[:, None] > low[None, :]) + 0.5 * np.mean(high[:, None] == low[None, :]))


def probe(config_path: Path, view: str, steps: int, batch: int, held_out_batches: int = 40) -> dict:
    import torch

    from LowDoseDenoiseLib.training import losses
    from LowDoseDenoiseLib.training.config import load_config
    from LowDoseDenoiseLib.training.trainer import Discriminators, Trainer

    config = load_config(str(config_path))
    if config.mode != "cyclegan":
        raise SystemExit(f"{config_path} is a {config.mode} config; the probe needs a CycleGAN config's two domains.")
    config.optim.batch_size = batch
    config.model.init_generator = ""  # G is the identity here; its weights are never used
    trainer = Trainer(config, progress=False)
    k, norm = config.data.context, trainer.norm
    torch.manual_seed(0)
    # the trainer's own discriminators (D_Y is probed) and their window, as training builds them
    pair = Discriminators(config.model.disc_width, config.model.disc_layers, norm.scale, norm.offset,
                          (config.model.disc_window[0], config.model.disc_window[1]))
    d = pair.dy

    def seen(x: torch.Tensor) -> torch.Tensor:
        if view == "window":
            return pair.view(x)
        hu = x * norm.scale + norm.offset
        soft = ((hu > -200.0) & (hu < 300.0)).to(hu.dtype)
        return torch.clamp((hu - losses.gaussian_lowpass(hu, 2.0)) / 20.0, -3.0, 3.0) * soft

    opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    start, history = time.time(), []
    for step in range(steps):
        b = trainer.batch(step)
        loss = losses.lsgan_discriminator(d(seen(b["y"][:, k : k + 1])), d(seen(b["x"][:, k : k + 1])))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    scores_low, scores_normal, simulated = [], [], []
    with torch.no_grad():
        for step in range(HELD_OUT_STEP, HELD_OUT_STEP + held_out_batches):
            b = trainer.batch(step)
            scores_low += d(seen(b["x"][:, k : k + 1])).mean(dim=(1, 2, 3)).tolist()
            scores_normal += d(seen(b["y"][:, k : k + 1])).mean(dim=(1, 2, 3)).tolist()
            simulated += b["simulated"].tolist()
    low, normal, sim = np.array(scores_low), np.array(scores_normal), np.array(simulated) > 0.5
    return {
        "view": view, "batch": batch, "steps": steps,
        "loss_first": float(np.mean(history[:100])), "loss_last": float(np.mean(history[-100:])),
        "auc_all": auc(normal, low), "auc_real": auc(normal, low[~sim]), "auc_simulated": auc(normal, low[sim]),
        "time_s": time.time() - start,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a CycleGAN training config")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--view", action="append", choices=["window", "highpass"], help="repeatable; default window")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [probe(args.config, view, args.steps, args.batch) for view in (args.view or ["window"])]
    print(f"\nDiscriminator probe, G = identity ({args.config.name}); loss 0.25 = a constant guess, AUC 0.5 = blind\n")
    print("| view | batch | steps | loss, first / last 100 steps | AUC all | AUC real low dose | AUC simulated | time |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['view']} | {r['batch']} | {r['steps']} | {r['loss_first']:.3f} / {r['loss_last']:.3f} | "
              f"{r['auc_all']:.3f} | {r['auc_real']:.3f} | {r['auc_simulated']:.3f} | {r['time_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
