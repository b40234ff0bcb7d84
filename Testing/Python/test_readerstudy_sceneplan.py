"""Planning a reader study from volume nodes of a real MRML scene (slicer-core wheel), as the Slicer module does.

The same cases are planned once from files (the CLI's path) and once from scene nodes
loaded from those files: the two studies must be the same study, the nodes' names must
not reach the readers' files, and the nodes must be left as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume  # noqa: E402
from LowDoseDenoiseLib.readerstudy import protocol as p  # noqa: E402
from LowDoseDenoiseLib.readerstudy.plan import parse_readers, plan_study, sha256_file  # noqa: E402
from LowDoseDenoiseLib.readerstudy.sceneplan import plan_study_from_nodes  # noqa: E402
from LowDoseDenoiseLib.slicer.headless import ApplicationScene  # noqa: E402
from LowDoseDenoiseLib.slicer.scene import ijk_to_ras, volume_array  # noqa: E402
from LowDoseDenoiseLib.volume import Volume  # noqa: E402

METHODS = "original,gaussian,cad"
NODE_NAMES = ("Liver secretpatient one", "Liver secretpatient two")


def load_node(scene, path: Path, name: str):
    """A scalar volume node read from ``path`` by MRML's own storage node, as Slicer loads a file."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    node.SetAttribute("DICOM.PatientName", "SECRETPATIENT^ONE")
    return node


