"""Model files: TorchScript with metadata inside, and the errors for every kind of bad file."""

import json

import pytest
import torch

from conftest import make_test_generator, save_test_model
from LowDoseDenoiseLib.errors import ModelError
from LowDoseDenoiseLib.modelfile import (
    FORMAT_VERSION,
    METADATA_FILE,
    describe,
    file_sha256,
    load_model,
    make_metadata,
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
