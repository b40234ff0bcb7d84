"""3D Slicer module: denoise a loaded low-dose CT, compare it side by side, export the result.

Slicer glue only.  The work is done by ``LowDoseDenoiseLib``: ``scene.DenoiseLogic``
(MRML, tested headless on slicer-core) and ``engine`` (arrays, torch).  torch is not
imported here: it is installed through the PyTorch extension on the first Apply.
"""

import enum
import os
from pathlib import Path
from typing import Annotated, List, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Minimum torch version the engine is tested with.
MINIMUM_TORCH_VERSION = "2.1"
#: Strength presets (fraction of the predicted noise that is removed).
STRENGTH_PRESETS = {"low": 0.5, "medium": 0.75, "high": 1.0}
#: Milliseconds between two looks at a running job.
POLL_INTERVAL_MS = 200


#
# LowDoseDenoise
#


class LowDoseDenoise(ScriptedLoadableModule):
    """Module description: title, category, help, acknowledgement and sample data."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Low-Dose CT Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["LowDoseDenoise contributors"]
        self.parent.helpText = _(
            "Reduces noise in low-dose CT with a deep-learning generator (U-Net with attention fusion and a "
            "residual transform, trained without paired scans). Choose a CT volume, press Apply, and review the "
            "result side by side with the original in linked views; then export it as NRRD/NIfTI or as a "
            "DICOM derived series. The original volume is never changed. The result is a processed image: "
            "review it against the original before relying on it."
        )
        self.parent.helpText += self.getDefaultModuleDocumentationLink()
        self.parent.acknowledgementText = _(
            "The method follows J. Pu, T. Liu, Z. Guan, S. Li, Y. Ming, Z. Cong, W. Zhang, F. Li: "
            "<i>Unsupervised Denoising of Real Clinical Low Dose Liver CT with Perceptual Attention Networks</i>, "
            "arXiv:2605.00793 (2026). Cite it, and the data sets named in the model card, when you use this "
            "module. PyTorch is provided through the PyTorch extension."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer Slicer's CTLiver sample in the Sample Data module under this module's category."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="LowDoseDenoise",
        sampleName="CTLiver",
        thumbnailFileName=os.path.join(iconsPath, "LowDoseDenoise.png"),
        uris="https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/"
        "e16eae0ae6fefa858c5c11e58f0f1bb81834d81b7102e021571056324ef6f37e",
        fileNames="CTLiver.nrrd",
        checksums="SHA256:e16eae0ae6fefa858c5c11e58f0f1bb81834d81b7102e021571056324ef6f37e",
        nodeNames="CTLiver",
    )


#
# Parameter node
#


class CompareLayout(enum.Enum):
    """How the result is compared with the original."""

    SIDE_BY_SIDE = "side-by-side"
    WITH_DIFFERENCE = "with-difference"

    def label(self) -> str:
        return _("Side by side") if self is CompareLayout.SIDE_BY_SIDE else _("Side by side + difference")


@parameterNodeWrapper
class LowDoseDenoiseParameterNode:
    """All GUI state; the .ui widgets bind to these fields through SlicerParameterName.

    inputVolume - the CT volume to denoise.
    outputVolume - where the result goes; None creates "<input> denoised".
    useBundledModel - use the model shipped with the module instead of modelPath.
    modelPath - a TorchScript model file written by `lowdose-denoise export`.
    device - "auto", "cpu", "cuda:N" or "mps" (the combo box is filled at run time).
    strength - fraction of the predicted noise that is removed, 0..1.
    compareLayout - side by side, or with a third view of the difference.
    linkViews - link panning, zooming and scrolling of the comparison views.
    showComparison - show the comparison when a run finishes.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    useBundledModel: bool = True
    modelPath: Path
    device: str = "auto"
    strength: Annotated[float, WithinRange(0.0, 1.0)] = 1.0
    compareLayout: CompareLayout = CompareLayout.SIDE_BY_SIDE
    linkViews: bool = True
    showComparison: bool = True


#
# Widget
#


class LowDoseDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the .ui widgets to the parameter node and runs jobs without freezing the GUI."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[LowDoseDenoiseLogic] = None
        self._parameterNode: Optional[LowDoseDenoiseParameterNode] = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)
        self._modelInfoCache = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LowDoseDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LowDoseDenoiseLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.modelPathLineEdit.nameFilters = [_("TorchScript model (*.pt)")]
        self._fillDeviceComboBox()
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.lowStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["low"]))
        self.ui.mediumStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["medium"]))
        self.ui.highStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["high"]))
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.showComparisonButton.connect("clicked(bool)", self.onShowComparison)
        self.ui.endComparisonButton.connect("clicked(bool)", self.onEndComparison)
        self.ui.linkViewsCheckBox.connect("toggled(bool)", self.onLinkViewsToggled)
        self.ui.exportFileButton.connect("clicked(bool)", self.onExportFile)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelJob(wait=True)
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob(wait=True)
        if self.logic:
            self.logic.denoise.forget_comparison()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Optional[LowDoseDenoiseParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    # -- GUI state --------------------------------------------------------------------------------
    def _updateGui(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None:
            return
        running = self._job is not None
        self.ui.modelPathLineEdit.enabled = not node.useBundledModel and not running
        index = self.ui.deviceComboBox.findData(node.device)
        if index >= 0 and index != self.ui.deviceComboBox.currentIndex:
            self.ui.deviceComboBox.currentIndex = index
        self.ui.modelInfoLabel.text = self._modelInfo()
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop denoising; nothing is added to the scene.")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            ready = node.inputVolume is not None
            self.ui.applyButton.enabled = ready
            self.ui.applyButton.toolTip = (
                _("Denoise the input volume.") if ready else _("Select an input CT volume first.")
            )
        result = node.outputVolume
        comparable = node.inputVolume is not None and result is not None and not running
        self.ui.showComparisonButton.enabled = comparable
        self.ui.endComparisonButton.enabled = self.logic is not None and self.logic.denoise.comparing
        self.ui.exportFileButton.enabled = result is not None and not running
        self.ui.exportDicomButton.enabled = result is not None and not running
        for widget in (self.ui.inputSection, self.ui.modelSection, self.ui.deviceComboBox):
            widget.enabled = not running

    def _modelInfo(self) -> str:
        """Name, version, SHA-256 prefix and training dose of the chosen model, when torch is there."""
        node = self._parameterNode
        from LowDoseDenoiseLib import modelfile

        path = modelfile.bundled_model_path() if node.useBundledModel else Path(str(node.modelPath))
        if not node.useBundledModel and str(node.modelPath) in ("", "."):
            return _("Choose a model file (.pt).")
        if not path.is_file():
            return _("Model file not found: {path}").format(path=path)
        if not self.logic.torchAvailable():
            return _("{name} (details after the first Apply installs PyTorch)").format(name=path.name)
        key = (str(path), path.stat().st_mtime)
        if key not in self._modelInfoCache:
            try:
                self._modelInfoCache[key] = modelfile.load_model(path, probe=False).summary()
            except Exception as error:
                self._modelInfoCache[key] = _("Cannot use this model: {error}").format(error=error)
        return self._modelInfoCache[key]

    def _fillDeviceComboBox(self) -> None:
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for name, label in self.logic.deviceChoices():
            combo.addItem(label, name)
        combo.blockSignals(wasBlocked)

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def setStrength(self, value: float) -> None:
        if self._parameterNode is not None:
            self._parameterNode.strength = value

    # -- running ------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Start a run in a background thread, or cancel the running one."""
        if self._job is not None:
            self._job.request_cancel()
            self.ui.statusLabel.text = _("Cancelling…")
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start denoising."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self._fillDeviceComboBox()
            self._updateGui()
            job = self.logic.denoise.prepare(
                node.inputVolume,
                node.outputVolume,
                model=self.logic.modelSource(node),
                device=node.device,
                strength=node.strength,
            )
            job.start()
            self._job = job
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = _("Denoising on {device}…").format(device=job.device)
            self._timer.start()
            self._updateGui()

    def _pollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        self.ui.progressBar.value = int(round(100 * job.fraction))
        eta = job.eta_seconds
        if not job.finished:
            if eta is not None and job.state == "running":
                self.ui.statusLabel.text = _("{done} of {total} slices, about {seconds} s left").format(
                    done=job.done_slices, total=job.total_slices, seconds=int(round(eta))
                )
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.hide()
        try:
            if job.state == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
                return
            with slicer.util.tryWithErrorDisplay(_("Denoising failed."), waitCursor=True):
                self.ui.statusLabel.text = ""
                output = self.logic.denoise.finish(job)
                self._parameterNode.outputVolume = output
                self.ui.statusLabel.text = _("Done: '{name}'.").format(name=output.GetName())
                if self._parameterNode.showComparison:
                    self.onShowComparison()
        finally:
            self._updateGui()

    def _cancelJob(self, wait: bool = False) -> None:
        job, self._job = self._job, None
        self._timer.stop()
        if job is not None:
            job.request_cancel()
            if wait:
                job.wait(30)

    # -- comparison -----------------------------------------------------------------------------
    def onShowComparison(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not show the comparison."), waitCursor=True):
            self.logic.denoise.show_comparison(
                node.inputVolume, node.outputVolume, layout=node.compareLayout.value, linked=node.linkViews
            )
        self._updateGui()

    def onEndComparison(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not restore the views."), waitCursor=True):
            self.logic.denoise.end_comparison()
        self._updateGui()

    def onLinkViewsToggled(self, linked: bool) -> None:
        self.logic.denoise.set_linked(linked)

    # -- export -----------------------------------------------------------------------------------
    def onExportFile(self) -> None:
        node = self._parameterNode.outputVolume
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            _("Save denoised volume"),
            os.path.join(os.path.expanduser("~"), f"{node.GetName()}.nrrd"),
            _("NRRD (*.nrrd);;NIfTI (*.nii.gz *.nii);;MetaImage (*.mha)"),
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            written = self.logic.denoise.export(node, path, overwrite=True)  # the dialog asked already
            self.ui.statusLabel.text = _("Saved {path}").format(path=written)

    def onExportDicom(self) -> None:
        node = self._parameterNode.outputVolume
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Folder for the DICOM derived series (an empty or new folder)")
        )
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            written = self.logic.exportDicom(node, self._parameterNode.inputVolume, folder)
            self.ui.statusLabel.text = _("DICOM series written to {path}").format(path=written)


#
# Logic
#


class LowDoseDenoiseLogic(ScriptedLoadableModuleLogic):
    """Module logic: parameter node, dependencies, model choice, DICOM export.

    The denoising itself is ``self.denoise``, a LowDoseDenoiseLib.slicer.scene.DenoiseLogic on
    slicer.mrmlScene; scripts can call ``process()`` here or use ``self.denoise``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from LowDoseDenoiseLib.slicer.scene import DenoiseLogic

        self.denoise = DenoiseLogic(slicer.mrmlScene, slicer.app.applicationLogic())

    def getParameterNode(self) -> LowDoseDenoiseParameterNode:
        return LowDoseDenoiseParameterNode(super().getParameterNode())

    def process(self, inputVolume, outputVolume=None, modelPath=None, device="auto", strength=1.0):
        """Denoise ``inputVolume`` and wait for the result (scripts, self-test); returns the output node."""
        if not self.ensureDependencies():
            raise RuntimeError(
                _(
                    "PyTorch is needed to denoise; install it when asked, or install the PyTorch "
                    "extension from the Extensions Manager."
                )
            )
        return self.denoise.process(inputVolume, outputVolume, model=modelPath, device=device, strength=strength)

    @staticmethod
    def modelSource(parameterNode: LowDoseDenoiseParameterNode):
        """None for the bundled model, else the chosen file."""
        if parameterNode.useBundledModel:
            return None
        path = str(parameterNode.modelPath)
        if not path or path == ".":
            from LowDoseDenoiseLib.errors import InputError

            raise InputError(_("No model file is chosen; pick a .pt file or tick 'Use bundled model'."))
        return Path(path)

    # -- dependencies ---------------------------------------------------------------------------
    @staticmethod
    def torchAvailable() -> bool:
        import importlib.util

        return importlib.util.find_spec("torch") is not None

    def deviceChoices(self) -> List[tuple]:
        """(name, label) of each device: auto, CPU, each CUDA GPU, Apple MPS (GPUs once torch is there)."""
        choices = [("auto", _("Automatic (GPU if available)")), ("cpu", _("CPU"))]
        if not self.torchAvailable():
            return choices
        import torch

        for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            choices.append(
                (f"cuda:{index}", _("GPU {index}: {name}").format(index=index, name=torch.cuda.get_device_name(index)))
            )
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            choices.append(("mps", _("Apple GPU (MPS)")))
        return choices

    def ensureDependencies(self) -> bool:
        """Install torch through the PyTorch extension after one confirmation; False if declined."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(
                _(
                    "This module needs the PyTorch extension. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer and try again."
                )
            )
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            from packaging import version

            if version.parse(torchLogic.torch.__version__.split("+")[0]) < version.parse(MINIMUM_TORCH_VERSION):
                slicer.util.errorDisplay(
                    _(
                        "PyTorch {found} is installed but this module needs {minimum} or newer. Update it in the "
                        "PyTorch Utils module."
                    ).format(found=torchLogic.torch.__version__, minimum=MINIMUM_TORCH_VERSION)
                )
                return False
            return True
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "Denoising needs these Python packages, which will be installed now:\n\n"
                "  • PyTorch {minimum} or newer (through the PyTorch extension; CPU or GPU build chosen for this "
                "computer)\n\nThis needs a network connection and may take several minutes."
            ).format(minimum=MINIMUM_TORCH_VERSION),
            _("Install Python packages"),
        ):
            return False
        with slicer.util.WaitCursor():
            torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
        if torch is None:
            slicer.util.errorDisplay(_("PyTorch could not be installed. Install it from the PyTorch Utils module."))
            return False
        return True

    @staticmethod
    def ensurePythonPackages(requirements: List[str], requester: str) -> None:
        """Install pip packages after one confirmation: slicer.packaging where available."""
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(requirements, requester=requester)
            return
        import importlib.util

        missing = [r for r in requirements if importlib.util.find_spec(r.split(">")[0].split("=")[0].strip()) is None]
        if missing and slicer.util.confirmOkCancelDisplay(
            _("{requester} needs these Python packages, which will be installed now:\n\n{packages}").format(
                requester=requester, packages="\n".join(f"  • {r}" for r in missing)
            ),
            _("Install Python packages"),
        ):
            slicer.util.pip_install(missing)

    # -- DICOM export -----------------------------------------------------------------------------
    def exportDicom(self, outputVolume, inputVolume, folder) -> str:
        """Write ``outputVolume`` as a DICOM derived series into ``folder``; returns the folder.

        With the input's DICOM files in Slicer's database: a derived series of the same
        study (LowDoseDenoiseLib.io.dicomwrite, with source image references).  Without them,
        when the volume sits in a study of the subject hierarchy: Slicer's own DICOM
        scalar volume exporter.  Otherwise dicomio starts a new anonymous study.
        """
        sourceFiles = self._sourceDicomFiles(inputVolume)
        if not sourceFiles and self._inStudy(outputVolume):
            return self._exportWithSlicerPlugin(outputVolume, folder)
        self.ensurePythonPackages(["pydicom"], requester=_("DICOM export"))
        from LowDoseDenoiseLib.io import dicomread, dicomwrite
        from LowDoseDenoiseLib.slicer.scene import volume_from_node

        source = dicomread.read_series([Path(f) for f in sourceFiles]) if sourceFiles else None
        volume = volume_from_node(outputVolume)
        modelInfo = {
            "name": outputVolume.GetAttribute("LowDoseDenoise.ModelName") or "",
            "version": outputVolume.GetAttribute("LowDoseDenoise.ModelVersion") or "",
            "sha256": outputVolume.GetAttribute("LowDoseDenoise.ModelSHA256") or "",
            "strength": outputVolume.GetAttribute("LowDoseDenoise.Strength") or "",
        }
        written = dicomwrite.write_derived_series(volume, volume.voxels, folder, source=source, model_info=modelInfo)
        return str(written)

    @staticmethod
    def _sourceDicomFiles(volumeNode) -> List[str]:
        if volumeNode is None or not hasattr(slicer, "dicomDatabase") or slicer.dicomDatabase is None:
            return []
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        return [f for f in files if f and os.path.isfile(f)]

    @staticmethod
    def _inStudy(volumeNode) -> bool:
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        item = shNode.GetItemByDataNode(volumeNode)
        parent = shNode.GetItemParent(item) if item else 0
        return bool(parent) and shNode.GetItemLevel(parent) == "Study"

    @staticmethod
    def _exportWithSlicerPlugin(volumeNode, folder) -> str:
        import DICOMScalarVolumePlugin

        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        exporter = DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()
        exportables = exporter.examineForExport(shNode.GetItemByDataNode(volumeNode))
        if not exportables:
            raise RuntimeError(_("Slicer's DICOM exporter cannot export '{name}'.").format(name=volumeNode.GetName()))
        for exportable in exportables:
            exportable.directory = folder
            exportable.setTag("SeriesDescription", volumeNode.GetName())
        message = exporter.export(exportables)
        if message:
            raise RuntimeError(message)
        return folder


