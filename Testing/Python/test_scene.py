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

from LowDoseDenoiseLib.errors import Cancelled, DeviceError, InputError, LowDoseDenoiseError, ModelError  # noqa: E402
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


# -- issue 13: source reference, transform, naming, CT check, worker warnings -------------------


def test_output_references_its_source_and_copies_the_parent_transform(app, ct, model):
    from LowDoseDenoiseLib.slicer.scene import SOURCE_REFERENCE_ROLE, source_volume

    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "patient to table")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.5)
    matrix.SetElement(2, 3, -7.0)
    transform.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    logic = DenoiseLogic(app.scene, app.app_logic)
    out = logic.process(ct, model=model, device="cpu")
    assert source_volume(out) is ct
    assert out.GetNodeReferenceID(SOURCE_REFERENCE_ROLE) == ct.GetID()
    assert out.GetTransformNodeID() == transform.GetID()
    logic.show_comparison(ct, out, layout="with-difference")
    assert logic.difference_node.GetTransformNodeID() == transform.GetID()
    logic.end_comparison()
    # the reference survives a reused output: it now points at the new source
    other = add_volume(app.scene, ct_voxels(seed=9), "CT other", oblique_matrix())
    again = logic.process(other, output_node=out, model=model, device="cpu")
    assert again is out and source_volume(out) is other and out.GetTransformNodeID() is None


def test_new_outputs_are_named_after_model_and_strength(app, ct, model):
    logic = DenoiseLogic(app.scene)
    half = logic.process(ct, model=model, device="cpu", strength=0.5)
    full = logic.process(ct, model=model, device="cpu", strength=1.0)
    full_again = logic.process(ct, model=model, device="cpu", strength=1.0)
    assert half.GetName() == "CT denoised (scene-test 0.0.2, strength 0.5)"
    assert full.GetName() == "CT denoised (scene-test 0.0.2, strength 1)"
    assert full_again.GetName() != full.GetName() and full_again.GetName().startswith(full.GetName())
    chosen = add_volume(app.scene, np.zeros((2, 8, 8), np.int16), "my result")
    logic.process(ct, output_node=chosen, model=model, device="cpu", strength=0.25)
    assert chosen.GetName() == "my result"


@pytest.mark.parametrize(
    "voxels, reason",
    [
        (np.random.default_rng(0).integers(0, 255, (4, 24, 24)).astype(np.uint8), "8-bit"),
        (np.full((4, 24, 24), -3, np.int16) + np.eye(24, dtype=np.int16)[None], "mask or map"),
    ],
)
def test_non_ct_values_are_refused_or_warned_when_allowed(app, model, voxels, reason):
    from LowDoseDenoiseLib.slicer.scene import NotCTError

    node = add_volume(app.scene, voxels, "MR T1")
    logic = DenoiseLogic(app.scene)
    ids = app.node_ids()
    with pytest.raises(NotCTError, match=reason) as caught:
        logic.process(node, model=model, device="cpu")
    assert "MR T1" in str(caught.value) and isinstance(caught.value, InputError)
    assert app.node_ids() == ids
    job = logic.prepare(node, model=model, device="cpu", allow_non_ct=True)
    assert any(reason in text for text in job.messages.warnings)
    job.run()
    assert logic.finish(job).GetScene() is app.scene


def test_warning_raised_in_the_worker_thread_reaches_the_main_thread(app, model):
    wide_pixels = np.diag([3.0, 3.0, 2.5, 1.0])  # outside the model's 0.5-1.5 mm training range
    node = add_volume(app.scene, ct_voxels(), "coarse CT", wide_pixels)
    logic = DenoiseLogic(app.scene)
    job = logic.prepare(node, model=model, device="cpu")
    assert job.messages.warnings == []  # nothing warned before the engine runs
    job.start()
    assert job._thread.ident != threading.get_ident()  # the engine runs in a worker thread
    assert job.wait(60) and job.state == "done"
    drained = job.messages.drain()
    warnings_ = [m.text for m in drained if m.level == "warning"]
    assert any("pixel size" in text and "3.00" in text for text in warnings_), drained
    assert any("sha256" in m.text for m in drained if m.level == "info")  # the run summary
    assert job.messages.drain() == []  # drained once
    logic.finish(job)


def test_slices_farther_apart_than_in_training_are_denoised_one_by_one(app):
    """The bundled model saw neighbours 2–5 mm apart: an 8 mm node is denoised slice by slice, as the
    engine does with neighbours=False, and the Log says so."""
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.volume import cast_like

    bundled = load_model(None)
    voxels = ct_voxels((4, 48, 56))
    node = add_volume(app.scene, voxels, "thick CT", np.diag([0.8, 0.8, 8.0, 1.0]))
    logic = DenoiseLogic(app.scene)
    job = logic.prepare(node, model=bundled, device="cpu")
    job.start()
    assert job.wait(60) and job.state == "done"
    warnings_ = [m.text for m in job.messages.drain() if m.level == "warning"]
    assert any("8.00 mm apart" in text for text in warnings_), warnings_
    out = volume_array(logic.finish(job))
    alone = denoise_volume(voxels.astype(np.float32), bundled, device="cpu", neighbours=False)
    assert np.array_equal(out, cast_like(alone, out.dtype))


