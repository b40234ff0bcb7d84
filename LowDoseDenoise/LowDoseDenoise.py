"""3D Slicer module: denoise a loaded low-dose CT, compare it side by side, export the result.

Slicer glue only: the module description, a widget that wires the .ui to a parameter
node and runs jobs without freezing the GUI, and a logic that calls the library.  The
work is in ``LowDoseDenoiseLib``: ``slicer.scene`` (output node, comparison views),
``slicer.dicomexport`` (DICOM export into the source's study), ``slicer.dependencies``
(torch checked from package metadata, install list, GPU info), ``slicer.modelchoice``
(the model menu) and ``engine`` (arrays, torch).  Neither torch nor the library is
imported when the module loads; torch is installed through the PyTorch extension on the
first Apply.  Supported: Slicer 5.6 and newer (see docs/slicer-api-versions.md).
"""

import enum
import os
from pathlib import Path
from typing import Annotated, List, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
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

#: Strength presets (fraction of the predicted noise that is removed).
STRENGTH_PRESETS = {"low": 0.5, "medium": 0.75, "high": 1.0}
#: Milliseconds between two looks at a running job.
POLL_INTERVAL_MS = 200
#: QSettings group of the remembered choices.
SETTINGS_GROUP = "LowDoseDenoise"
#: The extension's documentation.
HOMEPAGE = "https://github.com/LowDoseDenoise/SlicerLowDoseDenoise#readme"


#
# LowDoseDenoise
#


class LowDoseDenoise(ScriptedLoadableModule):
    """Module description: title, category, help and acknowledgement."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Low-Dose CT Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["LowDoseDenoise maintainers"]
        self.parent.helpText = _(
            "Makes low-dose CT scans less grainy with a trained deep-learning model. Choose a CT volume, press "
            "Apply, and compare the result with the original in linked views; then save it as a file or as a "
            "DICOM series in the same study. The original is never changed. The result is a processed image: "
            "review it against the original before relying on it."
        )
        self.parent.helpText += _('<p>Documentation: <a href="{url}">{url}</a></p>').format(url=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "The method follows J. Pu, T. Liu, Z. Guan, S. Li, Y. Ming, Z. Cong, W. Zhang, F. Li: "
            "<i>Unsupervised Denoising of Real Clinical Low Dose Liver CT with Perceptual Attention Networks</i>, "
            "arXiv:2605.00793 (2026). Cite it, and the data sets named in the model card, when you use this "
            "module. PyTorch is provided through the PyTorch extension."
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


class NeighbourSlices(enum.Enum):
    """Whether the network sees the neighbouring slices (the engine's thick-slice rule, the CLI's --neighbours)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    def label(self) -> str:
        if self is NeighbourSlices.AUTO:
            return _("Automatic (by slice spacing)")
        return _("Always use") if self is NeighbourSlices.ON else _("Never (each slice alone)")

    def setting(self) -> Optional[bool]:
        """``neighbours`` of the engine: None (automatic, by slice spacing), True (always) or False (never)."""
        return None if self is NeighbourSlices.AUTO else self is NeighbourSlices.ON


class SelfEnsemble(enum.Enum):
    """How many passes of the network are averaged per slice (the engine's self-ensemble, the CLI's --ensemble).

    Each pass sees the slices turned or mirrored (transpose, rotations, flips); the outputs, turned back,
    are averaged. The values are strings (a combo-bound enum needs hashable values that the settings
    store as text); ``size()`` is the engine's ``ensemble``.
    """

    ONE = "1"
    TWO = "2"
    FOUR = "4"
    EIGHT = "8"

    def label(self) -> str:
        if self is SelfEnsemble.ONE:
            return _("One pass (fastest)")
        if self is SelfEnsemble.TWO:
            return _("2 passes: slice and transpose (default)")
        return _("4 passes") if self is SelfEnsemble.FOUR else _("8 passes (best, for a GPU)")

    def size(self) -> int:
        """``ensemble`` of the engine: 1, 2, 4 or 8 passes of the network per slice."""
        return int(self.value)


