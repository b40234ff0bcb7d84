"""Model files: TorchScript with metadata inside, and the errors for every kind of bad file."""

import json

import pytest
import torch

from conftest import make_test_generator, save_test_model
from LowDoseDenoiseLib.errors import ModelError
from LowDoseDenoiseLib.modelfile import (
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_ENV,
    MODELS_DIR,
    MODELS_INDEX,
    default_model_path,
    describe,
    error_summary,
    file_sha256,
    list_models,
    load_model,
    make_metadata,
    read_metadata,
    resolve_model,
    save_model,
)


def test_round_trip_keeps_metadata_and_outputs(tmp_path):
    generator, config = make_test_generator()
    metadata = make_metadata(config, name="m", version="1.2", description="d",
                             training={"trained": True, "pixel_size_mm": [0.6, 1.2], "dose_fraction": [0.1, 0.5]})
    path = save_model(generator, metadata, tmp_path / "m.pt")
    model = load_model(path)
    assert model.metadata == metadata
    assert model.sha256 == file_sha256(path) and len(model.sha256) == 64
    assert model.context == 1 and model.min_size == config.min_size
    assert model.pixel_size_range == (0.6, 1.2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), generator(x))
    assert "10–50% dose" in model.summary() and model.sha256[:12] in model.summary()
    text = describe(model)
    assert model.sha256 in text and "m 1.2" in text


def test_no_leftover_temporary_file(tmp_path):
    save_test_model(tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_not_torchscript_says_how_to_export(tmp_path):
    path = tmp_path / "weights.pt"
    generator, _ = make_test_generator()
    torch.save(generator.state_dict(), path)  # a pickle of weights, not TorchScript
    with pytest.raises(ModelError, match="lowdose-denoise export"):
        load_model(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model" * 100)
    with pytest.raises(ModelError, match="not a TorchScript"):
        load_model(garbage)


def test_torchscript_without_metadata(tmp_path):
    generator, _ = make_test_generator()
    path = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(generator), str(path))
    with pytest.raises(ModelError, match="carries no metadata.json"):
        load_model(path)


def _save_with_raw_metadata(path, raw: str):
    generator, _ = make_test_generator()
    torch.jit.save(torch.jit.script(generator), str(path), _extra_files={METADATA_FILE: raw})
    return path


def test_malformed_metadata(tmp_path):
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(_save_with_raw_metadata(tmp_path / "a.pt", "{not json"))
    _, config = make_test_generator()
    metadata = make_metadata(config, name="m", version="1", description="d")
    del metadata["hu_normalisation"]
    with pytest.raises(ModelError, match="lacks hu_normalisation"):
        load_model(_save_with_raw_metadata(tmp_path / "b.pt", json.dumps(metadata)))
    metadata = make_metadata(config, name="m", version="1", description="d")
    metadata["context_slices"] = "one"
    with pytest.raises(ModelError, match="context_slices"):
        load_model(_save_with_raw_metadata(tmp_path / "c.pt", json.dumps(metadata)))
    metadata = make_metadata(config, name="m", version="1", description="d")
    metadata["hu_normalisation"] = {"clip": [100, -100], "offset": 0, "scale": 1000}
    with pytest.raises(ModelError, match="empty clip window"):
        load_model(_save_with_raw_metadata(tmp_path / "d.pt", json.dumps(metadata)))


def test_newer_format_asks_for_an_update(tmp_path):
    _, config = make_test_generator()
    metadata = make_metadata(config, name="m", version="1", description="d")
    metadata["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ModelError, match="update LowDoseDenoise"):
        load_model(_save_with_raw_metadata(tmp_path / "new.pt", json.dumps(metadata)))


class _Shrinks(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, ::2, ::2]


def test_output_shape_mismatch_is_caught_by_the_probe(tmp_path):
    _, config = make_test_generator()
    metadata = make_metadata(config, name="m", version="1", description="d")
    path = save_model(_Shrinks(), metadata, tmp_path / "shrinks.pt")
    with pytest.raises(ModelError, match="expected"):
        load_model(path)


def test_context_mismatch_is_caught_by_the_probe(tmp_path):
    path = save_test_model(tmp_path / "ctx.pt", context_slices=3)  # network built for k=1
    with pytest.raises(ModelError, match="probe"):
        load_model(path)


# -- the bundled-model registry ---------------------------------------------------------------


def _registry(folder, default="second", **models):
    """A models folder with one small model per name (metadata name = key, training as given)."""
    folder.mkdir()
    for name, training in models.items():
        save_test_model(folder / f"{name}.pt", name=name, training=training)
    if default is not None:
        (folder / MODELS_INDEX).write_text(json.dumps({"default": default}))
    return folder


def test_registry_lists_every_model_with_its_metadata_and_the_default_first(tmp_path):
    folder = _registry(tmp_path / "models", first={"trained": True, "dose_fraction": [0.1, 0.5]},
                       second={"trained": True, "dose_fraction": [0.05, 0.9], "pixel_size_mm": [0.5, 1.5]})
    (folder / "broken.pt").write_bytes(b"not a model")
    entries = list_models(folder)
    assert [e.name for e in entries] == ["second", "first", "broken"]
    second, first, broken = entries
    assert second.default and not first.default and second.path == folder / "second.pt"
    assert second.dose_range == (0.05, 0.9) and second.pixel_size_range == (0.5, 1.5)
    assert second.summary == "small random generator for tests" and second.version == "0.0.1"
    assert "[default]" in second.line() and "5%–90% dose" in second.line()
    assert broken.problem and "not a TorchScript" in broken.problem and "unusable" in broken.line()
    assert default_model_path(folder) == folder / "second.pt"


def test_metadata_is_read_without_torch_and_matches_load_model(tmp_path):
    path = save_test_model(tmp_path / "m.pt", name="m")
    assert read_metadata(path) == load_model(path, probe=False).metadata


def test_model_names_and_files_resolve(tmp_path):
    folder = _registry(tmp_path / "models", first={"trained": True}, second={"trained": False})
    assert resolve_model("first", folder) == folder / "first.pt"
    assert resolve_model("second@0.0.1", folder) == folder / "second.pt"
    assert resolve_model(None, folder) == folder / "second.pt"
    assert resolve_model(str(folder / "first.pt"), folder) == folder / "first.pt"
    with pytest.raises(ModelError, match=r"neither a model file nor a bundled model \(bundled: second, first\)"):
        resolve_model("third", folder)
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "elsewhere" / "third.pt"), folder)