@pytest.fixture(scope="module")
def bundled():
    from LowDoseDenoiseLib.modelfile import load_model

    return load_model(None)


def thick_ct(app, name="thick CT"):
    """A small CT node with 8 mm slices: farther apart than the bundled model's 2–5 mm in training."""
    return add_volume(app.scene, ct_voxels((5, 64, 64)), name, np.diag([0.8, 0.8, 8.0, 1.0]))


def spacing_warnings(job) -> list:
    return [text for text in job.messages.warnings if "mm apart" in text]


def test_the_neighbours_switch_decides_the_thick_slice_rule(app, bundled):
    """neighbours=None (the GUI's Automatic) on 8 mm slices denoises each slice alone, as False does, and
    says so in the job's messages; True gives the network the neighbours anyway, without the warning."""
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.volume import cast_like

    node = thick_ct(app)
    logic = DenoiseLogic(app.scene)
    outputs, jobs = {}, {}
    for setting in (None, False, True):
        job = logic.prepare(node, model=bundled, device="cpu", neighbours=setting)
        assert job.neighbours is setting
        job.run()
        jobs[setting] = job
        outputs[setting] = logic.finish(job)
    auto, alone, together = (volume_array(outputs[s]) for s in (None, False, True))
    np.testing.assert_array_equal(auto, alone)
    assert np.abs(together.astype(float) - alone).max() > 0
    expected = denoise_volume(volume_array(node).astype(np.float32), bundled, device="cpu", neighbours=True)
    np.testing.assert_array_equal(together, cast_like(expected, together.dtype))
    assert any("8.00 mm apart" in text for text in spacing_warnings(jobs[None])), jobs[None].messages.warnings
    assert spacing_warnings(jobs[True]) == [] and spacing_warnings(jobs[False]) == []
    # the output says which rule made it, in the CLI's words
    assert [outputs[s].GetAttribute("LowDoseDenoise.Neighbours") for s in (None, False, True)] == ["auto", "off", "on"]
    # process() and a background job pass it on too
    assert np.array_equal(volume_array(logic.process(node, model=bundled, device="cpu", neighbours=True)), together)
    job = logic.prepare(node, model=bundled, device="cpu", neighbours=True)
    job.start()
    assert job.wait(60) and job.state == "done" and spacing_warnings(job) == []
    np.testing.assert_array_equal(volume_array(logic.finish(job)), together)


@pytest.mark.parametrize("setting", [None, False, True])
def test_a_preview_equals_a_full_run_with_the_same_neighbours_setting(app, bundled, setting):
    """The preview reads the model's context slices; with each slice alone they are unused, and the
    preview is still the full run's voxels (the slice preview and an ROI preview, an inner and an end slice)."""
    node = thick_ct(app)
    logic = DenoiseLogic(app.scene, app.app_logic)
    whole = volume_array(logic.process(node, model=bundled, device="cpu", neighbours=setting))
    for k in (2, 0):
        centre_red_view_on_slice(app, node, k)
        job = logic.prepare_preview(node, model=bundled, device="cpu", neighbours=setting)
        assert job.neighbours is setting and job.region.read == (max(k - 1, 0), min(k + 2, 5))
        job.run()
        assert (spacing_warnings(job) != []) == (setting is None)
        preview = logic.finish_preview(job)
        np.testing.assert_array_equal(volume_array(preview)[0], whole[k])
    roi = add_roi(app.scene, (ijk_to_ras(node) @ np.array([30, 28, 2, 1.0]))[:3], (12.0, 10.0, 20.0))
    preview = logic.preview(node, roi, model=bundled, device="cpu", neighbours=setting)
    (i0, i1, j0, j1, k0, k1) = (int(v) for v in preview.GetAttribute("LowDoseDenoise.PreviewRegion").split())
    assert (k0, k1) == (1, 4)  # three slices, read with slices 0 and 4 as context
    np.testing.assert_array_equal(volume_array(preview), whole[k0:k1, j0:j1, i0:i1])


def every_entry(logic, node, model, **setting):
    """The four ways a denoising run or preview starts (prepare, process, prepare_preview, preview), each
    with ``setting``, as calls to check for a refusal."""
    return (
        lambda: logic.prepare(node, model=model, device="cpu", **setting),
        lambda: logic.process(node, model=model, device="cpu", **setting),
        lambda: logic.prepare_preview(node, model=model, device="cpu", **setting),
        lambda: logic.preview(node, model=model, device="cpu", **setting),
    )


@pytest.mark.parametrize("value", ["yes", 2, 1, "on", "auto"])
def test_a_neighbours_value_other_than_none_true_false_is_refused_before_anything_changes(app, bundled, value):
    node = thick_ct(app)
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre_red_view_on_slice(app, node, 2)
    ids, before = app.node_ids(), voxel_hash(node)
    for call in every_entry(logic, node, bundled, neighbours=value):
        with pytest.raises(InputError, match=r"Neighbouring slices must be None .*True .*False .*got") as caught:
            call()
        assert repr(value) in str(caught.value)
    assert app.node_ids() == ids and voxel_hash(node) == before and logic.previews_of(node) == []


# -- the self-ensemble (the module's Passes choice) ----------------------------------------------------


