"""Training for unseen scanners (issue 12): detail inserts, own-texture noise, dose-relative
noise levels, slice strides, neighbour distances, log-uniform pixel sizes, the transparency term."""

import numpy as np
import pytest
from test_training import _config, dataset  # noqa: F401  (the tiny two-series fixture)

from LowDoseDenoiseLib.errors import InputError
from LowDoseDenoiseLib.training import data as tdata
from LowDoseDenoiseLib.training.config import config_from_dict
from LowDoseDenoiseLib.training.trainer import Trainer


def test_inject_details_adds_faint_discs_and_patterns_only_on_soft_tissue():
    rng = np.random.default_rng(0)
    stack = np.full((3, 96, 96), -1000.0, np.float32)
    stack[:, 16:80, 16:80] = 50.0
    changed_pixels, max_changes = [], []
    for _ in range(30):
        out = tdata.inject_details(stack, 0.8, rng)
        diff = out - stack
        assert np.all(diff[:, :8, :] == 0)  # air far from tissue is untouched
        centre = diff[1]
        changed_pixels.append(int((np.abs(centre) > 0.5).sum()))
        max_changes.append(float(np.abs(centre).max()))
        # neighbours get the same insert, weaker or equal (partial volume in z)
        assert np.abs(diff[0]).sum() <= np.abs(diff[1]).sum() + 1e-3
    assert min(changed_pixels) > 0
    assert min(max_changes) >= 3.0 - 1e-3  # at least one 3 HU (or stronger) disc every time
    assert max(max_changes) > 30.0  # patterns (30–200 HU) appear in some samples
    air = np.full((3, 32, 32), -1000.0, np.float32)
    assert np.array_equal(tdata.inject_details(air, 0.8, rng), air)


def test_inject_details_floor_on_the_disc_size_in_pixels():
    """min_diameter_px enlarges discs drawn smaller than the floor (the transparency probes'
    LossConfig.transparency_min_pixels); without it a 4 mm disc at 3 mm pixels is about one pixel."""
    stack = np.full((3, 96, 96), 50.0, np.float32)

    def disc_area(floor: float) -> list:
        rng = np.random.default_rng(3)
        areas = []
        for _ in range(20):
            diff = tdata.inject_details(stack, 3.0, rng, diameter_mm=(4.0, 4.0), pattern_share=0.0,
                                        min_diameter_px=floor)[1] - stack[1]
            areas.append(float(np.abs(diff).sum() / max(np.abs(diff).max(), 1e-6)))
        return areas

    small, floored = disc_area(0.0), disc_area(6.0)
    # area in pixels ≈ π r² (one disc of full contrast ≈ its area; several discs add up)
    assert max(small) < 12.0  # 1.3-pixel discs, up to four of them
    assert min(floored) > 0.7 * np.pi * 3.0 ** 2  # at least one 6-pixel disc each time


def test_a_copied_stack_gets_its_inserts_alike_in_every_channel_when_asked():
    """copies_alike: a stack whose channels are one image (the single-image mode) gets the insert at
    full strength in every channel, so the channel difference carries no cue a real single image lacks;
    real neighbours (different images) keep the 0.5-1 partial-volume scaling either way."""
    copied = np.full((3, 96, 96), 50.0, np.float32)
    real = copied.copy()
    real[0] += 1.0  # a neighbour that is a different image
    rng = np.random.default_rng(5)
    differing_scaled, differing_copied = 0, 0
    for _ in range(20):
        old = tdata.inject_details(copied, 0.8, rng) - copied  # 4.1's behaviour
        differing_scaled += int(not np.allclose(old[0], old[1]))
        alike = tdata.inject_details(copied, 0.8, rng, copies_alike=True) - copied
        assert np.abs(alike[1]).max() > 0
        assert np.array_equal(alike[0], alike[1]) and np.array_equal(alike[2], alike[1])
        neighbours = tdata.inject_details(real, 0.8, rng, copies_alike=True) - real
        differing_copied += int(not np.allclose(neighbours[2], neighbours[1]))
        assert np.abs(neighbours[2]).sum() <= np.abs(neighbours[1]).sum() + 1e-3
    assert differing_scaled >= 15 and differing_copied >= 15


