"""Reader study on files: plan (blinding, key), reading (durable, resumable), summary (statistics).

Cases are tiny low-dose phantoms (3 slices of 128×128 at 0.8 mm); the model method runs
the bundled model on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from LowDoseDenoiseLib.errors import Cancelled, InputError
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume
from LowDoseDenoiseLib.readerstudy import protocol as p
from LowDoseDenoiseLib.readerstudy.plan import parse_methods, plan_study, sha256_file
from LowDoseDenoiseLib.readerstudy.scores import ReadingSession, ScoreFile
from LowDoseDenoiseLib.readerstudy.summary import agreement, load_key, paired_test, summarize_study
from LowDoseDenoiseLib.volume import Volume, cast_like

pytest.importorskip("krippendorff", reason="pip install -e .[readerstudy]")
pytest.importorskip("sklearn", reason="pip install -e .[readerstudy]")

LIB = Path(__file__).resolve().parents[2] / "LowDoseDenoise"
SPACING = (0.8, 0.8, 2.5)
GEOMETRY_KEYS = {"type", "dimension", "space", "sizes", "space directions", "kinds", "endian", "encoding",
                 "space origin"}


def write_case(path: Path, seed: int, size: int = 128, slices: int = 3) -> Path:
    from LowDoseDenoiseLib.quality.phantom import make_low_dose_phantom

    _, low_dose, spacing = make_low_dose_phantom(size=size, slices=slices, seed=seed, spacing=SPACING)
    volume = Volume(voxels=np.rint(low_dose).astype(np.int16), spacing=spacing, origin=(-51.2, -51.2, 100.0))
    return write_volume(volume, path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    return [write_case(folder / f"patient_{seed}.nrrd", seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def study(cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("studies") / "study"
    plan_study(cases, "original,model@0.7,cad,gaussian", out, readers=2, seed=5)
    return out


def nrrd_header(path: Path) -> dict:
    data = path.read_bytes()
    header = data.split(b"\n\n", 1)[0].decode("ascii")
    fields = {}
    for line in header.splitlines()[1:]:
        if line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


# -- plan ----------------------------------------------------------------------------------------


def test_planned_study_reveals_no_method(study, cases):
    key = load_key(study)
    forbidden = {"original", "lowdose", "liver-pan", "curvature", "diffusion", "gaussian", "strength", "denoise",
                 "model", "patient_"}
    forbidden |= {name.lower() for name in key["methods"]} - {"cad"}  # 'cad' checked in the text files below
    readers_files = [path for path in study.rglob("*") if path.is_file() and p.KEY_DIR not in path.parts]
    assert {path.relative_to(study).parts[0] for path in readers_files} == {
        p.WORKLIST_FILE, p.PROTOCOL_FILE, p.IMAGES_DIR, "README.txt"}
    for path in readers_files:
        assert not any(word in str(path.relative_to(study)).lower() for word in forbidden | {"cad"}), path
        data = path.read_bytes().lower()
        if path.suffix == ".nrrd":
            text = data.split(b"\n\n", 1)[0]
            found = [word for word in forbidden | {"cad"} if word.encode() in text]
            assert not found, f"{path.name} header names {found}"
        found = [word for word in forbidden if word.encode() in data]
        assert not found, f"{path.relative_to(study)} contains {found}"
    worklist = (study / p.WORKLIST_FILE).read_text().lower()
    assert "cad" not in worklist and "case" not in worklist


def test_images_carry_geometry_only_and_one_pixel_type(study, cases):
    headers = [nrrd_header(path) for path in sorted((study / p.IMAGES_DIR).glob("*.nrrd"))]
    assert len(headers) == 2 * 3 * 2  # 2 cases × 3 pairs × 2 sides
    for header in headers:
        assert set(header) == GEOMETRY_KEYS, set(header) - GEOMETRY_KEYS
        assert header["type"] == "short"
    # geometry is the case's (spacing and origin kept)
    volume = read_volume(next((study / p.IMAGES_DIR).glob("*.nrrd")))
    assert volume.spacing == pytest.approx(SPACING) and volume.origin == pytest.approx((-51.2, -51.2, 100.0))


def test_key_unblinds_exactly(study, cases):
    """Recompute every method independently and find it in exactly the files the key names."""
    from LowDoseDenoiseLib import engine
    from LowDoseDenoiseLib.quality.filters import CLASSICAL_FILTERS

    key = load_key(study)
    assert set(key["methods"]) == {"original", "lowdose-liver-pan@0.7", "cad", "gaussian"}
    worklist = json.loads((study / p.WORKLIST_FILE).read_text())
    for item in worklist["items"]:
        entry = key["items"][item["id"]]
        assert p.REFERENCE_METHOD in (entry["A"], entry["B"]) and entry["A"] != entry["B"]
        for side in p.SIDES:
            image = key["images"][item[side]]
            assert image["method"] == entry[side] and image["case"] == entry["case"]
            assert image["sha256"] == sha256_file(study / item[side])
    for index, case in enumerate(cases):
        volume = read_volume(case)
        hu = volume.hu()
        expected = {
            "original": volume.voxels,
            "cad": cast_like(np.stack([CLASSICAL_FILTERS["cad"](hu[k : k + 1], volume.spacing)[0]
                                       for k in range(len(hu))]), np.int16),  # per slice, as FILTERS says
            "gaussian": cast_like(CLASSICAL_FILTERS["gaussian"](hu, volume.spacing), np.int16),
            "lowdose-liver-pan@0.7": cast_like(engine.denoise_volume(hu, None, device="cpu", strength=0.7,
                                                                     spacing=volume.spacing), np.int16),
        }
        case_id = f"case_{index + 1:02d}"
        for relative, image in key["images"].items():
            if image["case"] != case_id:
                continue
            voxels = read_volume(study / relative).voxels
            matches = [name for name, ref in expected.items() if np.array_equal(voxels, ref)]
            assert matches == [image["method"]], (relative, image["method"], matches)
    # the design: per case each method once against the original, A/B placement mixed
    sides = [entry["A"] == p.REFERENCE_METHOD for entry in key["items"].values()]
    assert len(sides) == 6
    assert key["cases"][0]["source"] == str(cases[0])


def test_plan_is_seeded_and_orders_differ_per_reader(cases, tmp_path):
    a = plan_study(cases, "original,gaussian,cad", tmp_path / "a", readers=3, seed=11).folder
    b = plan_study(cases, "original,gaussian,cad", tmp_path / "b", readers=3, seed=11).folder
    c = plan_study(cases, "original,gaussian,cad", tmp_path / "c", readers=3, seed=12).folder
    key = [json.loads((f / p.KEY_DIR / p.KEY_FILE).read_text())["items"] for f in (a, b, c)]
    assert (a / p.WORKLIST_FILE).read_bytes() == (b / p.WORKLIST_FILE).read_bytes() and key[0] == key[1]
    assert key[0] != key[2]
    orders = json.loads((a / p.WORKLIST_FILE).read_text())["readers"]
    assert sorted(orders) == ["R1", "R2", "R3"]
    assert all(sorted(order) == sorted(orders["R1"]) for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) > 1


def test_plan_refuses_bad_input_and_leaves_nothing(cases, tmp_path):
    with pytest.raises(InputError, match="must include 'original'"):
        plan_study(cases, "gaussian,cad", tmp_path / "s")
    with pytest.raises(InputError, match="Unknown method 'bm4d'"):
        plan_study(cases, "original,bm4d", tmp_path / "s")
    with pytest.raises(InputError, match="listed twice"):
        parse_methods("original,cad,cad")
    with pytest.raises(InputError, match="strength"):
        parse_methods("original,model@1.5")
    with pytest.raises(InputError, match="does not exist"):
        plan_study([tmp_path / "missing.nrrd"], "original,cad", tmp_path / "s")
    bad = write_volume(Volume(voxels=np.zeros((2, 32, 32), np.uint8)), tmp_path / "mask.nrrd")
    with pytest.raises(InputError, match="looks like a mask or map, not CT"):
        plan_study([bad], "original,cad", tmp_path / "s")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mask.nrrd"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        plan_study(cases, "original,cad", tmp_path / "full")


def test_filters_run_slice_by_slice_with_progress_and_cancel():
    """apply_filter runs each filter per slice (as FILTERS describes them): the same as the filter on
    each slice alone, NLM with h from the whole volume's noise SD (as on the volume at once); it
    reports every slice and stops between slices when cancelled."""
    from LowDoseDenoiseLib.quality import filters
    from LowDoseDenoiseLib.readerstudy.plan import apply_filter

    rng = np.random.default_rng(2)
    hu = (40.0 + rng.normal(0, 25, (4, 48, 48))).astype(np.float32)
    spacing = (0.8, 0.8, 2.0)
    cad = apply_filter("cad", hu, spacing)
    for k in range(4):
        np.testing.assert_allclose(cad[k], filters.curvature_diffusion(5)(hu[k : k + 1], spacing)[0], atol=1e-4)
    assert np.abs(cad - filters.curvature_diffusion(5)(hu, spacing)).max() > 0.1  # not the 3D diffusion
    np.testing.assert_allclose(apply_filter("nlm", hu, spacing), filters.nl_means(hu, spacing), atol=1e-4)
    done = []
    apply_filter("gaussian", hu, spacing, progress=lambda d, t: done.append((d, t)))
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]
    seen = []
    with pytest.raises(Cancelled, match="nlm filter was cancelled"):
        apply_filter("nlm", hu, spacing, progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert seen == [1, 2]  # stopped before the third slice


def test_a_cancel_during_a_filter_stops_the_plan_between_slices(cases, tmp_path):
    messages = []

    def cancel_in_first_filter() -> bool:
        return any(m.startswith("case 1/2: nlm") and m.endswith("1/3 slices") for m in messages)

    with pytest.raises(Cancelled, match="no study folder was written"):
        plan_study(cases, "original,nlm", tmp_path / "s", progress=messages.append, cancel=cancel_in_first_filter)
    assert not any(m.endswith("2/3 slices") for m in messages)
    assert list(tmp_path.iterdir()) == []


def test_cancelled_plan_leaves_no_folder(cases, tmp_path):
    """Cancel before the start, and during the model's run on the second case: no study folder, no partial."""
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="no study folder was written"):
        plan_study(cases, "original,model,cad", tmp_path / "s", cancel=stop)
    messages = []

    def cancel_in_second_model_run() -> bool:
        return any(m.startswith("case 2/2: lowdose-liver-pan") and "slices" in m for m in messages)

    with pytest.raises(Cancelled, match="no study folder was written"):
        plan_study(cases, "original,model,cad", tmp_path / "s", progress=messages.append,
                   cancel=cancel_in_second_model_run)
    # it got as far as the model's slices on the second case, and stopped before diffusion there
    assert "case 2/2: cad" not in messages and any("case 1/2: cad" == m for m in messages)
    assert any(m.endswith("3/3 slices") for m in messages)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="cancel must be None"):
        plan_study(cases, "original,cad", tmp_path / "s", cancel="yes")
    assert list(tmp_path.iterdir()) == []