def ensemble_ct(app, name="CT"):
    """A small CT node with 3 mm slices (within the bundled model's training: its neighbours are used)."""
    return add_volume(app.scene, ct_voxels((3, 64, 64), seed=5), name, np.diag([0.8, 0.8, 3.0, 1.0]))


def engine_run(node, bundled, ensemble: int) -> np.ndarray:
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.volume import cast_like

    voxels = volume_array(node)
    out = denoise_volume(voxels.astype(np.float32), bundled, device="cpu", spacing=(0.8, 0.8, 3.0),
                         ensemble=ensemble)
    return cast_like(out, voxels.dtype)


def test_the_ensemble_reaches_the_engine_and_is_recorded(app, bundled):
    """ensemble=1 is the engine's single pass and differs from the default ×2; ×8 is the engine's ×8; the
    result records the size (as --ensemble says it) and the run summary names it."""
    from LowDoseDenoiseLib.engine import DEFAULT_ENSEMBLE

    node = ensemble_ct(app)
    logic = DenoiseLogic(app.scene)
    outputs = {}
    for ensemble in (1, 8):
        job = logic.prepare(node, model=bundled, device="cpu", ensemble=ensemble)
        assert job.ensemble == ensemble
        job.run()
        assert job.summary.ensemble == ensemble and f"self-ensemble ×{ensemble}" in job.summary.line()
        outputs[ensemble] = logic.finish(job)
        np.testing.assert_array_equal(volume_array(outputs[ensemble]), engine_run(node, bundled, ensemble))
    default_job = logic.prepare(node, model=bundled, device="cpu")
    assert default_job.ensemble == DEFAULT_ENSEMBLE == 2
    default_job.run()
    outputs[DEFAULT_ENSEMBLE] = logic.finish(default_job)
    default = volume_array(outputs[DEFAULT_ENSEMBLE])
    np.testing.assert_array_equal(default, engine_run(node, bundled, DEFAULT_ENSEMBLE))
    assert np.abs(volume_array(outputs[1]).astype(float) - default).max() > 0
    assert {e: outputs[e].GetAttribute("LowDoseDenoise.Ensemble") for e in outputs} == {1: "1", 8: "8", 2: "2"}
    assert outputs[8].GetAttribute("LowDoseDenoise.Neighbours") == "auto"  # next to the thick-slice rule
    assert "self-ensemble ×8" in outputs[8].GetDescription()
    # process() and a background job pass it on too; a NumPy integer is taken as its int
    one = logic.process(node, model=bundled, device="cpu", ensemble=np.int64(1))
    np.testing.assert_array_equal(volume_array(one), volume_array(outputs[1]))
    assert one.GetAttribute("LowDoseDenoise.Ensemble") == "1"
    job = logic.prepare(node, model=bundled, device="cpu", ensemble=1)
    assert type(job.ensemble) is int
    job.start()
    assert job.wait(60) and job.state == "done"
    np.testing.assert_array_equal(volume_array(logic.finish(job)), volume_array(outputs[1]))


def test_a_preview_with_one_pass_equals_a_full_run_with_one_pass(app, bundled):
    """The self-ensemble's symmetries act on whole slices, which a preview reads: a slice preview and an
    ROI preview with ensemble=1 hold the voxels of a full run with ensemble=1 (not those of the default)."""
    node = ensemble_ct(app)
    logic = DenoiseLogic(app.scene, app.app_logic)
    whole = volume_array(logic.process(node, model=bundled, device="cpu", ensemble=1))
    default = volume_array(logic.process(node, model=bundled, device="cpu"))
    for k in (1, 0):
        centre_red_view_on_slice(app, node, k)
        job = logic.prepare_preview(node, model=bundled, device="cpu", ensemble=1)
        assert job.ensemble == 1
        job.run()
        preview = logic.finish_preview(job)
        assert preview.GetAttribute("LowDoseDenoise.Ensemble") == "1"
        np.testing.assert_array_equal(volume_array(preview)[0], whole[k])
    roi = add_roi(app.scene, (ijk_to_ras(node) @ np.array([30, 28, 1, 1.0]))[:3], (12.0, 10.0, 2.0))
    preview = logic.preview(node, roi, model=bundled, device="cpu", ensemble=1)
    (i0, i1, j0, j1, k0, k1) = (int(v) for v in preview.GetAttribute("LowDoseDenoise.PreviewRegion").split())
    assert (k0, k1) == (1, 2)
    np.testing.assert_array_equal(volume_array(preview), whole[k0:k1, j0:j1, i0:i1])
    assert np.abs(volume_array(preview).astype(float) - default[k0:k1, j0:j1, i0:i1]).max() > 0
    assert preview.GetAttribute("LowDoseDenoise.Ensemble") == "1"


@pytest.mark.parametrize("value", [3, "2", True, 2.0, None, 0, 16])
def test_an_ensemble_other_than_1_2_4_8_is_refused_before_anything_changes(app, bundled, value, tmp_path):
    node = ensemble_ct(app)
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre_red_view_on_slice(app, node, 1)
    ids, before = app.node_ids(), voxel_hash(node)
    calls = every_entry(logic, node, bundled, ensemble=value) + (
        # checked before the model is loaded: a missing model file is not what the error is about
        lambda: logic.prepare(node, model=tmp_path / "missing.pt", device="cpu", ensemble=value),
    )
    for call in calls:
        with pytest.raises(InputError, match=r"self-ensemble size must be one of \[1, 2, 4, 8\].*got") as caught:
            call()
        assert repr(value) in str(caught.value)
    assert app.node_ids() == ids and voxel_hash(node) == before and logic.previews_of(node) == []


