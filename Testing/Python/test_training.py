"""Training: losses, data pipeline, steps, exact resume, DDP (world size 1), export, bad input,
and the bundled model.  Tiny synthetic volumes keep the suite fast and independent of
../shared/data."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.training import data as tdata
from LowDoseDenoiseLib.training import losses
from LowDoseDenoiseLib.training.config import config_from_dict, load_config
from LowDoseDenoiseLib.training.export import export_checkpoint
from LowDoseDenoiseLib.training.trainer import CHECKPOINT, Trainer, train_from_config

CONFIGS = Path(__file__).resolve().parents[2] / "LowDoseDenoise" / "LowDoseDenoiseLib" / "training" / "configs"


# --------------------------------------------------------------------------- fixtures


def _body(size: int, z: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    hu = np.full((z, size, size), -1000.0, np.float32)
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 < 1
    liver = ((yy - c) / (0.2 * size)) ** 2 + ((xx - 0.4 * size) / (0.18 * size)) ** 2 < 1
    bone = ((yy - 0.7 * size) / (0.06 * size)) ** 2 + ((xx - c) / (0.06 * size)) ** 2 < 1
    for i in range(z):
        hu[i][body] = 40.0
        hu[i][liver] = 90.0
        hu[i][bone] = 700.0
    return hu + rng.normal(0, 8.0, hu.shape).astype(np.float32) * (hu > -500)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two tiny NRRD series (normal and low dose) and a liver label map."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("train-data")
    normal = _body(64, 10, 1)
    low = _body(64, 10, 2)
    low += np.random.default_rng(3).normal(0, 25.0, low.shape).astype(np.float32) * (low > -500)
    for name, hu in (("normal.nrrd", normal), ("low.nrrd", low)):
        image = sitk.GetImageFromArray(hu.astype(np.int16))
        image.SetSpacing((0.8, 0.8, 2.0))
        sitk.WriteImage(image, str(root / name))
    labels = sitk.GetImageFromArray(((normal > 70) & (normal < 110)).astype(np.uint8) * 5)
    labels.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(labels, str(root / "labels.nii.gz"))
    return root


def _config(dataset: Path, tmp_path: Path, **overrides):
    data = {
        "shared_data": str(dataset),
        "cache_dir": str(tmp_path / "cache"),
        "normal_dose": [
            {"path": "normal.nrrd", "name": "normal", "labels": "labels.nii.gz", "holdout": [7, 10], "gap": 1}
        ],
        "low_dose": [{"path": "low.nrrd", "name": "low", "holdout": [7, 10], "gap": 1}],
        "textures": ["standard"],
        "noise_realisations": 1,
        "patch": 32,
        "pixel_size": [0.7, 1.0],
    }
    data.update(overrides.pop("data", {}))
    raw = {
        "name": "t",
        "mode": "paired",
        "run_dir": str(tmp_path / "run"),
        "data": data,
        "model": {"width": 4, "levels": 2, "res_blocks": 1, "f_width": 4, "disc_width": 4, "disc_layers": 2},
        "perceptual": {"network": "none"},
        "optim": {"steps": 4, "batch_size": 2, "lr": 1e-3},
        "run": {"log_every": 2, "validate_every": 0, "checkpoint_every": 2, "threads": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return config_from_dict(raw)


# --------------------------------------------------------------------------- losses


def test_losses_values_and_gradients():
    real = torch.ones(2, 1, 4, 4)
    fake = torch.zeros(2, 1, 4, 4, requires_grad=True)
    assert losses.lsgan_generator(torch.ones(3)).item() == 0.0
    assert losses.lsgan_generator(torch.zeros(3)).item() == pytest.approx(1.0)
    assert losses.lsgan_discriminator(torch.ones(3), torch.zeros(3)).item() == 0.0
    assert losses.lsgan_discriminator(torch.zeros(3), torch.ones(3)).item() == pytest.approx(1.0)
    value = losses.cycle_loss(fake, real)
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert torch.allclose(fake.grad, torch.full_like(fake, -1.0 / fake.numel()))
    assert losses.identity_loss(real, real).item() == 0.0
    assert losses.perceptual_loss(None, fake, real).item() == 0.0


def test_multiscale_l1_weighs_blotches_not_grain():
    target = torch.zeros(1, 1, 32, 32)
    grain = torch.ones(1, 1, 32, 32)
    grain[..., ::2, :] = -1.0  # finest grain: every 2×2 block mean is 0
    grain[..., :, ::2] *= -1.0
    assert losses.multiscale_l1(grain, target).item() == pytest.approx(0.0, abs=1e-7)
    assert torch.nn.functional.l1_loss(grain, target).item() == pytest.approx(1.0)
    blotch = torch.zeros(1, 1, 32, 32, requires_grad=True)
    offset = blotch + torch.nn.functional.interpolate(torch.tensor([[[[0.5, -0.5], [-0.5, 0.5]]]]), size=32)
    value = losses.multiscale_l1(offset, target)  # 16-pixel blocks of ±0.5: every block mean is ±0.5
    assert value.item() == pytest.approx(0.5)
    value.backward()
    assert float(blotch.grad.abs().sum()) > 0
    assert losses.multiscale_l1(target, target).item() == 0.0


def test_highpass_l1_weighs_grain_not_blotches():
    target = torch.zeros(1, 1, 32, 32)
    grain = torch.ones(1, 1, 32, 32)
    grain[..., ::2, :] = -1.0  # the finest grain: a Gaussian of σ 1.5 pixels passes almost none of it
    grain[..., :, ::2] *= -1.0
    assert losses.highpass_l1(grain, target, 1.5).item() == pytest.approx(1.0, abs=0.01)
    assert losses.highpass_l1(target + 7.0, target, 1.5).item() == pytest.approx(0.0, abs=1e-5)  # an offset
    blotch = torch.zeros(1, 1, 32, 32, requires_grad=True)
    offset = blotch + torch.nn.functional.interpolate(torch.tensor([[[[0.5, -0.5], [-0.5, 0.5]]]]), size=32)
    value = losses.highpass_l1(offset, target, 1.5)  # 16-pixel blocks: only their edges are in the band
    assert 0.0 < value.item() < 0.2 * torch.nn.functional.l1_loss(offset, target).item()  # the grain: 1.0
    value.backward()
    assert float(blotch.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="loss.highpass"):
        config_from_dict({"mode": "paired", "loss": {"highpass": -1}})
    with pytest.raises(InputError, match="loss.highpass_sigma"):
        config_from_dict({"mode": "paired", "loss": {"highpass": 1, "highpass_sigma": 0}})


def test_highpass_l1_band_bound_leaves_the_finest_grain():
    import math

    target = torch.zeros(1, 1, 64, 64)
    grain = torch.ones(1, 1, 64, 64)
    grain[..., ::2, :] = -1.0  # the checkerboard: 0.5 cycles/pixel on both axes
    grain[..., :, ::2] *= -1.0
    bars = torch.sin(2 * math.pi * torch.arange(64.0) / 5).expand(1, 1, 64, 64)  # 0.2 cycles/pixel
    open_grain, open_bars = (losses.highpass_l1(v, target, 1.5).item() for v in (grain, bars))
    band_grain, band_bars = (losses.highpass_l1(v, target, 1.5, 0.7).item() for v in (grain, bars))
    assert open_grain == pytest.approx(1.0, abs=0.01)
    assert band_grain < 0.05 * open_grain  # the finest grain is left to the plain L1
    assert 0.5 * open_bars < band_bars < open_bars  # the mid band keeps most of its weight
    assert losses.highpass_l1(target + 7.0, target, 1.5, 0.7).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(InputError, match="loss.highpass_fine_sigma"):
        config_from_dict({"mode": "paired", "loss": {"highpass": 1, "highpass_fine_sigma": 1.5}})
    with pytest.raises(InputError, match="loss.highpass_fine_sigma"):
        config_from_dict({"mode": "paired", "loss": {"highpass": 1, "highpass_fine_sigma": -0.1}})
    # the exported model file records the band (its metadata's training.highpass_band), only when the term is on
    from LowDoseDenoiseLib.training.export import training_summary

    band = {"highpass": 4.0, "highpass_sigma": 1.5, "highpass_fine_sigma": 0.7}
    assert training_summary({"mode": "paired", "config": {"loss": band}})["highpass_band"] == {
        "highpass_sigma": 1.5, "highpass_fine_sigma": 0.7}
    assert training_summary({"mode": "paired", "config": {"loss": {**band, "highpass": 0.0}}})["highpass_band"] is None


def test_vgg_perceptual_loss_is_zero_for_equal_and_differentiable():
    from LowDoseDenoiseLib.training.perceptual import VGG_FILE, VGGFeatures

    if not VGG_FILE.is_file():
        pytest.skip(f"{VGG_FILE} absent (run scripts/convert_vgg16.py)")
    features = VGGFeatures()
    a = torch.zeros(1, 1, 16, 16)
    b = (torch.randn(1, 1, 16, 16) * 0.05).requires_grad_(True)
    assert losses.perceptual_loss(features, a, a).item() == 0.0
    value = losses.perceptual_loss(features, b, a)
    value.backward()
    assert value.item() > 0 and b.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in features.parameters())


# --------------------------------------------------------------------------- data


def test_split_blocks_has_gap_and_no_overlap():
    train, held = tdata.split_blocks(20, (14, 20), 2)
    assert held == list(range(14, 20))
    assert max(train) == 11 and not set(train) & set(range(12, 20))
    with pytest.raises(InputError):
        tdata.split_blocks(10, (8, 12), 1)


def test_batches_are_seeded_and_include_copied_neighbours(dataset, tmp_path):
    config = _config(dataset, tmp_path, data={"copy_neighbours": 0.5}, optim={"batch_size": 16})
    trainer = Trainer(config, progress=False)
    a, b = trainer.batch(3), trainer.batch(3)
    assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], trainer.batch(4)["x"])
    x = a["x"]
    assert x.shape == (16, 3, 32, 32) and a["target"].shape == (16, 1, 32, 32)
    copied = [bool(torch.equal(s[0], s[1]) and torch.equal(s[1], s[2])) for s in x]
    assert 2 <= sum(copied) <= 14
    noise_hu = (x[:, 1:2] - a["target"]) * 1000
    assert 3.0 < float(noise_hu.std()) < 120.0


def test_recorrupted_targets_add_and_subtract_the_own_noise_field(dataset, tmp_path):
    """R2R: input = y + α·z, target = y − z/α, z with the slice's own noise (8 HU in the fixture)."""
    import copy

    config = _config(
        dataset,
        tmp_path,
        data={"recorrupt": 1.0, "recorrupt_alpha": 1.0, "copy_neighbours": 0.0, "own_noise_realisations": 2},
    )
    trainer = Trainer(config, progress=False)
    assert trainer.own and all(len(v) == 2 for v in trainer.own.values())
    assert not any(key.endswith((":7", ":8", ":9")) for key in trainer.own)  # held-out slices get none
    rng = np.random.default_rng(0)
    sds = []
    for _ in range(6):
        geometry = trainer.normal_sampler.draw_geometry(copy.deepcopy(rng))
        y = trainer.normal_sampler.stack(geometry)[1]
        x, target = trainer._noisy(trainer.normal_sampler, rng, recorrupt=True, add=False)
        assert np.allclose((x[1] + target[0]) / 2, y, atol=1e-3)  # z cancels: the slice itself
        z = (x[1] - target[0]) / 2
        sds.append(float(z[y > -500].std()))
    assert 4.0 < float(np.median(sds)) < 14.0, sds
    batch = trainer.batch(0)  # with simulated low-dose noise on top, end to end
    assert batch["x"].shape == (2, 3, 32, 32) and torch.isfinite(batch["target"]).all()
    with pytest.raises(InputError, match="mode: paired"):
        config_from_dict({"mode": "cyclegan", "data": {"recorrupt_low_dose": 0.5}})
    with pytest.raises(InputError, match="loss.paired"):
        config_from_dict({"mode": "cyclegan", "data": {"recorrupt": 0.5}})
    anchored = Trainer(
        _config(dataset, tmp_path / "cg", mode="cyclegan", data={"recorrupt": 1.0}, loss={"paired": 1.0}),
        progress=False,
    )
    assert anchored.own and np.isfinite(anchored.train_step(anchored.batch(0))["paired"])
    with pytest.raises(InputError, match="shares"):
        config_from_dict({"mode": "paired", "data": {"recorrupt": 1.5}})


