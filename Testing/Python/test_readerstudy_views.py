"""Reading views on a real MRML scene (slicer-core wheel): neutral nodes, linked side-by-side views, fixed window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from LowDoseDenoiseLib.errors import InputError  # noqa: E402
from LowDoseDenoiseLib.io.imagefiles import read_volume, write_volume  # noqa: E402
from LowDoseDenoiseLib.readerstudy import protocol as p  # noqa: E402
from LowDoseDenoiseLib.readerstudy.plan import plan_study  # noqa: E402
from LowDoseDenoiseLib.readerstudy.scores import ReadingSession  # noqa: E402
from LowDoseDenoiseLib.readerstudy.views import ROLE_ATTRIBUTE, ReadingViews, item_summary  # noqa: E402
from LowDoseDenoiseLib.slicer.headless import ApplicationScene  # noqa: E402
from LowDoseDenoiseLib.slicer.scene import ijk_to_ras, volume_array  # noqa: E402
from LowDoseDenoiseLib.volume import Volume  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from conftest import oblique_direction

    folder = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(4)
    cases = []
    for index in range(2):
        voxels = np.rint(rng.normal(40, 30, size=(3, 40, 48))).astype(np.int16)
        voxels[:, :4] = -1000
        volume = Volume(voxels=voxels, spacing=(0.7, 0.8, 2.5), origin=(-20.0, 10.0, 300.0 + index),
                        direction=oblique_direction())
        cases.append(write_volume(volume, folder / f"secret_case_{index}.nrrd"))
    return plan_study(cases, "original,gaussian,cad", folder / "study", readers=1, seed=1).folder


def scene_names(scene) -> list:
    return [scene.GetNthNode(i).GetName() or "" for i in range(scene.GetNumberOfNodes())]


def test_item_shown_in_linked_views_with_neutral_nodes(study):
    app = ApplicationScene()
    before = app.node_ids()
    session = ReadingSession(study, "R1")
    views = ReadingViews(app.scene, app.app_logic)
    item = session.next_item()
    node_a, node_b = views.show(item, window=(400, 40))
    key = json.loads((study / p.KEY_DIR / p.KEY_FILE).read_text())
    forbidden = set(key["methods"]) | {"secret", "img_", ".nrrd", "item_"}
    new = [app.scene.GetNodeByID(i) for i in app.node_ids() - before]
    for node in new:  # volumes, their display nodes, subject hierarchy items: nothing names the method or file
        name = (node.GetName() or "").lower()
        assert not any(word in name for word in forbidden), name
        for attribute in node.GetAttributeNames() or ():
            value = (node.GetAttribute(attribute) or "").lower()
            assert not any(word in value for word in forbidden), (attribute, value)
    assert (node_a.GetName(), node_b.GetName()) == ("Image A", "Image B")
    assert node_a.GetStorageNode() is None and node_b.GetStorageNode() is None  # no file name travels along
    assert node_a.GetHideFromEditors() and not node_a.GetSaveWithScene()
    # the voxels and geometry are the files'
    for node, path in ((node_a, item.image_a), (node_b, item.image_b)):
        volume = read_volume(path)
        assert np.array_equal(volume_array(node), volume.voxels)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras(node)
        assert np.allclose(lps[:3, 3], volume.origin)
        assert np.allclose(lps[:3, :3], np.asarray(volume.direction).reshape(3, 3) @ np.diag(volume.spacing))
    # side by side, one image per view, linked, same fixed window
    assert app.layout_node().GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert app.composite("Red").GetBackgroundVolumeID() == node_a.GetID()
    assert app.composite("Yellow").GetBackgroundVolumeID() == node_b.GetID()
    for view in ("Red", "Yellow"):
        assert app.composite(view).GetLinkedControl() and app.composite(view).GetHotLinkedControl()
        assert app.composite(view).GetForegroundVolumeID() is None
    for node in (node_a, node_b):
        display = node.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400, 40, 0)
    views.set_window(350, 60)
    assert node_b.GetDisplayNode().GetWindow() == 350 and node_a.GetDisplayNode().GetLevel() == 60
    assert item_summary(item) == f"Pair 1 of {session.total}"


def test_next_item_replaces_the_nodes_and_clear_leaves_nothing(study):
    app = ApplicationScene()
    before = app.node_ids()
    session = ReadingSession(study, "R1")
    views = ReadingViews(app.scene, app.app_logic)
    views.show(session.item(0))
    first = {n.GetID() for n in views.nodes}
    views.show(session.item(1))
    assert not first & {n.GetID() for n in views.nodes} and len(views.nodes) == 2
    marked = [app.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
              for i in range(app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    assert sorted(n.GetAttribute(ROLE_ATTRIBUTE) for n in marked) == ["A", "B"]
    views.clear()
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeDisplayNode") == 0
    leftover = app.node_ids() - before
    assert all(app.scene.GetNodeByID(i).IsA("vtkMRMLSubjectHierarchyNode") for i in leftover), leftover


def test_a_damaged_item_leaves_the_scene_as_it_was(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    app = ApplicationScene()
    session = ReadingSession(copy, "R1")
    views = ReadingViews(app.scene, app.app_logic)
    views.show(session.item(0))
    shown = {n.GetID() for n in views.nodes}
    item = session.item(1)
    Path(item.image_b).write_bytes(b"NRRD0004\nbroken")
    with pytest.raises(InputError):
        views.show(item)
    assert {n.GetID() for n in views.nodes} == shown  # the previous pair stays on screen
    with pytest.raises(InputError, match="width"):
        views.set_window(0, 40)
    assert "Image A" in scene_names(app.scene)