def test_run_summary_measures_noise_on_the_same_central_slices(app, model):
    from LowDoseDenoiseLib.quality.noise import measure_noise

    voxels = ct_voxels((9, 48, 56))
    node = add_volume(app.scene, voxels, "CT")
    logic = DenoiseLogic(app.scene)
    job = logic.prepare(node, model=model, device="cpu", strength=0.75)
    job.run()
    out = logic.finish(job)
    summary = job.summary
    assert summary.strength == 0.75 and summary.device == "cpu" and summary.slices == 9
    assert summary.sha256 == model.sha256 and summary.seconds > 0
    assert summary.noise_in == pytest.approx(measure_noise(voxels[2:7].astype(np.float32)).sd)
    assert summary.noise_out == pytest.approx(measure_noise(job.result[2:7]).sd)
    assert 20 < summary.noise_in < 40  # ct_voxels has SD 30 noise in its flat body
    assert f"{summary.noise_in:.1f}" in summary.line() and model.sha256[:12] in summary.line()
    assert volume_array(out).shape == voxels.shape


def test_message_log_captures_only_its_own_thread():
    import logging

    from LowDoseDenoiseLib.slicer.messages import MessageLog, capture_thread_logs

    log = MessageLog()
    logger = logging.getLogger("LowDoseDenoiseLib.engine")
    with capture_thread_logs(log):
        logger.warning("seen %s", "here")
        other = threading.Thread(target=lambda: logger.warning("from another run"))
        other.start()
        other.join()
        logger.info("below warning level")
        logger.warning("seen here")  # same text: kept once
    logger.warning("after the run")
    assert log.warnings == ["seen here"]
    assert log.drain()[0].line().endswith("Warning: seen here")


def test_subject_hierarchy_fallback_for_slicer_5_6_drops_dicom_uids(app, ct):
    from LowDoseDenoiseLib.slicer import compat

    sh = app.sh
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient")
    study = sh.CreateStudyItem(patient, "Study")
    item = sh.CreateItem(study, ct)
    sh.SetItemUID(item, "DICOM", "1.2.3.9")
    sh.SetItemAttribute(item, "DICOM.Modality", "CT")
    new_item = compat._recreate_if_it_has_dicom_uids(sh, item, study)
    assert new_item != item and sh.GetItemByDataNode(ct) == new_item
    assert sh.GetItemUID(new_item, "DICOM") == "" and sh.GetItemParent(new_item) == study
    assert compat._recreate_if_it_has_dicom_uids(sh, new_item, study) == new_item  # nothing to drop: kept
    # the 5.8+ path removes UIDs and DICOM attributes in place
    sh.SetItemUID(new_item, "DICOM", "1.2.3.10")
    sh.SetItemAttribute(new_item, "DICOM.Modality", "CT")
    assert compat.clear_item_dicom_identity(sh, new_item, study) == new_item
    assert sh.GetItemUID(new_item, "DICOM") == "" and "DICOM.Modality" not in sh.GetItemAttributeNames(new_item)


# -- issue 13: DICOM export from the output's own source ---------------------------------------