def test_copied_stacks_get_alike_probes_and_inserts_in_training(dataset, tmp_path):  # noqa: F811
    """data.copied_inserts_alike reaches the trainer's batches: in every copied-neighbour sample (all
    input channels equal, though every sample got inserts) the probe is equal in all channels too;
    without it the probes differ there (and the inserts would make the copied inputs' channels differ,
    so that run adds none)."""
    def copied_probes(alike: bool):
        config = _config(dataset, tmp_path / str(alike), loss={"transparency": 0.1},
                         data={"copy_neighbours": 0.7, "inserts": 1.0 if alike else 0.0,
                               "copied_inserts_alike": alike})
        trainer = Trainer(config, progress=False)
        probes = []
        for step in range(8):
            batch = trainer.batch(step)
            for x, probe in zip(batch["x"].numpy(), batch["probe"].numpy()):
                if np.array_equal(x[0], x[1]) and np.array_equal(x[2], x[1]) and np.abs(probe).max() > 0:
                    probes.append(probe)
        return probes

    alike, scaled = copied_probes(True), copied_probes(False)
    assert alike and scaled, "no copied sample with a probe in eight batches"
    assert all(np.array_equal(p[0], p[1]) and np.array_equal(p[2], p[1]) for p in alike)
    assert any(not np.allclose(p[0], p[1]) for p in scaled)


def test_own_texture_noise_reads_back_its_sd_and_grain(dataset, tmp_path):  # noqa: F811
    # a fine-grain series and a smooth-grain series: each one's "own" texture keeps its grain
    rng = np.random.default_rng(1)
    base = np.full((4, 128, 128), 40.0, np.float32)
    white = rng.standard_normal(base.shape).astype(np.float32)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(white, (0, 2.0, 2.0))
    smooth *= 1.0 / smooth.std()
    lags = []
    for noise in (white, smooth):
        filt = tdata.series_texture_filter(base + 20.0 * noise)
        field = tdata.stationary_noise((128, 128), filt, 1, seed=3)[0].astype(np.float32)
        assert abs(float(field.std()) - 1.0) < 0.05
        lags.append(float(np.mean(field[:, 1:] * field[:, :-1])))
    assert lags[0] < 0.2 < lags[1]  # white stays white, smooth stays smooth


def test_dose_relative_noise_follows_the_series_own_sd(dataset, tmp_path):  # noqa: F811
    config = _config(dataset, tmp_path, data={"dose": [0.25, 0.2501], "noise_sd": [1.0, 500.0],
                                              "copy_neighbours": 0.0})
    trainer = Trainer(config, progress=False)
    own = trainer.own_sd["normal"]
    assert 5.0 < own < 12.0  # the fixture's 8 HU
    rng = np.random.default_rng(0)
    sds = []
    for _ in range(12):
        x, target = trainer._noisy(trainer.normal_sampler, rng)
        added = x[1] - target[0]
        sds.append(float(added[target[0] > -500].std()))
    expected = own * np.sqrt(1 / 0.25 - 1)
    assert abs(float(np.median(sds)) / expected - 1) < 0.35, (sds, expected)


def test_stride_centres_and_neighbour_noise_is_independent_of_the_centre(dataset, tmp_path):  # noqa: F811
    config = _config(dataset, tmp_path, data={"copy_neighbours": 0.0, "noise_realisations": 1},
                     )
    config.data.normal_dose[0].stride = 2
    trainer = Trainer(config, progress=False)
    source = trainer.normal_sampler.sources[0]
    assert source.centres == source.allowed[::2]
    assert all(key.rsplit(":", 1)[1] in {str(c) for c in source.centres}
               for (key, _texture) in trainer.bank.fields)
    rng = np.random.default_rng(4)
    for _ in range(10):
        geometry = trainer.normal_sampler.draw_geometry(rng)
        fields = trainer._fields(geometry, source.name, rng, trainer.bank.fields, trainer.textures[0])
        assert fields.shape[0] == 3
        a, b = fields[0].ravel(), fields[1].ravel()
        if geometry["indices"][0] != geometry["indices"][1]:
            assert abs(float(np.corrcoef(a, b)[0, 1])) < 0.2  # shifted: not the centre's noise