def test_all_pairs_design(cases, tmp_path):
    folder = plan_study(cases[:1], "original,gaussian,cad", tmp_path / "s", readers=1, pairs="all").folder
    key = load_key(folder)
    pairs = sorted(tuple(sorted((e["A"], e["B"]))) for e in key["items"].values())
    assert pairs == [("cad", "gaussian"), ("cad", "original"), ("gaussian", "original")]


# -- reading -------------------------------------------------------------------------------------


def all_scores(value: int) -> dict:
    return {criterion: value for criterion in p.CRITERION_KEYS}


def test_session_records_and_validates(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    session = ReadingSession(copy, "R1")
    assert (session.done, session.total, session.next_index()) == (0, 6, 0)
    item = session.next_item()
    assert item.image_a.is_file() and item.image_b.is_file()
    with pytest.raises(InputError, match="Noise"):
        session.record(item.id, {**all_scores(3), "noise": None}, all_scores(3), "A")
    with pytest.raises(InputError, match="1–5"):
        session.record(item.id, all_scores(6), all_scores(3), "A")
    with pytest.raises(InputError, match="preference"):
        session.record(item.id, all_scores(3), all_scores(3), "left")
    with pytest.raises(InputError, match="not in this study"):
        ReadingSession(copy, "R9")
    assert not (copy / p.SCORES_DIR / "R1.jsonl").exists()  # nothing saved by refused records
    session.record(item.id, all_scores(3), all_scores(4), "B", comment="streaks at the liver dome")
    again = ReadingSession(copy, "R1")
    assert again.next_index() == 1 and again.previous_record(item.id)["comment"] == "streaks at the liver dome"
    # scoring the same item again: the last record counts
    again.record(item.id, all_scores(2), all_scores(4), "B")
    assert ReadingSession(copy, "R1").previous_record(item.id)["scores"]["A"]["overall"] == 2
    assert len(ScoreFile(copy / p.SCORES_DIR / "R1.jsonl").records()) == 2


READER_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {lib!r})
    from LowDoseDenoiseLib.readerstudy.scores import ReadingSession
    from LowDoseDenoiseLib.readerstudy.protocol import CRITERION_KEYS
    session = ReadingSession({study!r}, "R2")
    while True:
        item = session.next_item()
        if item is None:
            break
        scores = {{c: 1 + (item.index % 5) for c in CRITERION_KEYS}}
        session.record(item.id, scores, scores, "equal", comment=f"item {{item.index}}")
        print(item.index, flush=True)
        time.sleep(0.3)
    print("done", flush=True)