def node_from_volume(scene, volume, name):
    """A volume node with a Volume's voxels and geometry (LPS -> RAS)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(volume.direction).reshape(3, 3) * np.asarray(volume.spacing)[None, :]
    matrix[:3, 3] = volume.origin
    return add_volume(scene, volume.voxels, name, np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix)


@pytest.fixture
def two_patients(app, tmp_path):
    """Patient A and patient B, each a real DICOM series loaded as a node with its instance UIDs."""
    pydicom = pytest.importorskip("pydicom")
    from dicom_fixtures import write_ct_series

    from LowDoseDenoiseLib.io import dicomread

    nodes = {}
    for label, name in (("A", "Alpha^Anna"), ("B", "Beta^Bert")):
        series = write_ct_series(tmp_path / f"dicom-{label}", shape=(4, 24, 28), patient_name=name, seed=ord(label))
        volume = dicomread.read_series(series.folder)
        node = node_from_volume(app.scene, volume, f"CT {label}")
        node.SetAttribute("DICOM.instanceUIDs", " ".join(series.sop_uids))
        nodes[label] = (node, series)
    return pydicom, nodes


def test_dicom_export_files_the_result_into_its_own_source_study(app, model, tmp_path, two_patients):
    from LowDoseDenoiseLib.slicer import dicomexport

    pydicom, nodes = two_patients
    (node_a, series_a), (node_b, series_b) = nodes["A"], nodes["B"]
    logic = DenoiseLogic(app.scene)
    out_a = logic.process(node_a, model=model, device="cpu")
    out_b = logic.process(node_b, model=model, device="cpu")  # B is now the last input the GUI used
    assert dicomexport.check_source(out_b) is node_b
    plan = dicomexport.plan_export(app.scene, out_a, source_files=series_a.paths)
    assert plan.route is dicomexport.ExportRoute.DERIVED and plan.source_id == node_a.GetID()
    folder = dicomexport.write_derived(app.scene, plan, tmp_path / "export")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 4
    headers = [pydicom.dcmread(str(f)) for f in files]
    assert {str(h.StudyInstanceUID) for h in headers} == {series_a.study_uid}
    assert {str(h.PatientName) for h in headers} == {"Alpha^Anna"}
    referenced = {h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in headers}
    assert referenced == set(series_a.sop_uids) and not referenced & set(series_b.sop_uids)
    assert all(h.SeriesInstanceUID != series_a.series_uid for h in headers)
    # the derived series says how it was made: model, strength and the self-ensemble of the run
    assert all(f"self-ensemble {out_a.GetAttribute('LowDoseDenoise.Ensemble')}" in str(h.DerivationDescription)
               for h in headers)
    # source files that do not match the output's grid are refused before anything is written
    from dicom_fixtures import write_ct_series

    wrong_files = write_ct_series(tmp_path / "dicom-wrong", shape=(3, 24, 28), patient_name="Beta^Bert").paths
    wrong = dicomexport.plan_export(app.scene, out_a, source_files=wrong_files)
    with pytest.raises(InputError, match="3 slices"):
        dicomexport.write_derived(app.scene, wrong, tmp_path / "export-wrong")
    assert not (tmp_path / "export-wrong").exists()


def test_dicom_export_refuses_a_missing_or_changed_source(app, ct, model):
    from LowDoseDenoiseLib.slicer import dicomexport

    logic = DenoiseLogic(app.scene)
    out = logic.process(ct, model=model, device="cpu")
    assert dicomexport.check_source(out) is ct
    ct.SetOrigin(ct.GetOrigin()[0] + 5.0, *ct.GetOrigin()[1:])
    with pytest.raises(InputError, match="no longer matches"):
        dicomexport.plan_export(app.scene, out)
    ct.SetOrigin(ct.GetOrigin()[0] - 5.0, *ct.GetOrigin()[1:])
    assert dicomexport.plan_export(app.scene, out).source_id == ct.GetID()
    app.scene.RemoveNode(ct)
    with pytest.raises(InputError, match="no longer in the scene"):
        dicomexport.plan_export(app.scene, out)
    stranger = add_volume(app.scene, ct_voxels(), "imported result")
    with pytest.raises(InputError, match="not made by Low-Dose CT Denoise"):
        dicomexport.check_source(stranger)


def test_dicom_export_plan_takes_patient_and_study_from_the_hierarchy(app, ct, model, tmp_path):
    import slicer as slicer_module

    from LowDoseDenoiseLib.slicer import dicomexport

    constants = slicer_module.vtkMRMLSubjectHierarchyConstants
    sh = app.sh
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Doe^Jane")
    sh.SetItemAttribute(patient, constants.GetDICOMPatientIDAttributeName(), "MRN-42")
    sh.SetItemAttribute(patient, constants.GetDICOMPatientBirthDateAttributeName(), "19700101")
    study = sh.CreateStudyItem(patient, "CT abdomen")
    sh.SetItemUID(study, constants.GetDICOMUIDName(), "1.2.826.0.1.3680043.8.498.1")
    sh.SetItemAttribute(study, constants.GetDICOMStudyDateAttributeName(), "20240102")
    sh.CreateItem(study, ct)
    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu")
    assert sh.GetItemParent(sh.GetItemByDataNode(out)) == study

    plan = dicomexport.plan_export(app.scene, out, source_files=[tmp_path / "gone.dcm"])  # a missing file is ignored
    assert plan.route is dicomexport.ExportRoute.SLICER_EXPORTER
    tags = dicomexport.exporter_tags(plan)
    assert tags[constants.GetDICOMPatientNameTagName()] == "Doe^Jane"
    assert tags[constants.GetDICOMPatientIDTagName()] == "MRN-42"
    assert tags[constants.GetDICOMPatientBirthDateTagName()] == "19700101"
    assert tags["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.1"
    assert tags[constants.GetDICOMStudyDateTagName()] == "20240102"
    assert tags[constants.GetDICOMStudyDescriptionTagName()] == "CT abdomen"
    assert tags["SeriesDescription"] == out.GetName() and tags["Modality"] == "CT"
    assert dicomexport.exporter_folder(tmp_path, 17) == tmp_path / "ScalarVolume_17"
    with pytest.raises(InputError, match="Slicer's DICOM exporter"):
        dicomexport.write_derived(app.scene, plan, tmp_path / "x")


def test_dicom_export_outside_any_study_starts_a_new_one_and_says_so(app, ct, model, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from LowDoseDenoiseLib.slicer import dicomexport

    out = DenoiseLogic(app.scene).process(ct, model=model, device="cpu")
    plan = dicomexport.plan_export(app.scene, out)
    assert plan.route is dicomexport.ExportRoute.NEW_STUDY and "anonymous" in plan.notes[0]
    with pytest.raises(InputError):
        dicomexport.exporter_tags(plan)
    folder = dicomexport.write_derived(app.scene, plan, tmp_path / "new")
    header = pydicom.dcmread(str(sorted(folder.glob("*.dcm"))[0]))
    assert str(header.PatientName) == "Anonymous" and header.Modality == "CT"
    assert len(list(folder.glob("*.dcm"))) == volume_array(out).shape[0]


# -- issue 11 item 6: dependency checks and reload, out of the module file ----------------------


def test_torch_status_comes_from_package_metadata():
    import importlib.metadata

    import torch

    from LowDoseDenoiseLib.slicer import dependencies

    status = dependencies.torch_status()
    assert status.version == importlib.metadata.version("torch") and status.recent_enough and not status.problem()
    assert dependencies.version_tuple("2.4.1+cu121") == (2, 4, 1)
    assert dependencies.version_tuple("2.6.0.dev20241001") == (2, 6, 0)
    old = dependencies.TorchStatus(version="2.0.1")
    assert not old.recent_enough and "2.0.1" in old.problem() and "PyTorch Utils" in old.problem()
    assert "not installed" in dependencies.TorchStatus(version=None).problem()
    assert any("torchvision" in line for line in dependencies.install_list(status))
    assert dependencies.package_version("no-such-package-lowdose") is None
    env = dependencies.torch_environment()
    assert env.torch_version == torch.__version__ and not env.error
    assert env.lines()[0].startswith(f"PyTorch {torch.__version__}")
    choices = dependencies.device_choices()
    assert [name for name, _ in choices[:2]] == ["auto", "cpu"]


def test_forget_library_modules_drops_the_package_and_its_submodules(tmp_path, monkeypatch):
    import importlib
    import sys

    from LowDoseDenoiseLib.slicer.reloading import forget_library_modules

    package = tmp_path / "reloadme"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "part.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("reloadme.part")
    (package / "part.py").write_text("VALUE = 3\n")
    assert forget_library_modules("reloadme") == ["reloadme", "reloadme.part"]
    assert "reloadme.part" not in sys.modules
    importlib.invalidate_caches()
    assert importlib.import_module("reloadme.part").VALUE == 3


def test_model_menu_lists_every_bundled_model_and_rereads_a_fixed_file(tmp_path):
    from LowDoseDenoiseLib import modelfile
    from LowDoseDenoiseLib.slicer.modelchoice import MODEL_FILE_KEY, model_choices, model_details

    choices = model_choices()
    bundled = sorted(Path(modelfile.MODELS_DIR).glob("*.pt"))
    assert sorted(c.path for c in choices if c.path is not None) == bundled
    assert choices[-1].key == MODEL_FILE_KEY and sum(c.default for c in choices) == 1
    path = tmp_path / "mine.pt"
    path.write_bytes(b"not a model")
    assert model_details(path).startswith("Cannot use this model")
    make_model(path)  # fixed in place: read again, nothing cached
    assert model_details(path).startswith("scene-test 0.0.2, trained on 10%–50% dose")
    assert model_details(None) == "Choose a model file (.pt)."


# -- preview: the current slice or a markups ROI ------------------------------------------------


def centre_red_view_on_slice(app, volume, k: int) -> None:
    """Put ``volume`` in the Red view and centre the view on the middle of its slice ``k``."""
    app.composite("Red").SetBackgroundVolumeID(volume.GetID())
    dims = volume.GetImageData().GetDimensions()
    ras = ijk_to_ras(volume) @ np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, k, 1.0])
    app.slice_node("Red").JumpSliceByCentering(*ras[:3])


def red_view_slice(app, volume) -> float:
    """The input's continuous slice index at the centre of the Red view."""
    node = app.slice_node("Red")
    dims = node.GetDimensions()
    centre = node.GetXYToRAS().MultiplyPoint((dims[0] / 2, dims[1] / 2, 0, 1))
    return float((np.linalg.inv(ijk_to_ras(volume)) @ np.array(centre))[2])