def test_log_pixel_sizes_cover_the_range_evenly_in_log():
    sampler_cfg = tdata.PatchConfig(patch=32, pixel_size=(0.5, 3.0), pixel_size_log=True)
    hu = np.full((3, 400, 400), 40.0, np.float32)
    sampler = tdata.PatchSampler([tdata.SliceSource("s", hu, 0.5, [1], [0, 1, 2])], sampler_cfg)
    rng = np.random.default_rng(0)
    sizes = np.array([sampler.draw_geometry(rng)["pixel_size"] for _ in range(400)])
    assert sizes.min() >= 0.5 and sizes.max() <= 3.0
    below = float(np.mean(sizes < np.sqrt(0.5 * 3.0)))  # the geometric midpoint splits them in half
    assert 0.4 < below < 0.6


def test_context_neighbours_at_several_slice_distances():
    """data.context_distance [1, 3]: neighbours 1–3 slices away (a thick-slice scan's spacing), all three
    distances drawn, clamped into the allowed block towards the centre; [1, 1] draws nothing extra."""
    assert tdata.context_indices(10, 1, range(20), distance=3) == [7, 10, 13]
    assert tdata.context_indices(10, 2, range(9, 12), distance=2) == [9, 9, 10, 11, 11]
    hu = np.full((40, 64, 64), 40.0, np.float32)
    source = tdata.SliceSource("s", hu, 1.0, list(range(5, 35)), list(range(40)))
    far = tdata.PatchSampler([source], tdata.PatchConfig(patch=32, pixel_size=(1.0, 1.0), copy_neighbours=0.0,
                                                         context_distance=(1, 3)))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        geometry = far.draw_geometry(rng)
        low, centre, high = geometry["indices"]
        assert centre - low == high - centre == geometry["distance"]
        seen.add(geometry["distance"])
    assert seen == {1, 2, 3}
    near = tdata.PatchSampler([source], tdata.PatchConfig(patch=32, pixel_size=(1.0, 1.0), copy_neighbours=0.0))
    fixed = tdata.PatchSampler([source], tdata.PatchConfig(patch=32, pixel_size=(1.0, 1.0), copy_neighbours=0.0,
                                                           context_distance=(2, 2)))
    a, b = near.draw_geometry(np.random.default_rng(5)), fixed.draw_geometry(np.random.default_rng(5))
    # a fixed distance draws no random number: the rest of the geometry is the default's
    assert (a["distance"], b["distance"]) == (1, 2) and b["indices"][2] - b["indices"][1] == 2
    assert {k: v for k, v in a.items() if k not in ("indices", "distance")} == {
        k: v for k, v in b.items() if k not in ("indices", "distance")}
    with pytest.raises(InputError, match="context_distance"):
        config_from_dict({"mode": "paired", "data": {"context_distance": [0, 2]}})
    with pytest.raises(InputError, match="context_distance"):
        config_from_dict({"mode": "paired", "data": {"context_distance": [3, 1]}})


def test_new_config_fields_are_checked():
    with pytest.raises(InputError, match="data.dose"):
        config_from_dict({"mode": "paired", "data": {"dose": [0.5, 0.1]}})
    with pytest.raises(InputError, match="data.inserts"):
        config_from_dict({"mode": "paired", "data": {"inserts": 2}})
    with pytest.raises(InputError, match="recorrupt_noise"):
        config_from_dict({"mode": "paired", "data": {"recorrupt_noise": "magic"}})
    with pytest.raises(InputError, match="stride"):
        config_from_dict({"mode": "paired", "data": {"normal_dose": [{"path": "x", "stride": 0}]}})


