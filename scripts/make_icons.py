"""Draw the extension's icon and render its comparison screenshot.

    .venv/bin/python scripts/make_icons.py [--model MODEL.pt] [--volume CT.nrrd]

Icon (128×128 RGBA PNG, written to LowDoseDenoise/Resources/Icons/ and
Resources/Icons/): a synthetic abdominal CT slice, left half with CT-like noise, right
half clean.

Screenshot (Resources/Screenshots/LowDoseDenoise-comparison.png): a headless MRML
scene from the slicer-core wheel, set up like Slicer's (application, layout, colour
and slice logics); DenoiseLogic denoises the volume and shows the "with-difference"
comparison; each slice view is then rendered by its own vtkMRMLSliceLogic (Slicer's 2D
reslice and window/level pipeline) and laid out with matplotlib next to the module's
settings.  It is Slicer's view rendering of a real scene, not a capture of the
application window.  If the model is an untrained placeholder (an identity), a
Gaussian smoothing stand-in is used instead and the figure says so: rerun this script
once the trained model is bundled.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "LowDoseDenoise"))

from LowDoseDenoiseLib.slicer.headless import ApplicationScene  # noqa: E402

ICON_PATHS = (
    REPO / "LowDoseDenoise" / "Resources" / "Icons" / "LowDoseDenoise.png",
    REPO / "Resources" / "Icons" / "LowDoseDenoise.png",
)
SCREENSHOT_PATH = REPO / "Resources" / "Screenshots" / "LowDoseDenoise-comparison.png"
WINDOW, LEVEL = 400.0, 40.0  # abdominal soft-tissue window


# -- synthetic CT --------------------------------------------------------------------------------


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    y, x = yy - cy, xx - cx
    return ((c * x + s * y) / rx) ** 2 + ((-s * x + c * y) / ry) ** 2 <= 1.0


def abdomen_slice(size: int, z: float = 0.0) -> np.ndarray:
    """An axial abdominal slice in HU (patient right on image left, anterior up)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[_ellipse(yy, xx, 0.52, 0.5, 0.36, 0.46)] = -100.0  # subcutaneous fat
    hu[_ellipse(yy, xx, 0.53, 0.5, 0.32, 0.42)] = 35.0  # muscle and viscera
    hu[_ellipse(yy, xx, 0.45, 0.33, 0.2, 0.19 + 0.01 * z, 0.3)] = 60.0  # liver
    hu[_ellipse(yy, xx, 0.42, 0.36, 0.035, 0.035)] = 15.0  # hypodense lesion
    hu[_ellipse(yy, xx, 0.52, 0.27, 0.02, 0.02)] = 150.0  # hepatic vessel
    hu[_ellipse(yy, xx, 0.45, 0.73, 0.1, 0.07, -0.4)] = 50.0  # spleen
    hu[_ellipse(yy, xx, 0.58, 0.5, 0.035, 0.035)] = 190.0  # aorta, contrast
    hu[_ellipse(yy, xx, 0.6, 0.38, 0.06, 0.04, 0.3)] = 150.0  # right kidney cortex
    hu[_ellipse(yy, xx, 0.6, 0.38, 0.03, 0.02, 0.3)] = 30.0  # right renal pelvis
    hu[_ellipse(yy, xx, 0.6, 0.63, 0.06, 0.04, -0.3)] = 150.0  # left kidney cortex
    hu[_ellipse(yy, xx, 0.6, 0.63, 0.03, 0.02, -0.3)] = 30.0
    hu[_ellipse(yy, xx, 0.35, 0.6, 0.05, 0.07)] = -950.0  # bowel gas
    hu[_ellipse(yy, xx, 0.73, 0.5, 0.06, 0.06)] = 700.0  # vertebral body
    hu[_ellipse(yy, xx, 0.73, 0.5, 0.04, 0.04)] = 250.0  # cancellous bone
    hu[_ellipse(yy, xx, 0.81, 0.5, 0.02, 0.03)] = 700.0  # spinous process
    return hu


def ct_noise(shape, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Correlated noise with a CT-like (ramp × Hann) power spectrum and standard deviation ``sd``."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.fftfreq(shape[-1])[None, :]
    radius = np.sqrt(fx**2 + fy**2) / 0.5
    spectrum = radius * np.where(radius < 1, 0.5 + 0.5 * np.cos(np.pi * radius), 0.0)
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * np.sqrt(spectrum)))
    return (noise / noise.std() * sd).astype(np.float32)


