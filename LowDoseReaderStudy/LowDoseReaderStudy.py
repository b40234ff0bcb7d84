"""3D Slicer module: read a blinded reader study pair by pair and score it.

Slicer glue only.  The work is done by ``LowDoseDenoiseLib.readerstudy`` (shipped by the
LowDoseDenoise module of the same extension): ``scores.ReadingSession`` (worklist, the
reader's order, the append-only score file) and ``views.ReadingViews`` (MRML: the pair
in linked side-by-side views under neutral names), both tested without Qt.  The "Plan a
study" section plans from the scene's volumes through ``sceneplan.plan_study_from_nodes``,
the same ``plan_study`` the command line (``lowdose-denoise reader-study plan``) runs;
the summary is made on the command line.
"""

import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
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

#: Score criteria keys, in the order of the .ui rows (checked against the library by the tests).
CRITERION_KEYS = ("overall", "noise", "sharpness", "artefacts", "confidence")


class LowDoseReaderStudy(ScriptedLoadableModule):
    """Module description: title, category, help and acknowledgement."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Low-Dose CT Reader Study")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["LowDoseDenoise contributors"]
        self.parent.helpText = _(
            "Plan a blinded study from CT volumes loaded in the scene (section 'Plan a study', for the "
            "coordinator; the same as <tt>lowdose-denoise reader-study plan</tt>), then read it: open the study "
            "folder (without its key folder), enter your reader id, and score each pair of images shown side by "
            "side (1-5 for overall quality, noise, sharpness, artefacts, diagnostic confidence, and which image "
            "you would rather read). Every pair is saved to disk at once; reading resumes where you stopped. "
            "Summarise with <tt>lowdose-denoise reader-study summarize</tt>."
        )
        self.parent.acknowledgementText = _(
            "Part of the LowDoseDenoise extension; the reading criteria follow the reader evaluation of "
            "J. Pu et al., arXiv:2605.00793 (2026)."
        )


@parameterNodeWrapper
class LowDoseReaderStudyParameterNode:
    """GUI state: the plan's settings (cases are ticked in the combo box), which study, which reader, the window."""

    planMethods: str = "original,model,cad"
    planReaders: str = "2"
    planSeed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    planFolder: Path
    studyFolder: Path
    readerId: str
    windowWidth: Annotated[float, WithinRange(1.0, 4000.0)] = 400.0
    windowLevel: Annotated[float, WithinRange(-1000.0, 3000.0)] = 40.0


class LowDoseReaderStudyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to a ReadingSession and ReadingViews; no reading logic of its own."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[LowDoseReaderStudyLogic] = None
        self._parameterNode: Optional[LowDoseReaderStudyParameterNode] = None
        self._parameterNodeGuiTag = None
        self.session = None
        self.views = None
        self.index: Optional[int] = None
        self.shownAt = 0.0
        self._planning = False
        self._cancelPlanning = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LowDoseReaderStudy.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LowDoseReaderStudyLogic()
        self.preferenceGroup = qt.QButtonGroup(uiWidget)
        for button in (self.ui.preferAButton, self.ui.preferBButton, self.ui.preferEqualButton):
            self.preferenceGroup.addButton(button)
        self.ui.planCasesComboBox.setMRMLScene(slicer.mrmlScene)
        self.ui.planButton.connect("clicked(bool)", self.onPlanButton)
        self.ui.startButton.connect("clicked(bool)", self.onStartButton)
        self.ui.saveNextButton.connect("clicked(bool)", self.onSaveNextButton)
        self.ui.previousButton.connect("clicked(bool)", self.onPreviousButton)
        self.ui.resetWindowButton.connect("clicked(bool)", self.onResetWindow)
        self.ui.windowWidthSpinBox.connect("valueChanged(double)", self.onWindowChanged)
        self.ui.windowLevelSpinBox.connect("valueChanged(double)", self.onWindowChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.views is not None:
            self.views.clear()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.session, self.views, self.index = None, None, None
        self._updateGui()

    def initializeParameterNode(self) -> None:
        self._parameterNode = self.logic.getParameterNode()
        if self._parameterNodeGuiTag is None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        self._updateGui()

    # -- actions ------------------------------------------------------------------------------
    def onPlanButton(self) -> None:
        if self._planning:  # the button reads Cancel while a plan runs (clicked from _showPlanProgress)
            self._cancelPlanning = True
            self.ui.planButton.enabled = False
            self.ui.planStatusLabel.text = _("Cancelling after the current step...")
            return
        self.ui.planStatusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("The study was not planned."), waitCursor=True):
            from LowDoseDenoiseLib.errors import Cancelled
            from LowDoseDenoiseLib.readerstudy import protocol

            parameters = self._parameterNode
            self._setPlanning(True)
            try:
                plan = self.logic.planStudy(
                    self.ui.planCasesComboBox.checkedNodes(), parameters.planMethods, parameters.planFolder,
                    parameters.planReaders, parameters.planSeed, progress=self._showPlanProgress,
                    cancel=lambda: self._cancelPlanning,
                )
            except Cancelled as cancelled:
                self.ui.planStatusLabel.text = str(cancelled)
                return
            finally:
                self._setPlanning(False)
            self.ui.planStatusLabel.text = _(
                "Study planned in {folder}: {cases} cases x {methods} methods ({names}), {items} pairs, readers "
                "{readers}. The key is in {key}: move it away from the readers until every reader has finished."
            ).format(folder=plan.folder, cases=plan.cases, methods=len(plan.methods), names=", ".join(plan.methods),
                     items=plan.items, readers=", ".join(plan.readers), key=plan.folder / protocol.KEY_DIR)

    def onStartButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not open the reader study."), waitCursor=True):
            self.session, self.views = self.logic.startSession(
                self._parameterNode.studyFolder, self._parameterNode.readerId
            )
            width, level = self.session.study.window
            self._parameterNode.windowWidth, self._parameterNode.windowLevel = width, level
            self._hideSliceAnnotations()
            self._show(self.session.next_index())

    def onSaveNextButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The scores were not saved."), waitCursor=True):
            item = self.session.item(self.index)
            scores = {side: {key: getattr(self.ui, f"score{side}_{key}").value or None for key in CRITERION_KEYS}
                      for side in ("A", "B")}
            self.session.record(
                item.id, scores["A"], scores["B"], self._preference(), self.ui.commentEdit.toPlainText(),
                seconds=time.monotonic() - self.shownAt,
                window=(self._parameterNode.windowWidth, self._parameterNode.windowLevel),
            )
            self._show(self.session.next_index())

    def onPreviousButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not show the previous pair."), waitCursor=True):
            current = self.session.total if self.index is None else self.index
            if current > 0:
                self._show(current - 1)

    def onResetWindow(self) -> None:
        if self.session is not None:
            self._parameterNode.windowWidth, self._parameterNode.windowLevel = self.session.study.window

    def onWindowChanged(self, value: float = 0.0) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not set the window."), waitCursor=False):
            if self.views is not None:
                self.views.set_window(self._parameterNode.windowWidth, self._parameterNode.windowLevel)

    # -- helpers ------------------------------------------------------------------------------
    def _setPlanning(self, planning: bool) -> None:
        """Plan becomes Cancel while a plan runs (on the main thread; _showPlanProgress lets clicks through)."""
        self._planning, self._cancelPlanning = planning, False
        self.ui.planButton.text = _("Cancel") if planning else _("Plan")
        self.ui.planButton.enabled = True
        for widget in (self.ui.planCasesComboBox, self.ui.planMethodsLineEdit, self.ui.planReadersLineEdit,
                       self.ui.planSeedSpinBox, self.ui.planFolderPathLineEdit, self.ui.startButton):
            widget.enabled = not planning

    def _showPlanProgress(self, message: str) -> None:
        if not self._cancelPlanning:
            self.ui.planStatusLabel.text = message
        slicer.app.processEvents()

    def _show(self, index: Optional[int]) -> None:
        self.index = index
        self._clearForm()
        if index is None:
            self.views.clear()
        else:
            item = self.session.item(index)
            self.views.show(item, (self._parameterNode.windowWidth, self._parameterNode.windowLevel))
            record = self.session.previous_record(item.id)
            if record is not None:
                self._fillForm(record)
        self.shownAt = time.monotonic()
        self._updateGui()

    def _clearForm(self) -> None:
        for side in ("A", "B"):
            for key in CRITERION_KEYS:
                getattr(self.ui, f"score{side}_{key}").value = 0
        self.preferenceGroup.setExclusive(False)
        for button in self.preferenceGroup.buttons():
            button.checked = False
        self.preferenceGroup.setExclusive(True)
        self.ui.commentEdit.setPlainText("")

    def _fillForm(self, record: dict) -> None:
        for side in ("A", "B"):
            for key in CRITERION_KEYS:
                getattr(self.ui, f"score{side}_{key}").value = int(record["scores"][side][key])
        button = {"A": self.ui.preferAButton, "B": self.ui.preferBButton, "equal": self.ui.preferEqualButton}
        button[record["preference"]].checked = True
        self.ui.commentEdit.setPlainText(record.get("comment", ""))

    def _preference(self) -> str:
        if self.ui.preferAButton.checked:
            return "A"
        if self.ui.preferBButton.checked:
            return "B"
        return "equal" if self.ui.preferEqualButton.checked else ""

    def _updateGui(self) -> None:
        reading = self.session is not None
        self.ui.saveNextButton.enabled = reading and self.index is not None
        self.ui.previousButton.enabled = reading and (self.index is None or self.index > 0)
        if not reading:
            self.ui.itemLabel.text = _("No study open")
            self.ui.progressBar.maximum, self.ui.progressBar.value = 1, 0
            return
        from LowDoseDenoiseLib.readerstudy.views import item_summary

        self.ui.progressBar.maximum, self.ui.progressBar.value = self.session.total, self.session.done
        item = None if self.index is None else self.session.item(self.index)
        self.ui.itemLabel.text = item_summary(item)
        self.ui.statusLabel.text = (
            _("All pairs are scored; thank you. Tell the study coordinator.") if self.session.finished else ""
        )

    def _hideSliceAnnotations(self) -> None:
        """The corner texts name the layers; the names are neutral, but readers need not see them."""
        try:
            annotations = slicer.modules.DataProbeInstance.infoWidget.sliceAnnotations
            annotations.sliceViewAnnotationsEnabled = False
            annotations.updateSliceViewFromGUI()
        except AttributeError:  # DataProbe not loaded (testing mode)
            pass