#: The engine's DEFAULT_ENSEMBLE, written out: the library is not imported when the module loads
#: (Testing/Python/test_slicer_module_files.py checks that the two agree).
DEFAULT_SELF_ENSEMBLE = SelfEnsemble.TWO


@parameterNodeWrapper
class LowDoseDenoiseParameterNode:
    """All GUI state; most .ui widgets bind to these fields through SlicerParameterName.

    inputVolume - the CT volume to denoise.
    outputVolume - where the result goes; None creates a new volume named after model and strength.
    previewRoi - the markups ROI that Preview denoises; None previews the slice shown in the Red view.
    model - a bundled model's name ("" for the default) or "file" for modelFile (menu filled at run time).
    modelFile - a TorchScript model file written by `lowdose-denoise export` ("" when none is chosen).
    device - "auto", "cpu", "cuda:N" or "mps" (menu filled at run time).
    strength - fraction of the predicted noise that is removed, 0..1.
    neighbours - give the network the neighbouring slices: automatically (not when the slices lie farther
        apart than in the model's training; then each slice is denoised on its own), always or never.
    ensemble - passes of the network per slice, averaged (self-ensemble): 1, 2 (the engine's default), 4 or 8.
    compareLayout - side by side, or with a third view of the difference.
    linkViews - link panning, zooming and scrolling of the comparison views.
    showComparison - show the comparison when a run finishes.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    previewRoi: vtkMRMLMarkupsROINode
    model: str = ""
    modelFile: str = ""
    device: str = "auto"
    strength: Annotated[float, WithinRange(0.0, 1.0)] = 1.0
    neighbours: NeighbourSlices = NeighbourSlices.AUTO
    ensemble: SelfEnsemble = DEFAULT_SELF_ENSEMBLE
    compareLayout: CompareLayout = CompareLayout.SIDE_BY_SIDE
    linkViews: bool = True
    showComparison: bool = True


#: Parameter-node fields remembered across sessions (qt.QSettings).
REMEMBERED = ("model", "modelFile", "device", "strength", "neighbours", "ensemble", "compareLayout",
              "linkViews", "showComparison")


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
        self._versionProblem = ""
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)

    def setup(self) -> None:
        from LowDoseDenoiseLib.slicer import compat

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LowDoseDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LowDoseDenoiseLogic()
        self._versionProblem = compat.slicer_version_problem(slicer.app.majorVersion, slicer.app.minorVersion)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.modelPathLineEdit.nameFilters = [_("TorchScript model (*.pt)")]
        self.ui.modelPathLineEdit.settingKey = SETTINGS_GROUP + "/ModelFileHistory"
        self._fillModelComboBox()
        self._fillDeviceComboBox(checkGpus=False)  # listing GPUs imports torch: only on request or Apply
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelFileChanged)
        self.ui.modelCardButton.connect("clicked()", self.onShowModelCard)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.checkEnvironmentButton.connect("clicked()", self.onCheckEnvironment)
        self.ui.lowStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["low"]))
        self.ui.mediumStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["medium"]))
        self.ui.highStrengthButton.connect("clicked()", lambda: self.setStrength(STRENGTH_PRESETS["high"]))
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.showComparisonButton.connect("clicked(bool)", self.onShowComparison)
        self.ui.endComparisonButton.connect("clicked(bool)", self.onEndComparison)
        self.ui.linkViewsCheckBox.connect("toggled(bool)", self.onLinkViewsToggled)
        self.ui.exportFileButton.connect("clicked(bool)", self.onExportFile)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.progressBar.hide()
        self.ui.environmentLabel.text = self.logic.packageSummary()
        if self._versionProblem:
            self._log("error", self._versionProblem)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelJob()
        self.removeObservers()
        self.setParameterNode(None)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onReload(self) -> None:
        """Restore the views, stop a run and reload LowDoseDenoiseLib too (not only this file)."""
        from LowDoseDenoiseLib.slicer.reloading import forget_library_modules

        self._cancelJob()
        if self.logic is not None and self.logic.denoise.comparing:
            self.logic.denoise.end_comparison()
        forget_library_modules()
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()  # no wait: the worker touches no MRML and its result is dropped
        if self.logic:
            self.logic.denoise.forget_comparison()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._restoreSettingsOnce()
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

    # -- remembered settings ------------------------------------------------------------------------
    def _restoreSettingsOnce(self) -> None:
        """Fill a new parameter node (one per scene) with the choices of the last session."""
        node = self._parameterNode
        marker = SETTINGS_GROUP + ".SettingsRestored"
        if node is None or node.parameterNode.GetAttribute(marker):
            return
        node.parameterNode.SetAttribute(marker, "1")
        settings = qt.QSettings()
        for name in REMEMBERED:
            key = f"{SETTINGS_GROUP}/{name}"
            if not settings.contains(key):
                continue
            value = settings.value(key)
            try:
                if name == "strength":
                    value = min(max(float(value), 0.0), 1.0)
                elif name == "compareLayout":
                    value = CompareLayout(str(value))
                elif name == "neighbours":
                    value = NeighbourSlices(str(value))
                elif name == "ensemble":
                    value = SelfEnsemble(str(value))
                elif name in ("linkViews", "showComparison"):
                    value = str(value).lower() in ("true", "1")
                setattr(node, name, value)
            except (TypeError, ValueError):
                settings.remove(key)  # a value from an older version: forget it
        self._selectDevice(node.device)

    def _saveSettings(self) -> None:
        node = self._parameterNode
        settings = qt.QSettings()
        for name in REMEMBERED:
            value = getattr(node, name)
            settings.setValue(f"{SETTINGS_GROUP}/{name}", value.value if isinstance(value, enum.Enum) else value)

    # -- GUI state --------------------------------------------------------------------------------
    def _updateGui(self, caller=None, event=None) -> None:
        from LowDoseDenoiseLib.slicer.modelchoice import MODEL_FILE_KEY, model_details

        node = self._parameterNode
        if node is None:
            return
        self._saveSettings()
        running = self._job is not None
        usesFile = node.model == MODEL_FILE_KEY
        self.ui.modelPathLineEdit.enabled = usesFile and not running
        self.ui.modelPathLabel.enabled = usesFile
        index = self.ui.modelComboBox.findData(node.model or self._defaultModelKey())
        if index >= 0 and index != self.ui.modelComboBox.currentIndex:
            self.ui.modelComboBox.currentIndex = index
        if self.ui.modelPathLineEdit.currentPath != node.modelFile:
            self.ui.modelPathLineEdit.currentPath = node.modelFile
        self._selectDevice(node.device)
        self.ui.modelInfoLabel.text = model_details(self.logic.modelPathOrNone(node))
        self.ui.previewButton.text = _("Preview ROI") if node.previewRoi else _("Preview current slice")
        self.ui.previewButton.enabled = node.inputVolume is not None and not running and not self._versionProblem
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop denoising; nothing is added to the scene.")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            ready = node.inputVolume is not None and not self._versionProblem
            self.ui.applyButton.enabled = ready
            self.ui.applyButton.toolTip = (
                self._versionProblem
                or (_("Denoise the input volume.") if ready else _("Select an input CT volume first."))
            )
        result = node.outputVolume
        comparable = node.inputVolume is not None and result is not None and not running
        self.ui.showComparisonButton.enabled = comparable
        self.ui.endComparisonButton.enabled = self.logic is not None and self.logic.denoise.comparing
        self.ui.exportFileButton.enabled = result is not None and not running
        self.ui.exportDicomButton.enabled = result is not None and not running
        for widget in (self.ui.inputSection, self.ui.modelSection, self.ui.strengthSection):
            widget.enabled = not running

    def _log(self, level: str, text: str) -> None:
        """Append a line to the log box (and Slicer's log)."""
        from LowDoseDenoiseLib.slicer.messages import Message

        line = Message(level, text).line()
        self.ui.logTextEdit.appendPlainText(line)
        if level == "info":
            print(f"LowDoseDenoise: {line}")
        else:
            import logging

            logging.getLogger("LowDoseDenoise").warning(line)

    def _drainMessages(self, job) -> None:
        for message in job.messages.drain():
            self._log(message.level, message.text)

    def _fillModelComboBox(self) -> None:
        from LowDoseDenoiseLib.slicer.modelchoice import model_choices

        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for choice in model_choices():
            combo.addItem(choice.label, choice.key)
            combo.setItemData(combo.count - 1, choice.details, qt.Qt.ToolTipRole)
        combo.blockSignals(wasBlocked)

    def _defaultModelKey(self) -> str:
        from LowDoseDenoiseLib.slicer.modelchoice import model_choices

        defaults = [c.key for c in model_choices() if c.default]
        return defaults[0] if defaults else ""

    def _fillDeviceComboBox(self, checkGpus: bool) -> None:
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for name, label in self.logic.deviceChoices(checkGpus):
            combo.addItem(label, name)
        combo.blockSignals(wasBlocked)

    def _selectDevice(self, device: str) -> None:
        combo = self.ui.deviceComboBox
        index = combo.findData(device)
        if index < 0 and device not in ("", "auto", "cpu"):  # a remembered GPU, not listed yet
            wasBlocked = combo.blockSignals(True)
            combo.addItem(_("{device} (checked on Apply)").format(device=device), device)
            combo.blockSignals(wasBlocked)
            index = combo.findData(device)
        if index >= 0 and index != combo.currentIndex:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def onModelFileChanged(self, path: str) -> None:
        if self._parameterNode is not None and self._parameterNode.modelFile != path:
            self._parameterNode.modelFile = path

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def onShowModelCard(self) -> None:
        from LowDoseDenoiseLib.slicer.modelchoice import model_card_path

        path = model_card_path()
        if path is None:
            qt.QDesktopServices.openUrl(qt.QUrl(HOMEPAGE))
        else:
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

    def onCheckEnvironment(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not check PyTorch."), waitCursor=True):
            self.ui.environmentLabel.text = self.logic.environmentSummary()
            self._fillDeviceComboBox(checkGpus=True)
            self._selectDevice(self._parameterNode.device if self._parameterNode else "auto")

    def setStrength(self, value: float) -> None:
        if self._parameterNode is not None:
            self._parameterNode.strength = value

    # -- running ------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Start a run in a background thread, or cancel the running one (a run or a preview)."""
        if self._job is not None:
            self._job.request_cancel()
            self.ui.statusLabel.text = _("Cancelling after the slices being denoised now (one on the CPU)…")
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start denoising."), waitCursor=True):
            self._startJob(preview=False)

    def onPreviewButton(self) -> None:
        """Denoise only the slice shown in the Red view, or the chosen ROI, for a quick look."""
        if self._job is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the preview."), waitCursor=True):
            self._startJob(preview=True)

    def _startJob(self, preview: bool) -> None:
        node = self._parameterNode
        if not self.logic.ensureDependencies(busyWidgets=[self.ui.applyButton, self.ui.previewButton,
                                                           self.ui.inputSection, self.ui.modelSection,
                                                           self.ui.strengthSection]):
            return
        self._fillDeviceComboBox(checkGpus=True)
        self._selectDevice(node.device)
        job = self._prepare(node, preview)
        if job is None:
            return
        job.start()
        self._job = job
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = _("Denoising on {device}…").format(device=job.device)
        what = job.input_name if not preview else _("{region} of '{input}' (preview)").format(
            region=job.region.label, input=job.input_name)
        passes = _("1 pass") if job.ensemble == 1 else _("{count} passes").format(count=job.ensemble)
        self._log("info", _("Started: {what} with {model}, strength {strength:g}, {passes}, on {device}.").format(
            what=what, model=job.model.summary(), strength=job.strength, passes=passes, device=job.device))
        if node.neighbours is not NeighbourSlices.AUTO:
            self._log("info", _("Neighbouring slices: {choice}.").format(choice=node.neighbours.label()))
        self._drainMessages(job)
        self._timer.start()
        self._updateGui()

    def _prepare(self, node, preview: bool = False):
        """A job (or a preview job) for the current parameters; asks before processing values that do not
        look like CT."""
        from LowDoseDenoiseLib.slicer.scene import NotCTError

        arguments = dict(model=self.logic.modelSource(node), device=node.device, strength=node.strength,
                         neighbours=node.neighbours.setting(), ensemble=node.ensemble.size())

        def prepare(**extra):
            if preview:
                return self.logic.denoise.prepare_preview(node.inputVolume, node.previewRoi, "Red", **arguments,
                                                          **extra)
            return self.logic.denoise.prepare(node.inputVolume, node.outputVolume, **arguments, **extra)

        try:
            return prepare()
        except NotCTError as error:
            if not slicer.util.confirmOkCancelDisplay(
                _("{problem}\n\nProcess it anyway?").format(problem=error), _("Not a CT volume?")
            ):
                self._log("warning", str(error))
                return None
            return prepare(allow_non_ct=True)

    def _pollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        self._drainMessages(job)
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
                if hasattr(job, "region"):  # a preview: shown at once, never the module's output volume
                    from LowDoseDenoiseLib.slicer.scene import source_volume

                    preview = self.logic.denoise.finish_preview(job)
                    self.ui.statusLabel.text = _("Preview: '{name}'. {summary}").format(
                        name=preview.GetName(), summary=job.summary.line() if job.summary else "")
                    self._compare(source_volume(preview), preview)
                    return
                output = self.logic.denoise.finish(job)
                self._parameterNode.outputVolume = output
                self.ui.statusLabel.text = _("Done: '{name}'. {summary}").format(
                    name=output.GetName(), summary=job.summary.line() if job.summary else ""
                )
                if self._parameterNode.showComparison:
                    self.onShowComparison()
        finally:
            self._drainMessages(job)
            self._updateGui()

    def _cancelJob(self) -> None:
        """Ask a running job to stop and forget it at once (no GUI block; it adds nothing)."""
        job, self._job = self._job, None
        self._timer.stop()
        if job is not None:
            job.request_cancel()

    # -- comparison -----------------------------------------------------------------------------
    def onShowComparison(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not show the comparison."), waitCursor=True):
            self._compare(node.inputVolume, node.outputVolume)
        self._updateGui()

    def _compare(self, original, result) -> None:
        node = self._parameterNode
        views = self.logic.denoise.show_comparison(
            original, result, layout=node.compareLayout.value, linked=node.linkViews, fit=False
        )
        slicer.app.processEvents()  # let Qt resize the views of the new layout before fitting
        self.logic.denoise.fit_views(views)

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
            self._log("info", self.ui.statusLabel.text)

    def onExportDicom(self) -> None:
        node = self._parameterNode.outputVolume
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Folder for the DICOM series (a new subfolder is created in it)")
        )
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            written, notes = self.logic.exportDicom(node, folder)
            for note in notes:
                self._log("warning", note)
            self.ui.statusLabel.text = _("DICOM series written to {path}").format(path=written)
            self._log("info", self.ui.statusLabel.text)


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
        self._installing = False

    def getParameterNode(self) -> LowDoseDenoiseParameterNode:
        return LowDoseDenoiseParameterNode(super().getParameterNode())

    def process(self, inputVolume, outputVolume=None, modelPath=None, device="auto", strength=1.0,
                allowNonCT=False, neighbours=None, ensemble=None):
        """Denoise ``inputVolume`` and wait for the result (scripts, self-test); returns the output node.

        ``neighbours``: None (automatic, by slice spacing), True (always use the neighbouring slices) or
        False (each slice alone), as in LowDoseDenoiseLib.engine.denoise_volume. ``ensemble``: passes of the
        network per slice, averaged (1, 2, 4 or 8; None: the engine's DEFAULT_ENSEMBLE, 2).
        """
        if not self.ensureDependencies():
            raise RuntimeError(self.torchProblem() or _("PyTorch is not available."))
        return self.denoise.process(
            inputVolume, outputVolume, model=modelPath, device=device, strength=strength, allow_non_ct=allowNonCT,
            neighbours=neighbours,
            ensemble=DEFAULT_SELF_ENSEMBLE.size() if ensemble is None else ensemble,
        )

    # -- model choice ---------------------------------------------------------------------------
    @staticmethod
    def modelPathOrNone(parameterNode: LowDoseDenoiseParameterNode) -> Optional[Path]:
        """The file the parameter node's model choice means, or None when none is chosen."""
        from LowDoseDenoiseLib.slicer.modelchoice import MODEL_FILE_KEY, model_choices

        if parameterNode.model == MODEL_FILE_KEY:
            return Path(parameterNode.modelFile) if parameterNode.modelFile else None
        choices = [c for c in model_choices() if c.path is not None]
        chosen = [c for c in choices if c.key == parameterNode.model] or [c for c in choices if c.default]
        return chosen[0].path if chosen else None

    def modelSource(self, parameterNode: LowDoseDenoiseParameterNode) -> Path:
        """The model file to run; InputError with what to do when none is chosen."""
        from LowDoseDenoiseLib.errors import InputError

        path = self.modelPathOrNone(parameterNode)
        if path is None:
            raise InputError(_("No model file is chosen; pick a .pt file or choose a bundled model."))
        return path

    # -- dependencies ---------------------------------------------------------------------------
    @staticmethod
    def torchProblem() -> str:
        from LowDoseDenoiseLib.slicer.dependencies import torch_status

        return torch_status().problem()

    @staticmethod
    def packageSummary() -> str:
        """PyTorch as the package metadata says (no import): shown when the panel opens."""
        from LowDoseDenoiseLib.slicer.dependencies import torch_status

        status = torch_status()
        if not status.installed:
            return _("PyTorch: not installed (installed on the first Apply).")
        return _("PyTorch {version} installed. Press 'Check PyTorch and GPUs' for the GPUs.").format(
            version=status.version
        ) + ("" if status.recent_enough else "\n" + status.problem())

    @staticmethod
    def environmentSummary() -> str:
        """torch version, CUDA build, GPU names and memory, upgrade hint (imports torch, guarded)."""
        from LowDoseDenoiseLib.slicer.dependencies import torch_environment

        return "\n".join(torch_environment().lines())

    @staticmethod
    def deviceChoices(checkGpus: bool) -> List[tuple]:
        """(name, label) of each device; GPUs only when ``checkGpus`` (it imports torch)."""
        from LowDoseDenoiseLib.slicer.dependencies import device_choices, torch_status

        if checkGpus and torch_status().recent_enough:
            return device_choices()
        return [("auto", _("Automatic (GPU if available)")), ("cpu", _("CPU"))]

    def ensureDependencies(self, busyWidgets=()) -> bool:
        """Install torch through the PyTorch extension after one confirmation; False if declined.

        Never installs in testing mode.  ``busyWidgets`` are disabled during the
        installation, during which Slicer processes events (no second click).
        """
        from LowDoseDenoiseLib.slicer.dependencies import MINIMUM_TORCH, install_list, torch_status

        if self._installing:
            return False
        status = torch_status()
        if status.recent_enough:
            return True
        if slicer.app.testingEnabled():
            slicer.util.errorDisplay(_("{problem} (Nothing is installed in testing mode.)").format(
                problem=status.problem()))
            return False
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
        if status.installed:  # too old: PyTorch Utils updates it, a restart is needed
            slicer.util.errorDisplay(status.problem())
            return False
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "Denoising needs these Python packages, which will be installed now through the PyTorch "
                "extension:\n\n{packages}\n\nThis needs a network connection and may take several minutes."
            ).format(packages="\n".join(f"  • {line}" for line in install_list(status))),
            _("Install Python packages"),
        ):
            return False
        self._installing = True
        enabled = [(widget, widget.enabled) for widget in busyWidgets]
        for widget, _wasEnabled in enabled:
            widget.enabled = False
        try:
            with slicer.util.WaitCursor():
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}"
                )
        finally:
            self._installing = False
            for widget, wasEnabled in enabled:
                widget.enabled = wasEnabled
        if torch is None:
            slicer.util.errorDisplay(_("PyTorch could not be installed. Install it from the PyTorch Utils module."))
            return False
        return True

    # -- DICOM export -----------------------------------------------------------------------------
    def exportDicom(self, outputVolume, folder):
        """Write ``outputVolume`` as a DICOM series in a new subfolder of ``folder``; return (path, notes).

        The series goes into the patient and study of the volume the output was made
        from (its source reference), never the current selection; see
        LowDoseDenoiseLib.slicer.dicomexport for the three routes.  The written series is
        added to Slicer's DICOM database when one is open, so it can be sent to PACS.
        """
        from LowDoseDenoiseLib.slicer import dicomexport

        source = dicomexport.check_source(outputVolume)
        database = getattr(slicer, "dicomDatabase", None)
        files = dicomexport.instance_files(database, dicomexport.source_instance_uids(source))
        plan = dicomexport.plan_export(slicer.mrmlScene, outputVolume, files)
        if plan.route is dicomexport.ExportRoute.SLICER_EXPORTER:
            written = self._exportWithSlicerPlugin(outputVolume, plan, folder)
        else:
            written = dicomexport.write_derived(
                slicer.mrmlScene, plan, dicomexport.series_folder(folder, outputVolume.GetName())
            )
        notes = list(plan.notes)
        if database is not None and database.isOpen:
            from DICOMLib import DICOMUtils

            if not DICOMUtils.importDicom(str(written), database):
                notes.append(_("The series was written but could not be added to the DICOM database."))
        return str(written), notes

    @staticmethod
    def _exportWithSlicerPlugin(volumeNode, plan, folder) -> Path:
        import DICOMScalarVolumePlugin

        from LowDoseDenoiseLib.slicer import dicomexport

        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        item = shNode.GetItemByDataNode(volumeNode)
        exporter = DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()
        exportables = exporter.examineForExport(item)
        if not exportables:
            raise RuntimeError(_("Slicer's DICOM exporter cannot export '{name}'.").format(name=volumeNode.GetName()))
        tags = dicomexport.exporter_tags(plan)  # examineForExport leaves patient and study empty
        for exportable in exportables:
            exportable.directory = str(folder)
            for tag, value in tags.items():
                exportable.setTag(tag, value)
        message = exporter.export(exportables)
        if message:
            raise RuntimeError(message)
        return dicomexport.exporter_folder(folder, item)