def test_a_default_that_names_no_model_or_no_index_with_several_models_is_an_error(tmp_path):
    folder = _registry(tmp_path / "a", default="gone", first={"trained": True}, second={"trained": True})
    with pytest.raises(ModelError, match="names 'gone', which is not among them"):
        default_model_path(folder)
    folder = _registry(tmp_path / "b", default=None, first={"trained": True}, second={"trained": True})
    with pytest.raises(ModelError, match="no models.json says which"):
        default_model_path(folder)
    single = _registry(tmp_path / "c", default=None, only={"trained": True})
    assert default_model_path(single) == single / "only.pt"
    (single / MODELS_INDEX).write_text("{not json")
    with pytest.raises(ModelError, match="not a valid model index"):
        list_models(single)


def test_the_environment_overrides_the_default(tmp_path, monkeypatch):
    path = save_test_model(tmp_path / "mine.pt")
    monkeypatch.setenv(MODEL_ENV, str(path))
    assert resolve_model(None) == path
    assert load_model(None).path == path


def test_the_shipped_registry_names_an_existing_default():
    """models.json in Resources/Models names one of the bundled models; every bundled file is usable."""
    entries = list_models()
    assert entries, f"no bundled models in {MODELS_DIR}"
    assert (MODELS_DIR / MODELS_INDEX).is_file()
    assert sum(e.default for e in entries) == 1 and entries[0].default
    assert all(e.problem is None for e in entries), [e.line() for e in entries]
    assert all(e.dose_range for e in entries if e.trained)  # the intended dose range is stated


def test_every_bundled_model_names_the_loss_terms_it_was_trained_with():
    """The training method in a bundled file's metadata names exactly its terms of weight > 0, and a
    transparency-trained file states its probes.  (That export writes every term is checked on a real
    export in test_training_generalist; 4.0.0's file, exported before, named L1 only.)"""
    from LowDoseDenoiseLib.modelfile import read_metadata
    from LowDoseDenoiseLib.training.export import PAIRED_TERMS

    for entry in list_models():
        training = read_metadata(entry.path).get("training", {})
        weights = training.get("loss_weights") or {}
        if not training or not set(weights) <= set(PAIRED_TERMS):  # a CycleGAN's weights read differently
            continue
        named = training["method"].split("(", 1)[1].split(")", 1)[0].split(" + ")
        assert named == [k for k in PAIRED_TERMS if (weights.get(k) or 0) > 0], (entry.path.name, training["method"])
        if (weights.get("transparency") or 0) > 0:
            assert training["transparency_probes"]["transparency_contrast"], entry.path.name


def test_models_command_lists_the_bundled_models(capsys):
    from LowDoseDenoiseLib import cli

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and "[default]" in lines[0]
    assert {e.name for e in list_models()} <= {line.split()[0] for line in lines}


class _WrongChannels(torch.nn.Module):
    """A network built for 7 input slices, saved with metadata that says 3."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(7, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_probe_error_keeps_torchs_cause_not_its_trace(tmp_path):
    _, config = make_test_generator()
    metadata = make_metadata(config, name="m", version="1", description="d")
    path = save_model(_WrongChannels(), metadata, tmp_path / "wrong.pt")
    with pytest.raises(ModelError) as caught:
        load_model(path)
    message = str(caught.value)
    # The cause is the last line of TorchScript's text; the whole of it survives, uncut.
    assert "to have 7 channels, but got 3 channels instead" in message
    assert "TorchScript interpreter" not in message and "<--- HERE" not in message and "code/" not in message
    assert "\n" not in message


def test_load_error_drops_torchs_checkpoint_advice(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model" * 100)
    with pytest.raises(ModelError) as caught:
        load_model(garbage)
    message = str(caught.value)
    assert "failed reading zip archive: failed finding central directory)" in message
    assert "miniz" not in message and "high likelihood" not in message
    assert "lowdose-denoise export" in message


def test_error_summary_never_cuts_a_word():
    words = [f"word{i}" for i in range(200)]
    summary = error_summary(RuntimeError(" ".join(words)), limit=120)
    assert len(summary) <= 120 and summary.endswith("…")
    assert summary[:-1].split()[-1] in words  # the last word kept is a whole word
    two = error_summary(RuntimeError("Loading failed.\n  File \"x.py\", line 3\n    code\n" + " ".join(words)),
                        limit=120)
    head, _, tail = two.partition(" … ")
    assert head == "Loading failed." and tail.split()[0] == "word0" and tail[:-1].split()[-1] in words
    assert error_summary(RuntimeError("")) == "RuntimeError"
