"""Data discipline of issue 12: no training config reads a scan its held-out split reports on.

benchmarks/heldout.py's splits list the whole scans each evaluation holds out: split A for the
shipped model's configs, split B (every Philips scan) for the leave-one-vendor-out rotation
(configs rotation_b*.yaml). A config that read one of its split's scans would make that split's
numbers meaningless, so this checks every series path of every config against its split.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

from LowDoseDenoiseLib.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "LowDoseDenoise" / "LowDoseDenoiseLib" / "training" / "configs"


@pytest.fixture(scope="module")
def heldout():
    spec = importlib.util.spec_from_file_location("heldout_benchmark", REPO / "benchmarks" / "heldout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _read_paths(config_path: Path):
    config = load_config(str(config_path))
    return {entry.path.rstrip("/") for entry in list(config.data.normal_dose) + list(config.data.low_dose)}


def test_no_config_reads_the_scans_its_split_holds_out(heldout):
    checked = 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        split = "B" if path.name.startswith("rotation_b") else "A"
        held_out = {folder.rstrip("/") for _, folder, _ in heldout.SPLITS[split][0]}
        held_out.add(heldout.HELD_OUT_LOW_DOSE[1].rstrip("/"))
        overlap = _read_paths(path) & held_out
        assert not overlap, f"{path.name} (split {split}) trains on held-out scans {sorted(overlap)}"
        checked += 1
    assert checked >= 10


def test_the_splits_differ_and_b_holds_out_every_philips_scan(heldout):
    a = {folder for _, folder, _ in heldout.SPLITS["A"][0]}
    b = {folder for _, folder, _ in heldout.SPLITS["B"][0]}
    assert a != b
    assert all("philips" in folder for folder in b)
    rotation = _read_paths(CONFIGS / "rotation_b.yaml")
    assert not any("philips" in p for p in rotation)
    # the rotation trains on scans split A holds out: that is what makes it a rotation
    assert rotation & a
    for _, scan, _ in heldout.SPLITS["B"][1]:
        assert scan in {name for name, _, _ in heldout.SPLITS["B"][0]}


def test_the_phantoms_alone_section_gives_each_slice_without_its_neighbours(heldout):
    """Section 6 (phantoms_alone): every method call gets a one-slice block (the network's single-image
    mode); the main phantom section gives three; the identity keeps every insert and pattern either way."""
    shapes = {True: set(), False: set()}

    def identity(alone: bool):
        def run(block, spacing):
            shapes[alone].add(block.shape[0])
            return block[block.shape[0] // 2]
        return run

    for alone in (True, False):
        out = heldout.phantom_section({"id": identity(alone)}, realisations=2, seed=0, quick=True, alone=alone)
        for by_method in out.values():
            for row in by_method["id"].values():
                kept = row.get("contrast_ratio", row.get("energy_kept"))
                assert kept == pytest.approx(1.0, abs=1e-6)
    assert shapes == {True: {1}, False: {3}}