@pytest.fixture()
def scene_cases(tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for index in range(2):
        voxels = np.rint(rng.normal(40, 25, size=(3, 40, 48))).astype(np.int16)
        voxels[:, :3] = -1000
        volume = Volume(voxels=voxels, spacing=(0.75, 0.8, 2.5), origin=(-18.0, -16.0, 200.0 + 10 * index))
        files.append(write_volume(volume, tmp_path / f"secretpatient_{index}.nrrd"))
    app = ApplicationScene()
    nodes = [load_node(app.scene, path, name) for path, name in zip(files, NODE_NAMES)]
    yield app, files, nodes
    app.close()


def node_state(node) -> tuple:
    image = node.GetImageData()
    attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
    return (node.GetName(), node.GetMTime(), image.GetMTime(), volume_array(node).tobytes(),
            ijk_to_ras(node).tobytes(), attributes)


def readers_text(study: Path) -> str:
    """Everything a reader gets: the worklist, protocol, README and every image file's header."""
    parts = [(study / name).read_text(encoding="utf-8") for name in (p.WORKLIST_FILE, p.PROTOCOL_FILE, "README.txt")]
    for image in sorted((study / p.IMAGES_DIR).iterdir()):
        parts.append(image.name)
        parts.append(image.read_bytes().split(b"\n\n", 1)[0].decode("ascii"))
    return "\n".join(parts).lower()


def test_plan_from_nodes_equals_the_cli_plan_and_reveals_nothing(scene_cases, tmp_path):
    app, files, nodes = scene_cases
    before = [node_state(node) for node in nodes]
    node_count = app.scene.GetNumberOfNodes()
    from_files = plan_study(files, METHODS, tmp_path / "from_files", readers=2, seed=11)
    from_nodes = plan_study_from_nodes(nodes, METHODS, tmp_path / "from_nodes", readers=2, seed=11, scene=app.scene)
    assert (from_nodes.cases, from_nodes.items, from_nodes.images, from_nodes.methods, from_nodes.readers) == (
        from_files.cases, from_files.items, from_files.images, from_files.methods, from_files.readers)
    assert from_nodes.items == 2 * 2 and from_nodes.images == 2 * from_nodes.items

    a, b = from_files.folder, from_nodes.folder
    # same worklist and protocol byte for byte, same images: one planning path
    assert (b / p.WORKLIST_FILE).read_bytes() == (a / p.WORKLIST_FILE).read_bytes()
    assert (b / p.PROTOCOL_FILE).read_bytes() == (a / p.PROTOCOL_FILE).read_bytes()
    images_a, images_b = sorted((a / p.IMAGES_DIR).iterdir()), sorted((b / p.IMAGES_DIR).iterdir())
    assert [x.name for x in images_b] == [x.name for x in images_a]
    for x, y in zip(images_a, images_b):  # geometry through MRML's RAS matrix: equal to rounding
        va, vb = read_volume(x), read_volume(y)
        assert vb.voxels.dtype == va.voxels.dtype == np.int16 and np.array_equal(vb.voxels, va.voxels), x.name
        for attribute in ("spacing", "origin", "direction"):
            assert np.allclose(getattr(vb, attribute), getattr(va, attribute), atol=1e-9), (x.name, attribute)
    # the key apart, with the same structure; only the case sources differ (file path vs node)
    assert sorted(path.name for path in b.iterdir()) == sorted(path.name for path in a.iterdir())
    key_a = json.loads((a / p.KEY_DIR / p.KEY_FILE).read_text())
    key_b = json.loads((b / p.KEY_DIR / p.KEY_FILE).read_text())
    assert set(key_b) == set(key_a)
    for field in ("items", "methods", "worklist_sha256", "seed", "pairs"):
        assert key_b[field] == key_a[field], field
    without_hash = [{name: {k: v for k, v in entry.items() if k != "sha256"} for name, entry in key["images"].items()}
                    for key in (key_a, key_b)]
    assert without_hash[0] == without_hash[1]
    assert all(entry["sha256"] == sha256_file(b / name) for name, entry in key_b["images"].items())
    assert [case["source"] for case in key_b["cases"]] == [
        f"Slicer volume '{node.GetName()}' ({node.GetID()})" for node in nodes]
    for case_a, case_b in zip(key_a["cases"], key_b["cases"]):
        assert set(case_b) == set(case_a) and (case_b["case"], case_b["shape"]) == (case_a["case"], case_a["shape"])
        assert np.allclose(case_b["spacing"], case_a["spacing"], atol=1e-9)

    text = readers_text(b)
    forbidden = {"secretpatient", "liver", "vtkmrml", "slicer volume", "gaussian", "curvature", "original"}
    forbidden |= {name.lower() for name in key_b["methods"]} - {"cad"}
    assert not [word for word in forbidden if word in text]
    assert "cad" not in (b / p.WORKLIST_FILE).read_text().lower()

    # the input nodes and the scene are as they were
    assert [node_state(node) for node in nodes] == before
    assert app.scene.GetNumberOfNodes() == node_count


def test_bad_nodes_are_refused_and_leave_nothing(scene_cases, tmp_path):
    app, _, nodes = scene_cases
    out = tmp_path / "study"
    label = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    label.SetAndObserveImageData(nodes[0].GetImageData())
    empty = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    other = ApplicationScene()
    try:
        foreign = load_node(other.scene, Path(nodes[0].GetStorageNode().GetFileName()), "foreign")
        cases_and_errors = [
            ([], "at least one volume"),
            ([nodes[0], label], "label map"),
            ([nodes[0], empty], "holds no voxels"),
            ([nodes[0], nodes[0]], "listed twice"),
            ([nodes[0], foreign], "another scene"),
            ([app.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")], "not a CT volume"),
        ]
        for cases, message in cases_and_errors:
            with pytest.raises(InputError, match=message):
                plan_study_from_nodes(cases, METHODS, out, scene=app.scene)
        with pytest.raises(InputError, match="include 'original'"):
            plan_study_from_nodes(nodes, "model,cad", out, scene=app.scene)
    finally:
        other.close()
    assert not out.exists() and not list(tmp_path.glob("*study*"))


def test_plan_from_nodes_fails_cleanly_on_non_ct(scene_cases, tmp_path):
    app, _, nodes = scene_cases
    image = nodes[1].GetImageData()
    from vtk.util import numpy_support

    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    scalars[:] = 30000  # far outside CT values
    image.Modified()
    out = tmp_path / "study"
    before = sorted(tmp_path.iterdir())
    with pytest.raises(InputError, match=r"Slicer volume 'Liver secretpatient two'"):
        plan_study_from_nodes(nodes, METHODS, out, scene=app.scene)
    assert not out.exists() and sorted(tmp_path.iterdir()) == before  # the half-planned study is gone


def test_parse_readers_shared_by_cli_and_module():
    assert parse_readers("3") == 3
    assert parse_readers(" anna, ben ,") == ["anna", "ben"]
    for text in ("0", " ", ","):
        with pytest.raises(InputError, match="reader"):
            parse_readers(text)


def test_cancelled_plan_from_nodes_leaves_no_folder_and_the_nodes_as_they_were(scene_cases, tmp_path):
    """The module's Cancel: planning stops at the next step, writes nothing and touches no node."""
    from LowDoseDenoiseLib.errors import Cancelled

    app, _, nodes = scene_cases
    before = [node_state(node) for node in nodes]
    node_count = app.scene.GetNumberOfNodes()
    messages = []
    with pytest.raises(Cancelled, match="no study folder was written"):
        plan_study_from_nodes(nodes, METHODS, tmp_path / "study", readers=1, scene=app.scene,
                              progress=messages.append, cancel=lambda: len(messages) >= 3)
    assert len(messages) == 3 and messages[0].startswith("case 1/2: reading Slicer volume")
    # only the fixture's two case files: no study folder, no partial one
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secretpatient_0.nrrd", "secretpatient_1.nrrd"]
    assert [node_state(node) for node in nodes] == before
    assert app.scene.GetNumberOfNodes() == node_count