def test_export_with_a_low_frequency_pass_through(dataset, tmp_path):  # noqa: F811
    """`export --keep-low-sigma` writes the same weights with the fixed filter on: a flat offset
    predicted as noise is then not removed, and the metadata says so."""
    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training.export import export_checkpoint

    trainer = Trainer(_config(dataset, tmp_path), progress=False)
    trainer.fit(2)
    import torch

    with torch.no_grad():
        trainer.g.tail.bias.fill_(0.3)  # the generator now predicts a 0.3-unit offset as 'noise'
    checkpoint = trainer.save()
    plain = load_model(export_checkpoint(str(checkpoint), str(tmp_path / "plain.pt")))
    kept = load_model(export_checkpoint(str(checkpoint), str(tmp_path / "kept.pt"), keep_low_sigma=2.5))
    assert kept.metadata["architecture"]["keep_low_sigma"] == 2.5
    assert "keep_low_sigma" not in plain.metadata["architecture"]
    x = torch.randn(1, 3, 64, 64) * 0.2
    with torch.no_grad():
        removed_plain = x[:, 1:2] - plain.module(x)
        removed_kept = x[:, 1:2] - kept.module(x)
    # the kept model removes the plain one's prediction minus its low-pass part: no offset removed
    assert float(removed_plain.mean()) > 0.2
    assert abs(float(removed_kept.mean())) < 0.02
    with pytest.raises(InputError, match="keep-low-sigma"):
        export_checkpoint(str(checkpoint), str(tmp_path / "bad.pt"), keep_low_sigma=-1.0)


def test_transparency_loss_is_the_squared_loss_of_contrast_ratio():
    import torch

    from LowDoseDenoiseLib.training.losses import transparency_loss

    signal = torch.zeros(3, 1, 16, 16)
    signal[0, 0, 4:8, 4:8] = 0.05
    signal[1, 0, 2:12, 2:12] = -0.1  # sample 2 has no signal: left out, not a division by zero
    assert float(transparency_loss(signal.clone(), signal)) == pytest.approx(0.0)
    assert float(transparency_loss(torch.zeros_like(signal), signal)) == pytest.approx(1.0)
    assert float(transparency_loss(0.5 * signal, signal)) == pytest.approx(0.25)
    # changes away from the signal (orthogonal to it) do not count; only the in-phase gain does
    elsewhere = signal.clone()
    elsewhere[:, :, 13:, 13:] += 0.3
    assert float(transparency_loss(elsewhere, signal)) == pytest.approx(0.0, abs=1e-6)
    assert float(transparency_loss(signal, torch.zeros_like(signal))) == 0.0


def test_transparency_probes_are_signal_only_and_leave_the_batch_unchanged(dataset, tmp_path):  # noqa: F811
    plain = Trainer(_config(dataset, tmp_path / "a"), progress=False)
    config = _config(dataset, tmp_path / "b", loss={"transparency": 0.1, "transparency_patterns": 0.5})
    probed = Trainer(config, progress=False)
    with_signal = []
    for step in range(6):
        a, b = plain.batch(step), probed.batch(step)
        # the probes are drawn after the pairs: the same seed gives the same x and target
        assert torch_equal(a["x"], b["x"]) and torch_equal(a["target"], b["target"])
        probe = b["probe"].numpy() * probed.norm.scale  # back to HU
        assert probe.shape == b["x"].shape
        centre = probe[:, config.data.context]
        assert np.all(np.abs(centre).max(axis=(1, 2)) <= 200.0 + 1e-3)  # faint discs or a ≤ 200 HU pattern
        if np.abs(centre).max() > 0:
            with_signal.append(step)
    assert with_signal, "no probe found soft tissue in six batches"
    import torch

    with torch.no_grad():  # the residual's last layer starts at zero (G = identity, nothing to lose)
        for parameter in probed.g.tail.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    values = probed.train_step(probed.batch(with_signal[0]))
    assert 0.0 < values["transparency"] < 10.0 and np.isfinite(values["loss"])