def to_window(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu - (LEVEL - WINDOW / 2)) / WINDOW, 0.0, 1.0)


# -- icon --------------------------------------------------------------------------------------


def make_icon(paths=ICON_PATHS) -> np.ndarray:
    """128×128 RGBA: noisy left half, clean right half, rounded transparent corners."""
    import matplotlib.image

    size = 128
    rng = np.random.default_rng(2024)
    clean = abdomen_slice(size)
    noisy = clean + ct_noise(clean.shape, 70.0, rng) * (clean > -900)
    grey = to_window(np.where(np.arange(size)[None, :] < size // 2, noisy, clean))
    rgba = np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1)
    rgba[:, size // 2 - 1 : size // 2 + 1, :3] = (0.95, 0.75, 0.2)  # divider
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    radius = 16
    corner_y = np.clip(yy, radius, size - radius)
    corner_x = np.clip(xx, radius, size - radius)
    rgba[..., 3] = ((yy - corner_y) ** 2 + (xx - corner_x) ** 2 <= radius**2).astype(float)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(path, rgba, format="png", metadata={"Software": None})
    return rgba


# -- screenshot --------------------------------------------------------------------------------


class HeadlessSlicerScene(ApplicationScene):
    """The application-like headless scene, plus the volume and rendering helpers of this script."""

    def __init__(self, view_size=(360, 300)):
        super().__init__(view_size)

    def add_volume(self, voxels: np.ndarray, spacing, name: str):
        import vtk
        from vtk.util import numpy_support

        image = vtk.vtkImageData()
        image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
        image.AllocateScalars(numpy_support.get_vtk_array_type(voxels.dtype), 1)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[...] = voxels.ravel()
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node.SetAndObserveImageData(image)
        node.SetSpacing(*spacing)
        node.SetIJKToRASDirections(-1, 0, 0, 0, -1, 0, 0, 0, 1)  # DICOM's LPS axes: anterior up, patient right left
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetAutoWindowLevel(0)
        node.GetDisplayNode().SetWindowLevel(WINDOW, LEVEL)
        return node

    def render_view(self, name: str) -> np.ndarray:
        """The view's background layer as Slicer's slice pipeline renders it (RGB, top row first)."""
        from vtk.util import numpy_support

        connection = self.slice_logics[name].GetBackgroundLayer().GetImageDataConnection()
        connection.GetProducer().Update()
        image = connection.GetProducer().GetOutputDataObject(connection.GetIndex())
        width, height, _ = image.GetDimensions()
        rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        rgb = rgba[..., :3].astype(np.float32) * (rgba[..., 3:4] / 255.0)  # over the black view background
        return np.flipud(rgb.astype(np.uint8))


def smoothing_stand_in(path: Path) -> Path:
    """A Gaussian smoothing 'model' in the model file format, clearly named as a stand-in."""
    import torch

    from LowDoseDenoiseLib.modelfile import make_metadata, save_model
    from LowDoseDenoiseLib.network import GeneratorConfig

    class GaussianSmoothing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            x = torch.arange(-3, 4, dtype=torch.float32)
            g = torch.exp(-(x**2) / (2 * 1.2**2))
            g = g / g.sum()
            self.register_buffer("kernel", (g[:, None] * g[None, :])[None, None])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            centre = x[:, 1:2]
            return torch.nn.functional.conv2d(
                torch.nn.functional.pad(centre, [3, 3, 3, 3], mode="reflect"), self.kernel
            )

    metadata = make_metadata(
        GeneratorConfig(context=1, width=1, levels=1, res_blocks=0),
        name="gaussian-smoothing-stand-in",
        version="0",
        description="Gaussian smoothing used for the screenshot until the trained model is bundled.",
        training={"trained": False},
    )
    return save_model(GaussianSmoothing(), metadata, path)


def make_screenshot(model_path=None, volume_path=None, out: Path = SCREENSHOT_PATH) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from LowDoseDenoiseLib.modelfile import load_model
    from LowDoseDenoiseLib.slicer.scene import DenoiseLogic

    headless = HeadlessSlicerScene()
    if volume_path:
        from LowDoseDenoiseLib.io.imagefiles import read_volume

        volume = read_volume(volume_path)
        middle = volume.voxels.shape[0] // 2
        voxels = np.ascontiguousarray(volume.voxels[max(middle - 2, 0) : middle + 3])
        spacing, name = volume.spacing, Path(volume_path).name.split(".")[0]
    else:
        rng = np.random.default_rng(7)
        clean = np.stack([abdomen_slice(320, z) for z in range(5)])
        voxels = np.rint(clean + ct_noise(clean.shape, 55.0, rng) * (clean > -900)).astype(np.int16)
        spacing, name = (1.0, 1.0, 3.0), "Synthetic low-dose abdomen"
    ct = headless.add_volume(voxels, spacing, name)

    with tempfile.TemporaryDirectory() as folder:
        model = load_model(model_path)
        stand_in = not model.metadata["training"].get("trained", True)
        if stand_in:
            model = load_model(smoothing_stand_in(Path(folder) / "stand-in.pt"))
        logic = DenoiseLogic(headless.scene, headless.app_logic)
        denoised = logic.process(ct, model=model, device="cpu", strength=1.0)
        views = logic.show_comparison(ct, denoised, layout="with-difference")
        images = [headless.render_view(view) for view in views]
        difference_window = logic.difference_node.GetDisplayNode().GetWindow()
        logic.end_comparison()

    titles = [
        f"Red: {ct.GetName()} (original)",
        f"Yellow: {denoised.GetName()}",
        f"Green: difference, window ±{difference_window / 2:.0f} HU",
    ]
    panel = "\n".join(
        [
            "LowDoseDenoise",
            "",
            "Input",
            f"  {ct.GetName()}",
            "  Output: create new volume",
            "Model",
            f"  {denoised.GetAttribute('LowDoseDenoise.ModelName')} "
            f"{denoised.GetAttribute('LowDoseDenoise.ModelVersion')}",
            f"  sha256 {denoised.GetAttribute('LowDoseDenoise.ModelSHA256')[:12]}",
            f"  Device: {denoised.GetAttribute('LowDoseDenoise.Device')}",
            "Strength",
            f"  High ({float(denoised.GetAttribute('LowDoseDenoise.Strength')):.2f})",
            "Compare",
            "  Side by side + difference",
            "  Linked views: on",
            "Export",
            "  NRRD / NIfTI file",
            "  DICOM derived series",
        ]
    )
    figure = plt.figure(figsize=(13.2, 4.4), dpi=100, facecolor="#202020")
    grid = figure.add_gridspec(1, 4, width_ratios=[0.8, 1, 1, 1], wspace=0.04, left=0.01, right=0.99)
    text_axes = figure.add_subplot(grid[0])
    text_axes.axis("off")
    text_axes.text(
        0.02,
        0.98,
        panel,
        va="top",
        ha="left",
        family="monospace",
        fontsize=9.2,
        color="#e8e8e8",
        transform=text_axes.transAxes,
    )
    for column, (image, title) in enumerate(zip(images, titles), start=1):
        axes = figure.add_subplot(grid[column])
        axes.imshow(image, interpolation="nearest")
        axes.set_title(textwrap.fill(title, 44), color="#e8e8e8", fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine, color in zip(axes.spines.values(), ["#F34A33", "#EDD54C", "#6EB04B"][column - 1 : column] * 4):
            spine.set_color(color)
            spine.set_linewidth(2)
    note = "Slice views rendered by slicer-core's vtkMRMLSliceLogic (headless MRML scene); not a screen capture."
    if stand_in:
        note += " Model: Gaussian smoothing stand-in until the trained model is bundled."
    figure.text(0.5, 0.015, note, ha="center", color="#b0b0b0", fontsize=8.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, facecolor=figure.get_facecolor(), metadata={"Software": None})
    plt.close(figure)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--volume", help="a CT file for the screenshot (default: a synthetic abdomen)")
    parser.add_argument("--icon-only", action="store_true", help="draw the icon, skip the screenshot")
    args = parser.parse_args(argv)
    make_icon()
    print("icon:", ", ".join(str(p.relative_to(REPO)) for p in ICON_PATHS))
    if not args.icon_only:
        print("screenshot:", make_screenshot(args.model, args.volume).relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