#
# Self-test (runs inside Slicer: Reload and Test, or ctest)
#


class LowDoseDenoiseTest(ScriptedLoadableModuleTest):
    """Loads CTLiver, keeps a few slices and runs the widget's own path: Apply, progress, Cancel,
    preview of the current slice, compare, export to a temporary folder. Installs nothing: without PyTorch it
    fails with the reason."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_WidgetPath()

    def _tinyModel(self) -> str:
        """The default bundled model when it is trained, else a small generator with random last weights."""
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

    def _slab(self):
        import SampleData

        fullVolume = SampleData.downloadSample("CTLiver")  # SampleData's own entry (not registered again)
        voxels = slicer.util.arrayFromVolume(fullVolume)
        middle = voxels.shape[0] // 2
        inputVolume = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, fullVolume, "CTLiver slab")
        ijkToRas = vtk.vtkMatrix4x4()
        fullVolume.GetIJKToRASMatrix(ijkToRas)
        origin = ijkToRas.MultiplyPoint((0, 0, middle - 3, 1))
        slicer.util.updateVolumeFromArray(inputVolume, voxels[middle - 3: middle + 3].copy())
        inputVolume.SetOrigin(origin[:3])
        return inputVolume

    def _waitForJob(self, widget, seconds=300):
        import time

        deadline = time.monotonic() + seconds
        while widget._job is not None and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        slicer.app.processEvents()
        self.assertIsNone(widget._job, "the run did not finish in time")

    def test_WidgetPath(self):
        import tempfile

        import numpy as np

        from LowDoseDenoiseLib.slicer.dependencies import torch_status

        self.assertFalse(torch_status().problem(), "the self-test needs PyTorch; it installs nothing")
        self.delayDisplay("Loading CTLiver")
        inputVolume = self._slab()
        before = slicer.util.arrayFromVolume(inputVolume).copy()

        slicer.util.selectModule("LowDoseDenoise")
        widget = slicer.modules.lowdosedenoise.widgetRepresentation().self()
        node = widget._parameterNode
        node.inputVolume = inputVolume
        node.outputVolume = None
        node.model, node.modelFile = "file", self._tinyModel()
        node.device, node.strength, node.showComparison = "cpu", 0.75, True
        node.neighbours = NeighbourSlices.AUTO
        self.assertEqual(widget.ui.neighboursComboBox.count, len(NeighbourSlices))
        node.ensemble = SelfEnsemble.ONE  # one pass: the quickest self-test
        self.assertEqual(widget.ui.ensembleComboBox.count, len(SelfEnsemble))

        self.delayDisplay("Apply, then Cancel at once: nothing is added")
        volumesBefore = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        widget.onApplyButton()
        self.assertIsNotNone(widget._job)
        self.assertEqual(widget.ui.applyButton.text, _("Cancel"))
        self.assertFalse(widget.ui.strengthSection.enabled)
        self.assertFalse(widget.ui.neighboursComboBox.enabled)  # in the strength section
        self.assertFalse(widget.ui.ensembleComboBox.enabled)
        widget.onApplyButton()  # the Apply button is Cancel now
        self._waitForJob(widget)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), volumesBefore)

        self.delayDisplay("Preview the slice in the Red view: a one-slice PREVIEW volume, compared at once")
        slicer.util.setSliceViewerLayers(background=inputVolume, fit=True)
        widget.onPreviewButton()
        self.assertEqual(widget.ui.applyButton.text, _("Cancel"))  # Cancel stops a preview too
        self._waitForJob(widget)
        previews = widget.logic.denoise.previews_of(inputVolume)
        self.assertEqual(len(previews), 1)
        self.assertIn("PREVIEW", previews[0].GetName())
        self.assertEqual(previews[0].GetImageData().GetDimensions()[2], 1)
        self.assertIsNone(node.outputVolume)  # a preview never becomes the output
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), before)
        widget.onEndComparison()

        self.delayDisplay("Apply on CPU with progress")
        widget.onApplyButton()
        self._waitForJob(widget)
        outputVolume = node.outputVolume
        self.assertIsNotNone(outputVolume)
        self.assertIn("strength 0.75", outputVolume.GetName())
        self.assertEqual(outputVolume.GetAttribute("LowDoseDenoise.Ensemble"), "1")  # the Passes choice
        self.assertIn("sha256", widget.ui.logTextEdit.toPlainText())
        after = slicer.util.arrayFromVolume(outputVolume)
        self.assertEqual(after.shape, before.shape)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), before)
        self.assertGreater(np.abs(after.astype(float) - before).max(), 0)

        self.delayDisplay("Comparison shown, then restored")
        layoutManager = slicer.app.layoutManager()
        red = layoutManager.sliceWidget("Red").mrmlSliceCompositeNode()
        yellow = layoutManager.sliceWidget("Yellow").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), inputVolume.GetID())
        self.assertEqual(yellow.GetBackgroundVolumeID(), outputVolume.GetID())
        node.compareLayout = CompareLayout.WITH_DIFFERENCE
        widget.onShowComparison()
        self.assertIsNotNone(widget.logic.denoise.difference_node)
        widget.onEndComparison()
        self.assertIsNone(widget.logic.denoise.difference_node)

        self.delayDisplay("Export to a temporary folder")
        with tempfile.TemporaryDirectory() as folder:
            written = widget.logic.denoise.export(outputVolume, os.path.join(folder, "denoised.nrrd"))
            self.assertTrue(os.path.isfile(written))
            series, _notes = widget.logic.exportDicom(outputVolume, folder)
            self.assertEqual(len([f for f in os.listdir(series) if f.endswith(".dcm")]), before.shape[0])
        self.delayDisplay("Test passed")