class LowDoseReaderStudyLogic(ScriptedLoadableModuleLogic):
    """Opens a study for one reader: a ReadingSession and ReadingViews on Slicer's scene."""

    def getParameterNode(self) -> LowDoseReaderStudyParameterNode:
        return LowDoseReaderStudyParameterNode(super().getParameterNode())

    def planStudy(self, caseNodes, methods: str, studyFolder, readers: str = "2", seed: int = 0, progress=None,
                  cancel=None):
        """Plan a blinded study from scene volume nodes into the new folder ``studyFolder``; usable from scripts.

        The same planning as ``lowdose-denoise reader-study plan`` (``readers``: a count or ids a,b,c);
        returns the library's StudyPlan.  The nodes are not modified.  ``cancel`` (a callable returning
        True, or a threading.Event) stops it with Cancelled; nothing is written then.
        """
        from LowDoseDenoiseLib.errors import InputError
        from LowDoseDenoiseLib.readerstudy.plan import parse_readers
        from LowDoseDenoiseLib.readerstudy.sceneplan import plan_study_from_nodes

        if not studyFolder or not str(studyFolder).strip() or str(studyFolder) == ".":
            raise InputError(_("Choose the new study folder first."))
        return plan_study_from_nodes(list(caseNodes), methods, studyFolder, readers=parse_readers(readers),
                                     seed=int(seed), progress=progress, scene=slicer.mrmlScene, cancel=cancel)

    def startSession(self, studyFolder, readerId: str):
        """(ReadingSession, ReadingViews) for ``readerId`` in ``studyFolder``; usable from scripts."""
        from LowDoseDenoiseLib.errors import InputError
        from LowDoseDenoiseLib.readerstudy.scores import ReadingSession
        from LowDoseDenoiseLib.readerstudy.views import ReadingViews

        if not studyFolder or not str(studyFolder).strip() or str(studyFolder) == ".":
            raise InputError(_("Choose the study folder first."))
        if not readerId or not readerId.strip():
            raise InputError(_("Enter your reader id (for example R1) first."))
        session = ReadingSession(studyFolder, readerId.strip())
        views = ReadingViews(slicer.mrmlScene, slicer.app.applicationLogic())
        return session, views


