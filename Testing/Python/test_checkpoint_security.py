"""Issue 15 item 1: a crafted checkpoint never runs its pickle payload (export, train with init_generator).

The payload is a real one: unpickling it creates a marker file.  ``weights_only=True``
must refuse it before that happens, with exit 2 and a message that says why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import _config, dataset  # noqa: E402,F401  (the tiny two-series data set)

from LowDoseDenoiseLib import cli  # noqa: E402
from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.network import ARCHITECTURE, Generator, GeneratorConfig  # noqa: E402
from LowDoseDenoiseLib.training.trainer import CHECKPOINT, Trainer, read_checkpoint  # noqa: E402


class _Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for any code an attacker wants run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_checkpoint(tmp_path: Path) -> tuple:
    config = GeneratorConfig(context=1, width=4, levels=2, res_blocks=1)
    marker = tmp_path / "PWNED"
    state = {
        "format": 1,
        "architecture": {**config.to_dict(), "name": ARCHITECTURE},
        "mode": "paired",
        "config": {"name": "evil"},
        "step": 1,
        "g": Generator(config).state_dict(),
        "payload": _Payload(marker),
    }
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    assert not marker.exists()
    # The payload is live: a plain unpickle runs it (so the tests below can fail).
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_read_checkpoint_refuses_pickled_objects(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(InputError, match="could run arbitrary code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_bytes_that_are_no_pickle_are_called_corrupt_not_unsafe(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model" * 100)
    with pytest.raises(InputError, match="is corrupt or not a checkpoint") as caught:
        read_checkpoint(garbage)
    assert "arbitrary code" not in str(caught.value)


def test_export_of_a_malicious_checkpoint_runs_nothing(tmp_path, capsys):
    path, marker = _evil_checkpoint(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["export", str(path), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "could run arbitrary code" in err and "Traceback" not in err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_train_with_a_malicious_init_generator_runs_nothing(dataset, tmp_path, capsys):  # noqa: F811
    path, marker = _evil_checkpoint(tmp_path)
    config = _config(dataset, tmp_path, model={"init_generator": str(path)})
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    assert cli.main(["-q", "train", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "could run arbitrary code" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "run" / "t" / CHECKPOINT).exists()


def test_trainer_checkpoints_load_safely_and_resume(dataset, tmp_path):  # noqa: F811
    trainer = Trainer(_config(dataset, tmp_path), progress=False)
    trainer.fit(2)
    state = read_checkpoint(trainer.folder / CHECKPOINT)  # weights_only=True accepts our own format
    assert state["step"] == 2 and isinstance(state["config"], dict)
    again = Trainer(_config(dataset, tmp_path), progress=False)
    again.load(trainer.folder / CHECKPOINT)
    assert again.step == 2
    for a, b in zip(trainer.g.state_dict().values(), again.g.state_dict().values()):
        assert torch.equal(a, b)
