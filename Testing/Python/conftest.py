"""Shared pytest fixtures: small models, synthetic volumes and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA_ENV = "LOWDOSE_SHARED_DATA"


def shared_data_dir() -> Path:
    """../shared/data beside the repo, or $LOWDOSE_SHARED_DATA."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"real CT folder {folder} is absent (set {SHARED_DATA_ENV} to point at it)")
    return folder


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    """Tests share two cores with each other and with other work; keep torch polite."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)


def make_test_generator(context: int = 1, seed: int = 0):
    """A small Generator whose zero-initialised last layer is randomised so it changes images."""
    import torch

    from LowDoseDenoiseLib.network import Generator, GeneratorConfig

    config = GeneratorConfig(context=context, width=4, levels=2, res_blocks=1)
    torch.manual_seed(seed)
    generator = Generator(config)
    with torch.no_grad():
        generator.tail.weight.normal_(0.0, 0.05)
    return generator.eval(), config


def save_test_model(path: Path, context: int = 1, training=None, **metadata_overrides) -> Path:
    """Save a small generator; overrides may make the metadata invalid on purpose (no validation)."""
    import json

    import torch

    from LowDoseDenoiseLib.modelfile import METADATA_FILE, make_metadata

    generator, config = make_test_generator(context)
    metadata = make_metadata(
        config,
        name="test-model",
        version="0.0.1",
        description="small random generator for tests",
        training=training or {"trained": False, "pixel_size_mm": [0.5, 1.5]},
    )
    metadata.update(metadata_overrides)
    torch.jit.save(torch.jit.script(generator), str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return path


@pytest.fixture(scope="session")
def test_model_path(tmp_path_factory) -> Path:
    return save_test_model(tmp_path_factory.mktemp("models") / "test-model.pt")


@pytest.fixture(scope="session")
def test_model(test_model_path):
    from LowDoseDenoiseLib.modelfile import load_model

    return load_model(test_model_path)


def oblique_direction() -> tuple:
    """A proper rotation (about z by 20°, then about x by 10°), flattened row-major."""
    a, b = np.deg2rad(20.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rx @ rz).ravel().tolist())


@pytest.fixture
def oblique_volume():
    """An oblique, anisotropic int16 CT-like volume (5 slices of 40×48)."""
    from LowDoseDenoiseLib.volume import Volume

    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[0:5, 0:40, 0:48]
    body = ((y - 20) / 17.0) ** 2 + ((x - 24) / 21.0) ** 2 < 1.0
    voxels = np.where(body, 50.0, -1000.0) + rng.normal(0, 25, size=body.shape) + 3 * z
    return Volume(
        voxels=np.rint(voxels).astype(np.int16),
        spacing=(0.73, 0.81, 2.5),
        origin=(-120.5, 33.25, 410.0),
        direction=oblique_direction(),
    )