class LowDoseReaderStudyTest(ScriptedLoadableModuleTest):
    """Plans a tiny study, reads one pair through the logic and checks the saved score."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ReadOnePair()
        self.setUp()
        self.test_PlanFromScene()

    def test_ReadOnePair(self):
        import tempfile

        import numpy as np

        from LowDoseDenoiseLib.io.imagefiles import write_volume
        from LowDoseDenoiseLib.readerstudy.plan import plan_study
        from LowDoseDenoiseLib.volume import Volume

        self.delayDisplay("Planning a tiny study")
        folder = Path(tempfile.mkdtemp())
        rng = np.random.default_rng(0)
        voxels = np.rint(rng.normal(40, 30, size=(3, 48, 48))).astype(np.int16)
        voxels[:, :4] = -1000
        case = write_volume(Volume(voxels=voxels, spacing=(0.8, 0.8, 2.5)), folder / "case.nrrd")
        study = plan_study([case], "original,gaussian", folder / "study", readers=1).folder
        session, views = LowDoseReaderStudyLogic().startSession(study, "R1")
        item = session.next_item()
        nodeA, nodeB = views.show(item)
        self.assertEqual((nodeA.GetName(), nodeB.GetName()), ("Image A", "Image B"))
        scores = dict.fromkeys(CRITERION_KEYS, 4)
        session.record(item.id, scores, scores, "equal")
        self.assertTrue(session.finished)
        views.clear()
        self.delayDisplay("Test passed")

    def test_PlanFromScene(self):
        import tempfile

        import numpy as np

        from LowDoseDenoiseLib.io.imagefiles import write_volume
        from LowDoseDenoiseLib.volume import Volume

        self.delayDisplay("Planning from scene volumes")
        folder = Path(tempfile.mkdtemp())
        rng = np.random.default_rng(1)
        nodes = []
        for index in range(2):
            voxels = np.rint(rng.normal(40, 30, size=(3, 40, 40))).astype(np.int16)
            case = write_volume(Volume(voxels=voxels, spacing=(0.8, 0.8, 2.5)), folder / f"case{index}.nrrd")
            nodes.append(slicer.util.loadVolume(str(case)))
        from LowDoseDenoiseLib.errors import Cancelled

        with self.assertRaises(Cancelled):  # Cancel: nothing is written
            LowDoseReaderStudyLogic().planStudy(nodes, "original,gaussian", folder / "study", "1", 3,
                                                cancel=lambda: True)
        self.assertFalse((folder / "study").exists())
        plan = LowDoseReaderStudyLogic().planStudy(nodes, "original,gaussian", folder / "study", "1", 3)
        self.assertEqual((plan.cases, plan.items, plan.readers), (2, 2, ["R1"]))
        worklist = (plan.folder / "worklist.json").read_text()
        for node in nodes:
            self.assertNotIn(node.GetName(), worklist)
        self.delayDisplay("Test passed")