def test_squared_error_term_and_the_model_file_names_every_term(dataset, tmp_path):  # noqa: F811
    """loss.l2 adds the mean squared error; the exported metadata names l1, l2 and transparency with
    the probes' settings (the 4.0 file's metadata listed L1 only)."""
    import torch

    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training.export import export_checkpoint

    config = _config(dataset, tmp_path, loss={"l2": 2.0, "transparency": 0.1, "transparency_min_pixels": 4.0,
                                               "transparency_pattern_contrast": [60.0, 250.0]})
    trainer = Trainer(config, progress=False)
    with torch.no_grad():
        for parameter in trainer.g.tail.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    batch = trainer.batch(0)
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(trainer.g(batch["x"]), batch["target"]))
    values = trainer.train_step(batch)
    assert values["l2"] == pytest.approx(expected, rel=1e-4) and values["l2"] > 0
    training = load_model(export_checkpoint(str(trainer.save()), str(tmp_path / "m.pt"))).metadata["training"]
    assert training["loss_weights"]["l2"] == 2.0 and training["loss_weights"]["transparency"] == 0.1
    assert "(l1 + l2 + " in training["method"] and "+ transparency)" in training["method"]
    assert training["transparency_probes"]["transparency_pattern_contrast"] == [60.0, 250.0]
    assert training["transparency_probes"]["transparency_min_pixels"] == 4.0
    # the neighbour distances the context saw: the fixture's slice spacings (× data.context_distance [1, 1])
    spacings = [float(s.spacing[2]) for s, _ in trainer._series(config.data.normal_dose)]
    assert training["slice_spacing_mm"] == [min(spacings), max(spacings)]
    override = export_checkpoint(str(trainer.save()), str(tmp_path / "o.pt"), slice_spacing=(2.0, 5.0))
    assert load_model(override).slice_spacing_range == (2.0, 5.0)
    with pytest.raises(InputError, match="slice-spacing"):
        export_checkpoint(str(trainer.save()), str(tmp_path / "bad.pt"), slice_spacing=(5.0, 2.0))


def test_transparency_config_is_checked():
    with pytest.raises(InputError, match="loss.l2"):
        config_from_dict({"mode": "paired", "loss": {"l2": -1}})
    with pytest.raises(InputError, match="transparency_pattern_contrast"):
        config_from_dict({"mode": "paired", "loss": {"transparency_pattern_contrast": [300, 30]}})
    with pytest.raises(InputError, match="transparency"):
        config_from_dict({"mode": "paired", "loss": {"transparency": -1}})
    with pytest.raises(InputError, match="transparency_min_pixels"):
        config_from_dict({"mode": "paired", "loss": {"transparency_min_pixels": -2}})
    with pytest.raises(InputError, match="transparency_diameter"):
        config_from_dict({"mode": "paired", "loss": {"transparency_diameter": [5, 2]}})


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_wider_context_starts_as_the_narrower_network(tmp_path):
    """model.init_generator may hold a generator with fewer context slices: the added outer slices get
    zero weights, so the 5-slice network computes the 3-slice one's output whatever the outer slices hold."""
    import torch

    from LowDoseDenoiseLib.network import Generator, GeneratorConfig
    from LowDoseDenoiseLib.training.trainer import load_generator_weights

    torch.manual_seed(0)
    narrow = Generator(GeneratorConfig(context=1, width=8, levels=2, res_blocks=1))
    for parameter in narrow.parameters():  # a non-trivial network (the tail starts at zero)
        parameter.data.normal_(0.0, 0.2)
    path = tmp_path / "narrow.pt"
    torch.save({"g": narrow.state_dict(), "architecture": {"name": "pan-unet", **GeneratorConfig(
        context=1, width=8, levels=2, res_blocks=1).to_dict()}}, path)
    wide_cfg = GeneratorConfig(context=2, width=8, levels=2, res_blocks=1)
    wide = Generator(wide_cfg)
    load_generator_weights(wide, str(path), wide_cfg)
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        expected = narrow(x[:, 1:4])
        # float32 rounding relative to the output's scale (hundreds here): the two networks sum their
        # convolutions in a different order; an outer slice that mattered would move outputs by O(scale)
        tolerance = 1e-5 * float(expected.abs().max())
        assert torch.allclose(wide(x), expected, rtol=1e-5, atol=tolerance)
        x[:, [0, 4]] = torch.randn(2, 2, 32, 32) * 5  # the outer slices do not matter yet
        assert torch.allclose(wide(x), expected, rtol=1e-5, atol=tolerance)
    with pytest.raises(InputError, match="wider context"):
        load_generator_weights(Generator(GeneratorConfig(context=0, width=8, levels=2, res_blocks=1)), str(path),
                               GeneratorConfig(context=0, width=8, levels=2, res_blocks=1))