def add_roi(scene, centre, size, name="R"):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*centre)
    roi.SetSize(*size)
    return roi


def full_run(ct, model, strength=1.0) -> np.ndarray:
    from LowDoseDenoiseLib.engine import denoise_volume
    from LowDoseDenoiseLib.volume import cast_like

    return cast_like(denoise_volume(volume_array(ct), model=model, device="cpu", strength=strength), np.int16)


def test_slice_preview_is_the_full_run_at_the_red_views_slice_only(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre_red_view_on_slice(app, ct, 3)
    ids, before, mtime = app.node_ids(), voxel_hash(ct), ct.GetImageData().GetMTime()
    preview = logic.preview(ct, model=model, device="cpu", strength=0.8)

    assert preview.GetName() == "CT denoised PREVIEW slice 4 of 5 (scene-test 0.0.2, strength 0.8)"
    assert preview.GetAttribute("LowDoseDenoise.Preview") == "slice 4 of 5"
    assert preview.GetAttribute("LowDoseDenoise.PreviewRegion") == "0 48 0 40 3 4"
    assert scene_module.source_volume(preview) is ct
    # one slice, on the input's grid at slice 3: the same values as a whole run there
    assert preview.GetImageData().GetDimensions() == (48, 40, 1)
    expected_matrix = oblique_matrix()
    expected_matrix[:3, 3] = (oblique_matrix() @ np.array([0, 0, 3, 1.0]))[:3]
    np.testing.assert_allclose(ijk_to_ras(preview), expected_matrix, atol=1e-9)
    whole = full_run(ct, model, 0.8)
    np.testing.assert_array_equal(volume_array(preview)[0], whole[3])
    assert np.abs(volume_array(preview)[0].astype(float) - volume_array(ct)[3]).max() > 0
    # the input is byte-identical and the scene gained only the preview and its display node
    assert voxel_hash(ct) == before and ct.GetImageData().GetMTime() == mtime
    assert app.node_ids() == ids | {preview.GetID(), preview.GetDisplayNodeID()}

    # a new preview of another slice replaces the first one
    centre_red_view_on_slice(app, ct, 0)
    second = logic.preview(ct, model=model, device="cpu", strength=0.8)
    assert second.GetAttribute("LowDoseDenoise.PreviewRegion") == "0 48 0 40 0 1"
    np.testing.assert_array_equal(volume_array(second)[0], whole[0])  # the end slice: context repeated as in a run
    assert preview.GetScene() is None and logic.previews_of(ct) == [second]


def test_roi_preview_geometry_values_and_an_untouched_input(app, model):
    matrix = np.diag([0.8, 0.7, 2.0, 1.0])
    matrix[:3, 3] = (-20.0, 10.0, -40.0)
    ct = add_volume(app.scene, ct_voxels((6, 40, 48)), "CT", matrix)
    logic = DenoiseLogic(app.scene, app.app_logic)
    roi = add_roi(app.scene, centre=(-10.0, 20.0, -35.0), size=(8.0, 5.0, 3.0))
    ids, before = app.node_ids(), voxel_hash(ct)
    preview = logic.preview(ct, roi, model=model, device="cpu")

    # exactly the input voxels whose centres lie in the ROI (checked with MRML's own IsPointInROIWorld)
    inside = [
        (k, j, i)
        for k in range(6) for j in range(40) for i in range(48)
        if roi.IsPointInROIWorld((matrix @ np.array([i, j, k, 1.0]))[:3])
    ]
    low, high = np.min(inside, axis=0), np.max(inside, axis=0) + 1
    assert len(inside) == np.prod(high - low)
    (k0, j0, i0), (k1, j1, i1) = low, high
    assert preview.GetImageData().GetDimensions() == (i1 - i0, j1 - j0, k1 - k0)
    assert preview.GetAttribute("LowDoseDenoise.PreviewRegion") == f"{i0} {i1} {j0} {j1} {k0} {k1}"
    assert "PREVIEW ROI 'R'" in preview.GetName()
    np.testing.assert_allclose(preview.GetSpacing(), ct.GetSpacing())
    origin = (matrix @ np.array([i0, j0, k0, 1.0]))[:3]
    np.testing.assert_allclose(preview.GetOrigin(), origin, atol=1e-9)
    # each preview voxel sits where the input's voxel sits, with a whole run's value
    np.testing.assert_array_equal(volume_array(preview), full_run(ct, model)[k0:k1, j0:j1, i0:i1])
    assert voxel_hash(ct) == before
    assert app.node_ids() == ids | {preview.GetID(), preview.GetDisplayNodeID()}


def test_roi_preview_follows_the_rois_and_the_inputs_transforms(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre = (ijk_to_ras(ct) @ np.array([20, 18, 2, 1.0]))[:3]
    roi = add_roi(app.scene, centre, (6.0, 6.0, 4.0))
    plain = logic.prepare_preview(ct, roi, model=model, device="cpu").region
    assert plain.kind == "roi" and plain.read == (max(plain.z[0] - 1, 0), min(plain.z[1] + 1, 5))

    def shift(node, offset):
        transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        for axis, value in enumerate(offset):
            matrix.SetElement(axis, 3, value)
        transform.SetMatrixTransformToParent(matrix)
        node.SetAndObserveTransformNodeID(transform.GetID())

    # moving the ROI and the input alike keeps the box; moving the ROI one voxel along i shifts it by one
    shift(roi, (7.0, -3.0, 5.0))
    shift(ct, (7.0, -3.0, 5.0))
    assert logic.prepare_preview(ct, roi, model=model, device="cpu").region == plain
    ct.SetAndObserveTransformNodeID(None)
    one_voxel = oblique_matrix()[:3, 0]  # the world step of one voxel along i
    roi.GetParentTransformNode().GetMatrixTransformToParent().DeepCopy(vtk.vtkMatrix4x4())
    shift(roi, one_voxel)
    moved = logic.prepare_preview(ct, roi, model=model, device="cpu").region
    assert moved.x == (plain.x[0] + 1, plain.x[1] + 1) and (moved.y, moved.z) == (plain.y, plain.z)


def test_cancelled_preview_adds_nothing(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre_red_view_on_slice(app, ct, 2)
    roi = add_roi(app.scene, (ijk_to_ras(ct) @ np.array([20, 18, 2, 1.0]))[:3], (6.0, 6.0, 4.0))
    ids, before = app.node_ids(), voxel_hash(ct)
    for roi_node in (None, roi):
        with pytest.raises(Cancelled):
            logic.preview(ct, roi_node, model=model, device="cpu", cancel=lambda: True)
        job = logic.prepare_preview(ct, roi_node, model=model, device="cpu")
        job.request_cancel()
        job.start()
        assert job.wait(30) and job.state == "cancelled"
        with pytest.raises(Cancelled):
            logic.finish_preview(job)
    assert app.node_ids() == ids and voxel_hash(ct) == before and logic.previews_of(ct) == []


def test_preview_refuses_what_it_cannot_show_with_a_clear_message(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    unplaced = app.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    far = add_roi(app.scene, (500.0, 500.0, 500.0), (10.0, 10.0, 10.0), "far")
    inverted = add_roi(app.scene, (ijk_to_ras(ct) @ np.array([20, 18, 2, 1.0]))[:3], (6.0, 6.0, 4.0), "inverted")
    inverted.SetInsideOut(True)
    ids = app.node_ids()
    for roi, text in ((unplaced, "not placed"), (far, "does not overlap"), (inverted, "inside out")):
        with pytest.raises(InputError, match=text):
            logic.preview(ct, roi, model=model, device="cpu")
    centre_red_view_on_slice(app, ct, 40)  # far past the last slice
    with pytest.raises(InputError, match="Red view shows no slice"):
        logic.preview(ct, model=model, device="cpu")
    assert app.node_ids() == ids
    centre_red_view_on_slice(app, ct, 1)
    job = logic.prepare_preview(ct, model=model, device="cpu")
    job.run()
    with pytest.raises(LowDoseDenoiseError, match="finish_preview"):
        logic.finish(job)  # a preview never becomes a whole-volume result
    assert app.node_ids() == ids
    from LowDoseDenoiseLib.slicer import dicomexport

    with pytest.raises(InputError, match="preview of part of the volume"):
        dicomexport.check_source(logic.finish_preview(job))  # never filed into the study as a series


def test_preview_in_the_comparison_views(app, ct, model):
    logic = DenoiseLogic(app.scene, app.app_logic)
    centre_red_view_on_slice(app, ct, 3)
    preview = logic.preview(ct, model=model, device="cpu")
    centre_red_view_on_slice(app, ct, 0)  # the user scrolled away meanwhile
    ids = app.node_ids()
    views = logic.show_comparison(ct, preview, layout="with-difference")
    assert views == ["Red", "Yellow", "Green"]
    assert app.composite("Red").GetBackgroundVolumeID() == ct.GetID()
    assert app.composite("Yellow").GetBackgroundVolumeID() == preview.GetID()
    # every view is back on the previewed slice, in the input's own slice plane
    assert red_view_slice(app, ct) == pytest.approx(3.0, abs=1e-6)
    normal = np.array([app.slice_node("Red").GetSliceToRAS().GetElement(r, 2) for r in range(3)])
    k_axis = oblique_matrix()[:3, 2] / np.linalg.norm(oblique_matrix()[:3, 2])
    assert abs(float(normal @ k_axis)) == pytest.approx(1.0, abs=1e-9)
    difference = logic.difference_node
    assert difference.GetImageData().GetDimensions() == (48, 40, 1)
    np.testing.assert_allclose(volume_array(difference)[0], volume_array(preview)[0].astype(np.float32)
                               - volume_array(ct)[3])
    np.testing.assert_allclose(ijk_to_ras(difference), ijk_to_ras(preview), atol=1e-9)
    assert logic.end_comparison() and app.node_ids() == ids
    # a volume of another size that is no preview of the input is still refused
    other = add_volume(app.scene, ct_voxels((1, 40, 48)), "other")
    with pytest.raises(InputError, match="different sizes"):
        logic.show_comparison(ct, other)


def test_slicer_jobs_use_short_batches_so_a_cancel_waits_one_slice_on_the_cpu(app, model):
    from LowDoseDenoiseLib.slicer.scene import cancel_bounded_batch

    assert cancel_bounded_batch("cpu", 512, 512) == 1
    assert cancel_bounded_batch("cuda", 512, 512) == 4
    assert cancel_bounded_batch("cuda:1", 256, 256) == 16
    assert cancel_bounded_batch("mps", 64, 64) == 32
    assert cancel_bounded_batch("cuda", 1024, 1024) == 1
    ct = add_volume(app.scene, ct_voxels((8, 40, 48)), "CT")
    logic = DenoiseLogic(app.scene)
    job = logic.prepare(ct, model=model, device="cpu")
    assert job.batch_size == 1
    asked, reports = threading.Event(), []

    def progress(done, total):
        reports.append(done)
        if done == 3:
            asked.set()  # Cancel pressed while slice 4 is about to start

    with pytest.raises(Cancelled):
        job.run(progress=progress, cancel=asked)
    assert reports == [1, 2, 3] and job.state == "cancelled" and job.result is None


def test_a_cancel_after_the_last_batch_still_cancels(app, ct, model):
    logic = DenoiseLogic(app.scene)
    ids = app.node_ids()
    job = logic.prepare(ct, model=model, device="cpu")
    with pytest.raises(Cancelled):  # Cancel pressed while the run summary was being measured
        job.run(progress=lambda done, total: job.request_cancel() if done == total else None)
    assert job.state == "cancelled" and job.result is None
    with pytest.raises(Cancelled):
        logic.finish(job)
    assert app.node_ids() == ids