#
# Self-test (runs inside Slicer: Reload and Test, or ctest)
#


class LowDoseDenoiseTest(ScriptedLoadableModuleTest):
    """Loads CTLiver, keeps a few slices, denoises on CPU, checks geometry, change and layout."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DenoiseCTLiver()

    def _tinyModel(self) -> str:
        """The bundled model when it is trained, else a small generator with random last weights."""
        from LowDoseDenoiseLib import modelfile

        bundled = modelfile.bundled_model_path()
        if bundled.is_file() and modelfile.load_model(bundled, probe=False).metadata["training"].get("trained", True):
            return str(bundled)
        import torch

        from LowDoseDenoiseLib.network import Generator, GeneratorConfig

        config = GeneratorConfig(context=1, width=4, levels=2, res_blocks=1)
        torch.manual_seed(0)
        generator = Generator(config)
        with torch.no_grad():
            generator.tail.weight.normal_(0.0, 0.05)
        path = os.path.join(slicer.app.temporaryPath, "LowDoseDenoiseSelfTest.pt")
        metadata = modelfile.make_metadata(config, name="self-test", version="0", description="self-test only")
        modelfile.save_model(generator, metadata, path)
        return path

    def test_DenoiseCTLiver(self):
        import numpy as np
        import SampleData

        self.delayDisplay("Loading CTLiver")
        registerSampleData()
        fullVolume = SampleData.downloadSample("CTLiver")
        # a few slices keep the test fast on CPU
        voxels = slicer.util.arrayFromVolume(fullVolume)
        middle = voxels.shape[0] // 2
        inputVolume = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, fullVolume, "CTLiver slab")
        ijkToRas = vtk.vtkMatrix4x4()
        fullVolume.GetIJKToRASMatrix(ijkToRas)
        origin = ijkToRas.MultiplyPoint((0, 0, middle - 2, 1))
        slicer.util.updateVolumeFromArray(inputVolume, voxels[middle - 2 : middle + 2].copy())
        inputVolume.SetOrigin(origin[:3])
        before = slicer.util.arrayFromVolume(inputVolume).copy()

        self.delayDisplay("Denoising on CPU")
        logic = LowDoseDenoiseLogic()
        self.assertTrue(logic.ensureDependencies())
        outputVolume = logic.process(inputVolume, modelPath=self._tinyModel(), device="cpu", strength=1.0)

        after = slicer.util.arrayFromVolume(outputVolume)
        self.assertEqual(after.shape, before.shape)
        self.assertEqual(after.dtype, before.dtype)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), before)
        self.assertGreater(np.abs(after.astype(float) - before).max(), 0)
        inMatrix, outMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(inMatrix)
        outputVolume.GetIJKToRASMatrix(outMatrix)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(inMatrix.GetElement(r, c), outMatrix.GetElement(r, c))

        self.delayDisplay("Comparison layout")
        layoutManager = slicer.app.layoutManager()
        previousLayout = layoutManager.layout
        logic.denoise.show_comparison(inputVolume, outputVolume, layout="with-difference")
        red = layoutManager.sliceWidget("Red").mrmlSliceCompositeNode()
        yellow = layoutManager.sliceWidget("Yellow").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), inputVolume.GetID())
        self.assertEqual(yellow.GetBackgroundVolumeID(), outputVolume.GetID())
        self.assertTrue(red.GetLinkedControl() and yellow.GetHotLinkedControl())
        self.assertIsNotNone(logic.denoise.difference_node)
        logic.denoise.end_comparison()
        self.assertEqual(layoutManager.layout, previousLayout)
        self.assertIsNone(logic.denoise.difference_node)
        self.delayDisplay("Test passed")