def test_a_finished_run_resumed_records_the_slice_spacing(dataset, tmp_path):  # noqa: F811
    """A checkpoint written before the trainer recorded slice spacings gets them when its finished run
    is resumed (scripts/train_shipped.sh re-exports every stage); the weights stay as they were."""
    import torch

    from LowDoseDenoiseLib.training.trainer import CHECKPOINT, read_checkpoint

    config = _config(dataset, tmp_path)
    first = Trainer(config, progress=False)
    first.fit(4)
    path = first.folder / CHECKPOINT
    state = read_checkpoint(path)
    state.pop("slice_spacing_mm")  # as an old checkpoint
    torch.save(state, path)
    again = Trainer(config, progress=False)
    again.load(path)
    again.fit()
    saved = read_checkpoint(path)
    assert saved["slice_spacing_mm"] == first.slice_spacing_range() and saved["step"] == 4
    assert all(torch.equal(saved["g"][k], state["g"][k]) for k in state["g"])


def test_a_run_started_from_an_exported_file_records_that_files_lineage(dataset, tmp_path):  # noqa: F811
    """model.init_generator may be an exported model file (the shipped stages start from one when the
    earlier checkpoints are gone): the export of the new run names that file's run and its own earlier
    stages, as a chain of checkpoints would."""
    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training.export import export_checkpoint

    first = Trainer(_config(dataset, tmp_path / "a"), progress=False)
    first.fit(2)
    exported = export_checkpoint(str(first.save()), str(tmp_path / "first.pt"), name="first", version="1.2.3")
    config = _config(dataset, tmp_path / "b", model={"width": 4, "levels": 2, "res_blocks": 1, "f_width": 4,
                                                     "disc_width": 4, "disc_layers": 2,
                                                     "init_generator": str(exported)})
    second = Trainer(config, progress=False)
    second.fit(2)
    training = load_model(export_checkpoint(str(second.save()), str(tmp_path / "second.pt"))).metadata["training"]
    assert training["pretraining"]["run"] == "first 1.2.3 (first.pt)"
    assert training["pretraining"]["steps"] == 2 and "supervised" in training["pretraining"]["method"]
    assert [stage["run"] for stage in training["earlier_stages"]] == ["first 1.2.3 (first.pt)"]