""")


def test_scores_survive_a_kill_and_resume_at_the_next_item(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    script = READER_SCRIPT.format(lib=str(LIB), study=str(copy))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    k = 3
    try:
        for expected in range(k):
            assert child.stdout.readline().strip() == str(expected)
        child.send_signal(signal.SIGKILL)  # no chance to clean up
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    session = ReadingSession(copy, "R2")
    assert session.done >= k and session.next_index() == session.done  # every saved item survived
    assert session.done <= k + 1  # at most the one being saved when the signal came
    resumed = session.next_index()
    for index in range(resumed):
        record = session.previous_record(session.order[index])
        assert record["comment"] == f"item {index}" and record["scores"]["A"]["overall"] == 1 + index % 5
    # the next item the reader sees is the first one not scored
    assert session.next_item().index == resumed


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "R1.jsonl"
    scores = ScoreFile(path)
    scores.append({"item": "item_0001", "preference": "A"})
    with open(path, "ab") as handle:
        handle.write(b'{"item": "item_0002", "prefer')  # the process died mid-write
    assert [r["item"] for r in scores.records()] == ["item_0001"]
    scores.append({"item": "item_0003", "preference": "B"})
    assert [r["item"] for r in scores.records()] == ["item_0001", "item_0003"]
    assert path.read_bytes().count(b"\n") == 2 and b"prefer\n" not in path.read_bytes()
    # a broken line that is not the last is damage, not a crash: refused
    path.write_bytes(b'{"item": "item_0001"}\nnot json\n{"item": "item_0003"}\n')
    with pytest.raises(InputError, match="line 2"):
        scores.records()


# -- summary -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored_study(tmp_path_factory):
    """Six cases, original vs gaussian vs cad; two readers who agree; gaussian +1 on every item, cad = original."""
    folder = tmp_path_factory.mktemp("scored")
    cases = [write_case(folder / f"c{seed}.nrrd", seed, size=64, slices=2) for seed in range(6)]
    study = plan_study(cases, "original,gaussian,cad", folder / "study", readers=2, seed=3).folder
    key = json.loads((study / p.KEY_DIR / p.KEY_FILE).read_text())
    rng = np.random.default_rng(0)
    base = {item: int(rng.integers(1, 5)) for item in key["items"]}  # 1..4, so +1 stays on the scale
    for reader in ("R1", "R2"):
        session = ReadingSession(study, reader)
        while (item := session.next_item()) is not None:
            methods = key["items"][item.id]
            values = [base[item.id] + (1 if methods[side] == "gaussian" else 0) for side in p.SIDES]
            preference = "equal" if values[0] == values[1] else ("A" if values[0] > values[1] else "B")
            session.record(item.id, all_scores(values[0]), all_scores(values[1]), preference)
    return study


def test_summary_recovers_a_known_effect(scored_study, tmp_path):
    result = summarize_study(scored_study, tmp_path / "report.md")
    summary = result.summary
    gaussian = summary["versus_original"]["gaussian"]["overall"]
    assert gaussian["n_pairs"] == 12 and gaussian["mean_difference"] == 1.0
    assert gaussian["p_value"] < 0.01 and gaussian["rank_biserial"] == 1.0
    assert all(v["p_value"] < 0.05 for v in gaussian["per_reader"].values())
    cad = summary["versus_original"]["cad"]["noise"]
    assert cad["p_value"] == 1.0 and cad["rank_biserial"] == 0.0
    means = {m: summary["scores"][m]["overall"]["mean"] for m in ("original", "gaussian", "cad")}
    assert means["gaussian"] - means["original"] == pytest.approx(0.5, abs=0.5)  # original also pairs with cad
    prefs = {tuple(e["methods"]): e for e in summary["preferences"]}
    assert prefs[("gaussian", "original")]["wins"] == {"gaussian": 12, "original": 0}
    assert prefs[("cad", "original")]["equal"] == 12
    for criterion in p.CRITERION_KEYS:  # identical readers
        assert summary["agreement"][criterion]["cohen_kappa"] == pytest.approx(1.0)
        assert summary["agreement"][criterion]["krippendorff_alpha"] == pytest.approx(1.0)
    text = result.report.read_text()
    assert "| gaussian | Overall image quality | 12 | 1.00 |" in text and result.figure.name == "report.png"
    assert json.loads(result.json.read_text())["readings"] == 24
    import matplotlib.image

    assert matplotlib.image.imread(result.figure).shape[2] in (3, 4)
    with pytest.raises(InputError, match="already exists"):
        summarize_study(scored_study, tmp_path / "report.md")


def test_summary_refuses_changed_images(scored_study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(scored_study, copy)
    image = sorted((copy / p.IMAGES_DIR).glob("*.nrrd"))[2]
    volume = read_volume(image)
    write_volume(volume.with_voxels(volume.voxels + 1), image, overwrite=True)
    with pytest.raises(InputError, match=f"{image.name} changed"):
        summarize_study(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    shutil.rmtree(copy / p.KEY_DIR)
    with pytest.raises(InputError, match="key .* is missing"):
        summarize_study(copy, tmp_path / "out")


def test_paired_test_and_agreement_units():
    assert paired_test([3, 4, 5, 2, 3, 4], [2, 3, 4, 1, 2, 3])["p_value"] == pytest.approx(0.03125)
    opposite = paired_test([1, 2, 1, 2, 1, 2], [2, 3, 2, 3, 2, 3])
    assert opposite["rank_biserial"] == -1.0 and opposite["mean_difference"] == -1.0
    same = {"R1": {"u1": 1, "u2": 3, "u3": 5}, "R2": {"u1": 1, "u2": 3, "u3": 5}}
    assert agreement(same)["cohen_kappa"] == pytest.approx(1.0)
    off = {"R1": {"u1": 1, "u2": 3, "u3": 5, "u4": 2}, "R2": {"u1": 5, "u2": 3, "u3": 1, "u4": 4}}
    assert agreement(off)["cohen_kappa"] < 0 and agreement(off)["krippendorff_alpha"] < 0
    three = {**same, "R3": {"u1": 1, "u2": 3, "u3": 4}}
    result = agreement(three)
    assert result["cohen_kappa"] is None and 0.5 < result["krippendorff_alpha"] < 1.0


# -- command line --------------------------------------------------------------------------------


def test_cli_plan_status_summarize(cases, tmp_path, capsys):
    from LowDoseDenoiseLib.cli import main

    out = tmp_path / "study"
    assert main(["-q", "reader-study", "plan", *map(str, cases), "--methods", "original,gaussian",
                 "--out", str(out), "--readers", "1", "--seed", "2", "--window", "350,50"]) == 0
    protocol = json.loads((out / p.PROTOCOL_FILE).read_text())
    assert protocol["window"] == {"width": 350.0, "level": 50.0, "changeable": True} and protocol["seed"] == 2
    assert [c["key"] for c in protocol["criteria"]] == list(p.CRITERION_KEYS)
    session = ReadingSession(out, "R1")
    first = session.next_item()
    session.record(first.id, all_scores(3), all_scores(4), "B")
    assert main(["reader-study", "status", str(out)]) == 0
    assert "R1: 1/2 pairs scored" in capsys.readouterr().out
    assert main(["reader-study", "summarize", str(out), "--out", str(tmp_path / "report")]) == 0
    assert {f.name for f in (tmp_path / "report").iterdir()} == {"summary.md", "summary.json", "summary.png"}
    assert "Incomplete" in (tmp_path / "report" / "summary.md").read_text()
    assert main(["reader-study", "plan", str(cases[0]), "--methods", "original,wavelet", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "Unknown method 'wavelet'" in capsys.readouterr().err