def test_added_noise_keeps_its_grain_at_every_pixel_size(dataset, tmp_path):
    """Noise is placed on the patch grid, not resampled with the image (which smooths it)."""
    trainer = Trainer(_config(dataset, tmp_path, data={"pixel_size": [0.5, 1.5]}), progress=False)
    sampler = trainer.normal_sampler
    white = np.random.default_rng(1).standard_normal((3, 64, 64)).astype(np.float32)
    rng = np.random.default_rng(2)
    rescaled = [g for g in (sampler.draw_geometry(rng) for _ in range(40)) if abs(g["crop"][2] - 32) >= 6]
    assert rescaled, "the geometries should include rescaled crops"
    for geometry in rescaled[:5]:
        placed = sampler.apply_noise(white, geometry)
        assert placed.shape == (3, 32, 32)
        assert 0.8 < float(placed.std()) < 1.2
        lag = float(np.mean(placed[:, :, 1:] * placed[:, :, :-1]) / placed.var())
        assert abs(lag) < 0.15  # still white
        resampled = sampler.apply(white, geometry)
        smoothed = float(np.mean(resampled[:, :, 1:] * resampled[:, :, :-1]) / resampled.var())
        assert smoothed > 0.2 or float(resampled.std()) < 0.8  # what the old path did to the grain