def test_insert_floor_reaches_the_inserts_and_the_model_file(dataset, tmp_path, monkeypatch):  # noqa: F811
    """data.inserts_min_pixels goes to every detail insert of the training samples and into the exported
    metadata; a negative floor is refused."""
    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training.export import export_checkpoint

    seen = []
    original = tdata.inject_details

    def recording(*args, **kwargs):
        seen.append(kwargs.get("min_diameter_px"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tdata, "inject_details", recording)
    config = _config(dataset, tmp_path, data={"inserts": 1.0, "inserts_min_pixels": 5.0})
    trainer = Trainer(config, progress=False)
    trainer.batch(0)
    assert seen and set(seen) == {5.0}
    training = load_model(export_checkpoint(str(trainer.save()), str(tmp_path / "m.pt"))).metadata["training"]
    assert training["detail_inserts"]["inserts_min_pixels"] == 5.0
    with pytest.raises(InputError, match="inserts_min_pixels"):
        config_from_dict({"mode": "paired", "data": {"inserts_min_pixels": -1}})


def test_cyclegan_transparency_term_probes_g_on_its_low_dose_input(dataset, tmp_path):  # noqa: F811
    """In CycleGAN mode the transparency term asks G to pass faint signal added to its low-dose input
    (the safety anchor of the paper's method trained for real): the probes leave x and y unchanged,
    the term is G(x + probe) − G(x) against the probe, and the model file names it."""
    import torch

    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training import losses
    from LowDoseDenoiseLib.training.export import export_checkpoint

    plain = Trainer(_config(dataset, tmp_path / "a", mode="cyclegan"), progress=False)
    config = _config(dataset, tmp_path / "b", mode="cyclegan", loss={"transparency": 0.3})
    probed = Trainer(config, progress=False)
    with_signal = None
    for step in range(8):
        a, b = plain.batch(step), probed.batch(step)
        assert torch_equal(a["x"], b["x"]) and torch_equal(a["y"], b["y"])
        assert b["probe"].shape == b["x"].shape
        if with_signal is None and float(b["probe"].abs().max()) > 0:
            with_signal = b
    assert with_signal is not None, "no probe found soft tissue in eight batches"
    with torch.no_grad():  # G's residual starts at zero (the identity passes everything)
        for parameter in probed.g.tail.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        k = config.data.context
        expected = float(losses.transparency_loss(probed.g(with_signal["x"] + with_signal["probe"])
                                                  - probed.g(with_signal["x"]), with_signal["probe"][:, k : k + 1]))
    values = probed.train_step(with_signal)
    assert values["transparency"] == pytest.approx(expected, rel=1e-3) and values["transparency"] > 0
    training = load_model(export_checkpoint(str(probed.save()), str(tmp_path / "m.pt"))).metadata["training"]
    assert training["loss_weights"]["transparency"] == 0.3 and "with the transparency term" in training["method"]


def test_cycle_lowpass_compares_below_the_noise_band(dataset, tmp_path):  # noqa: F811
    """loss.cycle_lowpass: the cycle and identity terms compare Gaussian low-passes, so removed fine noise
    costs (almost) nothing there while a shifted mean or a blurred-away blob still costs in full; the
    trainer's cycle term is the low-passed one, and the model file records σ."""
    import torch

    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.training import losses
    from LowDoseDenoiseLib.training.export import export_checkpoint

    torch.manual_seed(0)
    clean = torch.zeros(2, 1, 64, 64)
    clean[..., 20:40, 20:40] = 1.0
    noisy = clean + 0.5 * torch.randn_like(clean)
    full, low = losses.cycle_loss(clean, noisy), losses.cycle_loss(clean, noisy, lowpass=2.0)
    assert low < 0.2 * full  # white noise keeps ~1/(4√π σ²) ≈ 3.5% of its power under σ = 2 px
    shifted = clean + 0.3
    assert losses.identity_loss(shifted, clean, lowpass=2.0) == pytest.approx(0.3, rel=1e-5)
    blob_gone = losses.cycle_loss(torch.zeros_like(clean), clean, lowpass=2.0)
    assert blob_gone > 0.5 * losses.cycle_loss(torch.zeros_like(clean), clean)
    assert torch.equal(losses.gaussian_lowpass(noisy, 0.0), noisy)
    assert float(losses.gaussian_lowpass(torch.ones(1, 1, 9, 9), 1.5).sub(1).abs().max()) < 1e-6  # flat stays flat

    config = _config(dataset, tmp_path, mode="cyclegan", loss={"cycle_lowpass": 2.0})
    trainer = Trainer(config, progress=False)
    batch = trainer.batch(0)
    with torch.no_grad():  # both generators start as the identity (zero tails), whose cycle costs 0 either way
        for net in (trainer.g, trainer.f):  # weights only: a bias would shift the mean, which both keep
            net.tail.weight.add_(0.1 * torch.randn_like(net.tail.weight))
        outputs = trainer.cycle(batch["x"], batch["y"])
        k = config.data.context
        xc, yc = batch["x"][:, k : k + 1], batch["y"][:, k : k + 1]
        expected = float(losses.cycle_loss(outputs[1], xc, 2.0) + losses.cycle_loss(outputs[3], yc, 2.0))
        unfiltered = float(losses.cycle_loss(outputs[1], xc) + losses.cycle_loss(outputs[3], yc))
    assert abs(expected - unfiltered) > 0.05 * unfiltered  # the check below tells the two apart
    assert trainer.train_step(batch)["cycle"] == pytest.approx(expected, rel=1e-4)
    training = load_model(export_checkpoint(str(trainer.save()), str(tmp_path / "m.pt"))).metadata["training"]
    assert training["loss_weights"]["cycle_lowpass"] == 2.0
    with pytest.raises(InputError, match="cycle_lowpass"):
        config_from_dict({"mode": "cyclegan", "loss": {"cycle_lowpass": -1}})
