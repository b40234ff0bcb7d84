"""DenoiseLogic on a real MRML scene from the slicer-core wheel (no Qt, no slicer.app).

The ``app_scene`` fixture builds what the Slicer application has: an application
logic, the slice orientation presets, a layout logic (which creates the slice nodes)
and one slice logic per slice node (which creates its composite node).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
pytest.importorskip("torch")

from vtk.util import numpy_support  # noqa: E402

from LowDoseDenoiseLib.errors import Cancelled, DeviceError, InputError, ModelError  # noqa: E402
from LowDoseDenoiseLib.slicer import scene as scene_module  # noqa: E402
from LowDoseDenoiseLib.slicer.headless import ApplicationScene  # noqa: E402
from LowDoseDenoiseLib.slicer.scene import DenoiseLogic, ijk_to_ras, volume_array  # noqa: E402

# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def app():
    with ApplicationScene() as scene:  # torn down in order: left to the GC, VTK may crash at exit
        yield scene


def make_model(path: Path, context: int = 1, trained: bool = True) -> Path:
    """A tiny generator whose last layer is randomised so that it changes images."""
    import torch

    from LowDoseDenoiseLib.modelfile import make_metadata, save_model
    from LowDoseDenoiseLib.network import Generator, GeneratorConfig

    config = GeneratorConfig(context=context, width=4, levels=1, res_blocks=1)
    torch.manual_seed(3)
    generator = Generator(config)
    with torch.no_grad():
        generator.tail.weight.normal_(0.0, 0.05)
    metadata = make_metadata(
        config,
        name="scene-test",
        version="0.0.2",
        description="tiny random generator for the scene tests",
        training={"trained": trained, "dose_fraction": [0.1, 0.5], "pixel_size_mm": [0.5, 1.5]},
    )
    return save_model(generator, metadata, path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from LowDoseDenoiseLib.modelfile import load_model

    return load_model(make_model(tmp_path_factory.mktemp("scene-model") / "tiny.pt"))


def oblique_matrix() -> np.ndarray:
    """IJK-to-RAS of an oblique, anisotropic volume: rotation × spacing, plus an origin."""
    a, b = np.deg2rad(20.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = (rx @ rz) @ np.diag([0.73, 0.81, 2.5])
    matrix[:3, 3] = (-120.5, 33.25, -410.0)
    return matrix


def add_volume(scene, voxels: np.ndarray, name: str = "CT", matrix=None, node_class="vtkMRMLScalarVolumeNode"):
    """Add a volume node holding ``voxels`` (z, y, x) with the given IJK-to-RAS matrix."""
    components = voxels.shape[3] if voxels.ndim == 4 else 1
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.AllocateScalars(numpy_support.get_vtk_array_type(voxels.dtype), components)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[...] = voxels.reshape(-1, components).squeeze()
    node = scene.AddNewNodeByClass(node_class, name)
    node.SetAndObserveImageData(image)
    if matrix is not None:
        vtk_matrix = vtk.vtkMatrix4x4()
        for r in range(4):
            for c in range(4):
                vtk_matrix.SetElement(r, c, float(matrix[r, c]))
        node.SetIJKToRASMatrix(vtk_matrix)
    node.CreateDefaultDisplayNodes()
    return node


def ct_voxels(shape=(5, 40, 48), seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    body = ((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.44)) ** 2 < 1
    voxels = np.where(body, 60.0, -1000.0) + rng.normal(0, 30, size=body.shape) + 3 * z
    return np.rint(voxels).astype(np.int16)


@pytest.fixture
def ct(app):
    node = add_volume(app.scene, ct_voxels(), "CT", oblique_matrix())
    display = node.GetDisplayNode()
    display.SetAutoWindowLevel(0)
    display.SetWindowLevel(350.0, 40.0)
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.4.1 1.2.3.4.2")
    return node


def voxel_hash(node) -> str:
    return hashlib.sha256(volume_array(node).tobytes()).hexdigest()


# -- process ------------------------------------------------------------------------------------


def test_output_geometry_type_and_voxels(app, ct, model):
    before_hash, before_matrix = voxel_hash(ct), ijk_to_ras(ct)
    image_mtime = ct.GetImageData().GetMTime()
    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu")

    assert out.GetName() == "CT denoised (scene-test 0.0.2, strength 1)"
    assert out.GetScene() is app.scene and out is not ct
    np.testing.assert_allclose(ijk_to_ras(out), oblique_matrix(), atol=1e-9)
    np.testing.assert_array_equal(ijk_to_ras(out), before_matrix)
    assert out.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    assert out.GetImageData().GetScalarType() == vtk.VTK_SHORT
    assert volume_array(out).dtype == np.int16
    # the input is untouched, the output differs from it but stays close
    assert voxel_hash(ct) == before_hash
    assert ct.GetImageData().GetMTime() == image_mtime
    difference = volume_array(out).astype(float) - volume_array(ct)
    assert np.abs(difference).max() > 0
    assert np.abs(difference).mean() < 200


def test_output_matches_engine(app, ct, model):
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.volume import cast_like

    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu", strength=0.6)
    expected = cast_like(denoise_volume(volume_array(ct), model=model, device="cpu", strength=0.6), np.int16)
    np.testing.assert_array_equal(volume_array(out), expected)


def test_provenance_no_dicom_uids_and_window_level(app, ct, model):
    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu", strength=0.5)
    names = set(out.GetAttributeNames())
    assert not any(name.startswith("DICOM") for name in names)
    assert out.GetAttribute("LowDoseDenoise.ModelName") == "scene-test"
    assert out.GetAttribute("LowDoseDenoise.ModelVersion") == "0.0.2"
    assert out.GetAttribute("LowDoseDenoise.ModelSHA256") == model.sha256
    assert out.GetAttribute("LowDoseDenoise.Strength") == "0.5"
    assert out.GetAttribute("LowDoseDenoise.Device") == "cpu"
    assert out.GetAttribute("LowDoseDenoise.Date")[:2] == "20"
    assert out.GetAttribute("LowDoseDenoise.SourceVolume") == "CT"
    display = out.GetDisplayNode()
    assert display is not None and not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == (350.0, 40.0)
    assert display.GetColorNodeID() == ct.GetDisplayNode().GetColorNodeID()
    # the input keeps its own attributes and display
    assert ct.GetAttribute("DICOM.instanceUIDs") == "1.2.3.4.1 1.2.3.4.2"
    assert (ct.GetDisplayNode().GetWindow(), ct.GetDisplayNode().GetLevel()) == (350.0, 40.0)


def test_output_placed_in_input_study(app, ct, model):
    sh = app.sh
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient")
    study = sh.CreateStudyItem(patient, "Abdomen CT")
    ct_item = sh.CreateItem(study, ct)
    sh.SetItemUID(ct_item, "DICOM", "1.2.3.4")
    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu")
    out_item = sh.GetItemByDataNode(out)
    assert out_item and sh.GetItemParent(out_item) == study
    assert sh.GetItemUID(out_item, "DICOM") == ""


def test_reused_output_node_is_overwritten(app, ct, model):
    logic = DenoiseLogic(app.scene)
    target = add_volume(app.scene, np.zeros((2, 8, 8), np.float32), "old result")
    target.SetAttribute("DICOM.instanceUIDs", "9.9.9")
    count = app.scene.GetNumberOfNodes()
    out = logic.process(ct, output_node=target, model=model, device="cpu")
    assert out is target and app.scene.GetNumberOfNodes() == count
    assert out.GetName() == "old result"  # a chosen output is never renamed
    assert volume_array(out).shape == volume_array(ct).shape and volume_array(out).dtype == np.int16
    assert out.GetAttribute("DICOM.instanceUIDs") is None
    np.testing.assert_allclose(ijk_to_ras(out), oblique_matrix(), atol=1e-9)


def test_strength_zero_gives_the_input(app, ct, model):
    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu", strength=0.0)
    np.testing.assert_array_equal(volume_array(out), volume_array(ct))


def test_progress_reports_every_slice(app, ct, model):
    calls = []
    DenoiseLogic(app.scene).process(ct, model=model, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (5, 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_model_file_path_is_accepted(app, ct, tmp_path):
    out = DenoiseLogic(app.scene).process(ct, model=make_model(tmp_path / "m.pt"), device="cpu")
    assert out.GetAttribute("LowDoseDenoise.ModelName") == "scene-test"


# -- cancel and errors leave the scene unchanged --------------------------------------------


def test_cancel_leaves_scene_unchanged(app, ct, model):
    logic = DenoiseLogic(app.scene)
    ids, before = app.node_ids(), voxel_hash(ct)
    with pytest.raises(Cancelled):
        logic.process(ct, model=model, device="cpu", cancel=lambda: True)
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        logic.process(ct, model=model, device="cpu", cancel=event)
    assert app.node_ids() == ids and voxel_hash(ct) == before


def test_cancel_keeps_reused_output_as_it_was(app, ct, model):
    target = add_volume(app.scene, np.full((2, 8, 8), 7, np.int16), "previous")
    target.SetAttribute("keep", "me")
    matrix, ids = ijk_to_ras(target), app.node_ids()
    calls = []

    def cancel_after_first_batch():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        DenoiseLogic(app.scene).process(
            ct, output_node=target, model=model, device="cpu", cancel=cancel_after_first_batch
        )
    assert app.node_ids() == ids
    assert target.GetName() == "previous" and target.GetAttribute("keep") == "me"
    np.testing.assert_array_equal(volume_array(target), np.full((2, 8, 8), 7, np.int16))
    np.testing.assert_array_equal(ijk_to_ras(target), matrix)


def test_background_job_with_cancel_and_finish(app, ct, model):
    logic = DenoiseLogic(app.scene)
    ids = app.node_ids()
    job = logic.prepare(ct, model=model, device="cpu")
    assert job.state == "ready" and app.node_ids() == ids
    job.request_cancel()
    job.start()
    assert job.wait(30) and job.state == "cancelled"
    with pytest.raises(Cancelled):
        logic.finish(job)
    assert app.node_ids() == ids

    job = logic.prepare(ct, model=model, device="cpu")
    job.start()
    assert job.wait(60) and job.state == "done" and job.fraction == 1.0
    out = logic.finish(job)
    assert out.GetName().startswith("CT denoised") and app.node_ids() == ids | {out.GetID(), out.GetDisplayNodeID()}


def test_input_removed_while_running(app, ct, model):
    logic = DenoiseLogic(app.scene)
    job = logic.prepare(ct, model=model, device="cpu")
    job.run()
    app.scene.RemoveNode(ct)
    ids = app.node_ids()
    with pytest.raises(InputError, match="removed"):
        logic.finish(job)
    assert app.node_ids() == ids


def _bad_inputs(app, tmp_path):
    scene = app.scene
    rgb = add_volume(scene, np.zeros((4, 20, 20, 3), np.uint8), "photo", node_class="vtkMRMLVectorVolumeNode")
    flat = add_volume(scene, ct_voxels((1, 40, 48)), "one slice")
    label = add_volume(scene, np.zeros((4, 20, 20), np.int16), "liver mask", node_class="vtkMRMLLabelMapVolumeNode")
    small = add_volume(scene, ct_voxels((4, 3, 40)), "tiny")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not loaded")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a TorchScript file")
    model_node = scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    return [
        ("no input", dict(input_node=None), InputError, "No input"),
        ("vector", dict(input_node=rgb), InputError, "components"),
        ("2D", dict(input_node=flat), InputError, "2D"),
        ("label map", dict(input_node=label), InputError, "label map"),
        ("too small", dict(input_node=small), InputError, "minimum"),
        ("no voxels", dict(input_node=empty), InputError, "no voxels"),
        ("not a volume", dict(input_node=model_node), InputError, "not a CT volume"),
        ("bad model file", dict(model=broken), ModelError, "not a TorchScript"),
        ("missing model file", dict(model=tmp_path / "absent.pt"), ModelError, "not found"),
        ("device", dict(device="cuda:7"), DeviceError, "CUDA"),
        ("unknown device", dict(device="tpu"), DeviceError, "Unknown device"),
        ("strength", dict(strength=1.5), InputError, "between 0"),
        ("output is input", dict(output_node="input"), InputError, "input volume itself"),
        ("output label map", dict(output_node=label), InputError, "not a scalar volume"),
    ]


def test_each_bad_input_gives_a_clear_error_and_no_change(app, ct, model, tmp_path):
    logic = DenoiseLogic(app.scene)
    cases = _bad_inputs(app, tmp_path)
    ids = app.node_ids()
    mtimes = {node_id: app.scene.GetNodeByID(node_id).GetMTime() for node_id in ids}
    for label, kwargs, error, text in cases:
        arguments = dict(input_node=ct, model=model, device="cpu")
        arguments.update(kwargs)
        if arguments.get("output_node") == "input":
            arguments["output_node"] = ct
        with pytest.raises(error, match=text):
            logic.process(**arguments)
        assert app.node_ids() == ids, label
    changed = [i for i in ids if app.scene.GetNodeByID(i).GetMTime() != mtimes[i]]
    assert changed == []


def test_process_loop_leaks_no_nodes(app, model):
    small = add_volume(app.scene, ct_voxels((2, 8, 8)), "small", oblique_matrix())
    logic = DenoiseLogic(app.scene)
    first = logic.process(small, model=model, device="cpu")
    logic.show_comparison(small, first, "with-difference")
    logic.end_comparison()
    app.scene.RemoveNode(first.GetDisplayNode())
    app.scene.RemoveNode(first)
    count = app.scene.GetNumberOfNodes()
    items = app.sh.GetNumberOfItems()
    reused = None
    for i in range(100):
        out = logic.process(small, output_node=reused, model=model, device="cpu", strength=0.5 + (i % 2) / 4)
        logic.show_comparison(small, out, "with-difference" if i % 2 else "side-by-side")
        logic.end_comparison()
        if i % 2:
            reused = out
        else:
            logic._remove_node(out)
            reused = None
        if i % 10 == 0:
            with pytest.raises(Cancelled):
                logic.process(small, model=model, device="cpu", cancel=lambda: True)
    if reused is not None:
        logic._remove_node(reused)
    assert app.scene.GetNumberOfNodes() == count
    assert app.sh.GetNumberOfItems() == items


# -- comparison ---------------------------------------------------------------------------------


def test_side_by_side_views_linked_and_restored(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    out = logic.process(ct, model=model, device="cpu")
    other = add_volume(app.scene, ct_voxels(seed=5), "prior study")
    red, yellow, green = (app.composite(n) for n in ("Red", "Yellow", "Green"))
    red.SetBackgroundVolumeID(other.GetID())
    red.SetForegroundVolumeID(ct.GetID())
    red.SetForegroundOpacity(0.3)
    app.slice_node("Yellow").SetOrientation("Sagittal")
    layout_node = app.layout_node()
    layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    yellow_matrix = vtk.vtkMatrix4x4()
    yellow_matrix.DeepCopy(app.slice_node("Yellow").GetSliceToRAS())
    ids = app.node_ids()

    views = logic.show_comparison(ct, out)
    assert views == ["Red", "Yellow"] and logic.comparing
    assert layout_node.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert red.GetBackgroundVolumeID() == ct.GetID() and yellow.GetBackgroundVolumeID() == out.GetID()
    assert red.GetForegroundVolumeID() is None and yellow.GetForegroundVolumeID() is None
    for composite in (red, yellow):
        assert composite.GetLinkedControl() == 1 and composite.GetHotLinkedControl() == 1
    assert app.slice_node("Red").GetOrientation() == app.slice_node("Yellow").GetOrientation() == "Axial"
    assert app.node_ids() == ids  # side by side adds no node
    original_display, denoised_display = ct.GetDisplayNode(), out.GetDisplayNode()
    assert (denoised_display.GetWindow(), denoised_display.GetLevel()) == (
        original_display.GetWindow(),
        original_display.GetLevel(),
    )

    # linked: scrolling, zooming and panning the red view moves the yellow one
    red_logic = app.slice_logics["Red"]
    red_logic.StartSliceOffsetInteraction()
    red_logic.SetSliceOffset(red_logic.GetSliceOffset() + 5.0)
    red_logic.EndSliceOffsetInteraction()
    assert app.slice_logics["Yellow"].GetSliceOffset() == pytest.approx(red_logic.GetSliceOffset())
    red_node = app.slice_node("Red")
    red_node.SetInteractionFlags(red_node.FieldOfViewFlag | red_node.XYZOriginFlag)
    red_node.SetInteracting(1)
    red_node.SetFieldOfView(123.0, 92.25, red_node.GetFieldOfView()[2])
    red_node.SetXYZOrigin(7.0, -3.0, 0.0)
    red_node.UpdateMatrices()
    red_node.SetInteracting(0)
    assert app.slice_node("Yellow").GetFieldOfView()[0] == pytest.approx(123.0)
    assert app.slice_node("Yellow").GetXYZOrigin()[:2] == pytest.approx((7.0, -3.0))

    # unlinked: the yellow view stays where it is
    logic.set_linked(False)
    assert red.GetLinkedControl() == 0 and yellow.GetHotLinkedControl() == 0
    before = app.slice_logics["Yellow"].GetSliceOffset()
    red_logic.StartSliceOffsetInteraction()
    red_logic.SetSliceOffset(red_logic.GetSliceOffset() + 5.0)
    red_logic.EndSliceOffsetInteraction()
    assert app.slice_logics["Yellow"].GetSliceOffset() == pytest.approx(before)

    assert logic.end_comparison() and not logic.comparing
    assert layout_node.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    assert red.GetBackgroundVolumeID() == other.GetID() and red.GetForegroundVolumeID() == ct.GetID()
    assert red.GetForegroundOpacity() == pytest.approx(0.3)
    assert yellow.GetBackgroundVolumeID() is None
    assert red.GetLinkedControl() == 0 and yellow.GetLinkedControl() == 0
    assert app.slice_node("Yellow").GetOrientation() == "Sagittal"
    restored = app.slice_node("Yellow").GetSliceToRAS()
    assert all(
        restored.GetElement(r, c) == pytest.approx(yellow_matrix.GetElement(r, c)) for r in range(4) for c in range(4)
    )
    assert app.node_ids() == ids
    assert not logic.end_comparison()


def test_with_difference_view_is_temporary(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    out = logic.process(ct, model=model, device="cpu")
    ids = app.node_ids()
    views = logic.show_comparison(ct, out, layout="with-difference")
    assert views == ["Red", "Yellow", "Green"]
    difference = logic.difference_node
    assert difference is not None and difference.GetAttribute("LowDoseDenoise.Temporary") == "1"
    assert app.composite("Green").GetBackgroundVolumeID() == difference.GetID()
    assert app.layout_node().GetViewArrangement() == scene_module.WITH_DIFFERENCE_LAYOUT_ID
    expected = volume_array(out).astype(np.float32) - volume_array(ct)
    np.testing.assert_allclose(volume_array(difference), expected)
    np.testing.assert_allclose(ijk_to_ras(difference), ijk_to_ras(ct), atol=1e-9)
    display = difference.GetDisplayNode()
    assert display.GetLevel() == 0.0 and display.GetWindow() >= 2.0
    assert display.GetWindow() / 2 <= np.abs(expected).max() + 1
    assert all(app.composite(n).GetLinkedControl() == 1 for n in views)
    assert all(app.slice_node(n).GetOrientation() == "Axial" for n in views)

    # switching to side by side drops the difference; ending removes everything added
    logic.show_comparison(ct, out, layout="side-by-side")
    assert logic.difference_node is None and app.node_ids() == ids
    logic.show_comparison(ct, out, layout="with-difference")
    assert logic.end_comparison()
    assert app.node_ids() == ids
    assert app.composite("Green").GetBackgroundVolumeID() is None
    assert app.slice_node("Green").GetOrientation() == "Coronal"


def test_comparison_bad_input(app, ct, model):
    logic = DenoiseLogic(app.scene)
    other = add_volume(app.scene, ct_voxels((3, 40, 48)), "other")
    ids = app.node_ids()
    with pytest.raises(InputError, match="different sizes"):
        logic.show_comparison(ct, other)
    with pytest.raises(InputError, match="Unknown comparison layout"):
        logic.show_comparison(ct, ct, layout="checkerboard")
    with pytest.raises(InputError, match="No denoised"):
        logic.show_comparison(ct, None)
    assert app.node_ids() == ids and not logic.comparing


def test_comparison_needs_a_layout():
    scene = slicer.vtkMRMLScene()
    node = add_volume(scene, ct_voxels((2, 8, 8)), "CT")
    with pytest.raises(Exception, match="no view layout"):
        DenoiseLogic(scene).show_comparison(node, node)


def test_comparison_views_render_each_volume(app, ct, model):
    """The slice logics (Slicer's own 2D pipeline) render different images in the two views."""
    logic = DenoiseLogic(app.scene, app.app_logic)
    out = logic.process(ct, model=model, device="cpu")
    logic.show_comparison(ct, out)
    images = []
    for name in ("Red", "Yellow"):
        connection = app.slice_logics[name].GetBackgroundLayer().GetImageDataConnection()
        connection.GetProducer().Update()
        image = connection.GetProducer().GetOutputDataObject(connection.GetIndex())
        images.append(numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).copy())
    assert images[0].shape == images[1].shape and images[0][:, 0].max() > 0
    assert not np.array_equal(images[0], images[1])


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_export_round_trip(app, ct, model, tmp_path, suffix):
    import SimpleITK as sitk

    logic = DenoiseLogic(app.scene)
    out = logic.process(ct, model=model, device="cpu")
    ids = app.node_ids()
    path = logic.export(out, tmp_path / f"denoised{suffix}")
    assert path.is_file() and app.node_ids() == ids
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume_array(out))
    assert image.GetPixelID() == sitk.sitkInt16
    # ITK geometry is LPS: flip the first two rows of the RAS matrix
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras(out)
    np.testing.assert_allclose(direction * np.array(image.GetSpacing()), lps[:3, :3], atol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=1e-4)
    with pytest.raises(InputError, match="already exists"):
        logic.export(out, path)
    assert logic.export(out, path, overwrite=True) == path


def test_volume_from_node_matches_itk_geometry(app, ct, tmp_path):
    import SimpleITK as sitk

    from LowDoseDenoiseLib.slicer.scene import volume_from_node

    volume = volume_from_node(ct)
    image = sitk.ReadImage(str(DenoiseLogic(app.scene).export(ct, tmp_path / "ct.nrrd")))
    np.testing.assert_array_equal(volume.voxels, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(volume.spacing, image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.direction, image.GetDirection(), atol=1e-6)


def test_export_bad_paths(app, ct, tmp_path):
    logic = DenoiseLogic(app.scene)
    with pytest.raises(InputError, match="unknown file type"):
        logic.export(ct, tmp_path / "out.png")
    with pytest.raises(InputError, match="does not exist"):
        logic.export(ct, tmp_path / "missing" / "out.nrrd")
    with pytest.raises(InputError, match="No volume to export"):
        logic.export(None, tmp_path / "out.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_scene_module_is_qt_free_and_imports_torch_lazily():
    import ast

    tree = ast.parse(Path(scene_module.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
            assert node.attr not in ("app", "util", "modules"), f"slicer.{node.attr} needs the application"
    assert not imported & {"qt", "ctk", "PythonQt", "torch"}
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    assert "torch" not in top_level