def test_held_out_slices_never_sampled(dataset, tmp_path):
    trainer = Trainer(_config(dataset, tmp_path), progress=False)
    rng = np.random.default_rng(0)
    for _ in range(50):
        geometry = trainer.normal_sampler.draw_geometry(rng)
        assert all(i <= 5 for i in geometry["indices"])


# --------------------------------------------------------------------------- training


def test_one_step_changes_weights_and_lowers_loss_on_fixed_batch(dataset, tmp_path):
    trainer = Trainer(_config(dataset, tmp_path, optim={"lr": 3e-3}), progress=False)
    batch = trainer.batch(0)
    before = [p.detach().clone() for p in trainer.g.parameters()]
    first = trainer.train_step(batch)["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.g.parameters()))
    for _ in range(5):
        last = trainer.train_step(batch)["loss"]
    assert last < first


def test_cyclegan_step_runs_and_updates_all_networks(dataset, tmp_path):
    trainer = Trainer(_config(dataset, tmp_path, mode="cyclegan", loss={"paired": 1.0}), progress=False)
    snapshots = [[p.detach().clone() for p in m.parameters()] for m in (trainer.g, trainer.f, trainer.d)]
    values = trainer.train_step(trainer.batch(0))
    assert {"adversarial", "cycle", "identity", "discriminator", "paired"} <= set(values)
    for module, snap in zip((trainer.g, trainer.f, trainer.d), snapshots):
        assert any(not torch.equal(a, b) for a, b in zip(snap, module.parameters()))


@pytest.mark.parametrize("mode", ["paired", "cyclegan"])
def test_resume_reaches_the_same_weights(dataset, tmp_path, mode):
    full = Trainer(_config(dataset, tmp_path / "a", mode=mode), progress=False)
    full.fit(4)
    half = Trainer(_config(dataset, tmp_path / "b", mode=mode), progress=False)
    half.fit(2)
    resumed = Trainer(_config(dataset, tmp_path / "b", mode=mode), progress=False)
    resumed.load(resumed.folder / CHECKPOINT)
    assert resumed.step == 2
    resumed.fit(4)
    diffs = [float((a - b).abs().max()) for a, b in zip(full.g.state_dict().values(), resumed.g.state_dict().values())]
    print("max weight difference", max(diffs))
    assert max(diffs) == 0.0
    assert (resumed.folder / "metrics.csv").is_file() and (resumed.folder / "training.png").is_file()


def test_ddp_world_size_one_gloo(dataset, tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(_config(dataset, tmp_path, mode="cyclegan"), progress=False)
    try:
        assert trainer.distributed and torch.distributed.get_world_size() == 1
        values = trainer.train_step(trainer.batch(0))
        assert np.isfinite(values["loss"])
    finally:
        torch.distributed.destroy_process_group()


def test_train_from_config_and_export_round_trip(dataset, tmp_path):
    import yaml

    from LowDoseDenoiseLib.modelfile import load_model

    config = _config(dataset, tmp_path, run={"validate_every": 2})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    folder = train_from_config(str(path), resume=True, progress=False)
    assert (folder / CHECKPOINT).is_file()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert "val_psnr" in rows[0]
    out = export_checkpoint(str(folder / CHECKPOINT), str(tmp_path / "m.pt"), name="tiny", version="0.1")
    model = load_model(out)
    assert model.metadata["training"]["trained"] is True and model.metadata["training"]["steps"] == 4
    assert model.metadata["architecture"]["width"] == 4
    trainer = Trainer(config, progress=False)
    trainer.load(folder / CHECKPOINT)
    x = torch.randn(1, 3, 32, 32) * 0.05
    with torch.no_grad():
        assert torch.allclose(model.module(x), trainer.g.eval()(x), atol=1e-6)


def test_train_with_another_seed_runs_in_its_own_folder(dataset, tmp_path):
    import json

    import yaml

    config = _config(dataset, tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    own = train_from_config(str(path), progress=False)
    other = train_from_config(str(path), progress=False, seed=config.seed + 5)
    assert other != own and other.name == f"{own.name}-seed{config.seed + 5}"
    assert json.loads((other / "config.json").read_text())["seed"] == config.seed + 5
    assert json.loads((own / "config.json").read_text())["seed"] == config.seed
    first, second = (torch.load(f / CHECKPOINT, weights_only=True)["g"] for f in (own, other))
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())


def test_export_averages_the_weights_of_runs_of_one_recipe(dataset, tmp_path):
    from LowDoseDenoiseLib.cli import main as cli_main
    from LowDoseDenoiseLib.modelfile import load_model
    trainer = Trainer(_config(dataset, tmp_path), progress=False)
    first = trainer.save()
    state = torch.load(first, weights_only=True)
    state["g"] = {k: v + 0.2 if v.is_floating_point() else v for k, v in state["g"].items()}
    state["config"]["seed"] = 99
    second = tmp_path / "second.pt"
    torch.save(state, second)
    out = tmp_path / "soup.pt"
    assert cli_main(["export", str(first), str(out), "--average", str(second)]) == 0
    soup = load_model(out)
    expected = copy.deepcopy(trainer.g)
    expected.load_state_dict({k: v + 0.1 if v.is_floating_point() else v for k, v in trainer.g.state_dict().items()})
    x = torch.randn(1, 3, 32, 32) * 0.05
    with torch.no_grad():
        assert torch.allclose(soup.module(x), expected.eval()(x), atol=1e-5)
        assert not torch.allclose(soup.module(x), trainer.g.eval()(x), atol=1e-3)
    runs = soup.metadata["training"]["averaged_runs"]
    assert [r["seed"] for r in runs] == [trainer.config.seed, 99]
    assert "averaged over 2 runs" in soup.metadata["training"]["method"]
    state["architecture"] = {**state["architecture"], "width": 8}  # another recipe: refused, nothing written
    torch.save(state, second)
    with pytest.raises(InputError, match="another generator architecture"):
        export_checkpoint(str(first), str(tmp_path / "bad.pt"), average=[str(second)])
    assert not (tmp_path / "bad.pt").exists()


def test_shipped_configs_parse():
    names = sorted(path.name for path in CONFIGS.glob("*.yaml"))
    assert {"tiny.yaml", "paired.yaml", "shipped.yaml", "hybrid.yaml", "unpaired.yaml"} <= set(names)
    for name in names:
        assert load_config(str(CONFIGS / name)).optim.steps >= 1


def test_library_defaults_name_no_data_set():
    """The series (and the real block's liver box) live in the shipped configs, not in DataConfig."""
    from LowDoseDenoiseLib.training.config import DataConfig

    assert DataConfig().normal_dose == [] and DataConfig().low_dose == []
    with pytest.raises(InputError, match="normal_dose must list at least one"):
        config_from_dict({})
    shipped = load_config(str(CONFIGS / "shipped.yaml")).data
    assert [s.name for s in shipped.normal_dose] == ["totalseg"]
    assert shipped.low_dose[0].name == "ccth" and shipped.low_dose[0].roi_box() == (215, 305, 135, 245)


def test_real_low_dose_validation_roi_comes_from_the_series_config(dataset, tmp_path):
    low = {"path": "low.nrrd", "name": "low", "holdout": [7, 10], "gap": 1}
    boxed = Trainer(_config(dataset, tmp_path / "a", mode="cyclegan",
                            data={"low_dose": [{**low, "roi": [16, 48, 8, 40]}]}), progress=False)
    whole = Trainer(_config(dataset, tmp_path / "b", mode="cyclegan", data={"low_dose": [low]}), progress=False)
    in_box, anywhere = boxed.validation.real_roi, whole.validation.real_roi
    outside = np.ones(in_box.shape[1:], bool)
    outside[16:48, 8:40] = False
    assert in_box.any() and not in_box[:, outside].any()
    assert anywhere[:, outside].any()  # no roi: flat tissue anywhere on the slice
    assert not (in_box & ~anywhere).any()


# --------------------------------------------------------------------------- bad input


def test_bad_config_and_data(dataset, tmp_path):
    with pytest.raises(InputError, match="Unknown config field"):
        config_from_dict({"optim": {"stepz": 3}})
    with pytest.raises(InputError, match="patch"):
        config_from_dict({"data": {"patch": 30}})
    with pytest.raises(InputError, match="validation_texture was removed"):
        config_from_dict({"data": {"validation_texture": "standard"}})
    with pytest.raises(InputError, match=r"roi must be \[\] or \[y0, y1, x0, x1\]"):
        config_from_dict({"data": {"normal_dose": [{"path": "x", "roi": [40, 10, 0, 5]}]}})
    with pytest.raises(InputError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        tdata.load_folder(empty)
    with pytest.raises(InputError, match="does not exist"):
        Trainer(_config(dataset, tmp_path, data={"normal_dose": [{"path": "nope.nrrd"}]}), progress=False)
    with pytest.raises(InputError, match="smaller patch"):
        Trainer(_config(dataset, tmp_path, data={"patch": 128}), progress=False)
    with pytest.raises(InputError, match="earlier stage"):
        Trainer(_config(dataset, tmp_path, model={"init_generator": str(tmp_path / "no-stage.pt")}), progress=False)


def test_non_hu_volume_refused(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8))
    sitk.WriteImage(image, str(tmp_path / "photo.nrrd"))
    with pytest.raises(InputError, match="Hounsfield"):
        tdata.load_series(tmp_path / "photo.nrrd", cache_dir=None)


def test_corrupt_and_mismatched_checkpoint(dataset, tmp_path):
    trainer = Trainer(_config(dataset, tmp_path), progress=False)
    trainer.fit(2)
    checkpoint = trainer.folder / CHECKPOINT
    other = Trainer(_config(dataset, tmp_path, model={"width": 8}), progress=False)
    with pytest.raises(InputError, match="config asks for"):
        other.load(checkpoint)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="corrupt"):
        trainer.load(broken)
    state = torch.load(checkpoint, weights_only=False)
    state["architecture"]["name"] = "some-other-net"
    foreign = tmp_path / "foreign.pt"
    torch.save(state, foreign)
    with pytest.raises(InputError, match="exports only"):
        export_checkpoint(str(foreign), str(tmp_path / "x.pt"))


# --------------------------------------------------------------------------- bundled model


def test_bundled_model_cuts_simulated_noise_on_phantom():
    from LowDoseDenoiseLib.modelfile import MODELS_DIR, default_model_path, load_model

    path = default_model_path(MODELS_DIR)  # the registry's default (models.json), not $LOWDOSE_DENOISE_MODEL
    if not path.is_file():
        pytest.skip(f"bundled model {path} absent: export one with `lowdose-denoise export`")
    try:
        from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom, make_phantom
    except ImportError:
        pytest.skip("phantom.py not available")
    from LowDoseDenoiseLib.engine import denoise_volume

    model = load_model(path)
    assert model.metadata["training"].get("trained") is True, "the bundled model should be a trained one"
    # 320 pixels over 400 mm: 1.25 mm pixels, inside the model's training range
    clean, noisy, spacing = make_low_dose_phantom(size=320, slices=3, dose_fraction=0.25, seed=0)
    flat = make_phantom(size=320, slices=3, seed=0).labels["noise_roi"][1]
    out = denoise_volume(noisy, model, device="cpu", batch_size=2)
    assert flat.sum() > 200
    noise_in = float((noisy[1] - clean[1])[flat].std())
    noise_out = float((out[1] - clean[1])[flat].std())
    # the model must really denoise. 4.0 passes faint lesions and fine detail and so removes less
    # noise than 3.1 did: 0.52 of the input here (3.1: 0.34); the card's ×0.5 target is reported
    # as missed where it is (two of three held-out scans), this guard catches a model that stops denoising
    assert noise_out / noise_in <= 0.6, (noise_in, noise_out)
    # bias over the whole liver (3 slices): the mean error of one small ROI is mostly the input's own
    # low-frequency noise there (-4.3 HU for this seed), which a model with a low-frequency
    # pass-through keeps, as it should; what it must not do is shift the mean
    liver = make_phantom(size=320, slices=3, seed=0).labels["liver"]
    assert abs(float((out - clean)[liver].mean())) <= 2.0
    assert abs(float((out[1] - noisy[1])[flat].mean())) <= 1.0  # no shift of the ROI's mean either


def test_env_var_controls_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv(tdata.SHARED_DATA_ENV, str(tmp_path))
    assert tdata.shared_data_root("/elsewhere") == tmp_path
    monkeypatch.delenv(tdata.SHARED_DATA_ENV)
    assert tdata.shared_data_root("/elsewhere") == Path("/elsewhere")
    assert os.path.basename(str(tdata.shared_data_root())) == "data"


def test_discriminator_window_maps_centre_to_zero_and_half_width_to_three():
    """model.disc_window [centre, half-width] (HU) is what the discriminators see as ±3: a narrower window
    makes soft-tissue noise a larger share of their input; a bad window is refused with the fix."""
    from LowDoseDenoiseLib.training.trainer import Discriminators

    d = Discriminators(8, 2, hu_scale=100.0, hu_offset=0.0, window=(40.0, 200.0))
    hu = torch.tensor([40.0, 240.0, -160.0, 1000.0]).view(1, 1, 2, 2)
    assert torch.allclose(d.view(hu / 100.0).flatten(), torch.tensor([0.0, 3.0, -3.0, 3.0]))
    wide = Discriminators(8, 2, hu_scale=100.0, window=(40.0, 600.0))
    assert float(wide.view(torch.tensor([[[[2.4]]]]))) == pytest.approx(1.0)  # 240 HU: a third of 600
    with pytest.raises(InputError, match="disc_window"):
        config_from_dict({"mode": "cyclegan", "model": {"disc_window": [40.0, 0.0]}})
