"""MRML side of denoising: the output node beside the input, linked comparison views, export.

:class:`DenoiseLogic` works on any ``vtkMRMLScene``: the one inside 3D Slicer, or a
headless scene from the ``slicer-core`` wheel in tests and scripts.  It uses MRML
classes only (no Qt, no ``slicer.app``); torch is imported by the engine, inside the
functions that run it.

Data flows one way: input node -> voxel array and geometry -> engine -> array ->
output node.  The work is split in three steps so that a GUI can keep the scene on
its main thread and run the engine in a worker thread:

* :meth:`DenoiseLogic.prepare` (main thread) checks everything and copies the voxels;
* :meth:`DenoiseJob.run` or :meth:`DenoiseJob.start` (any thread) runs the engine and
  touches no MRML object;
* :meth:`DenoiseLogic.finish` (main thread) writes the output node.

:meth:`DenoiseLogic.process` does the three in a row, for scripts.  Nothing is added to
or changed in the scene before the engine has succeeded, so an error or a cancel
leaves the scene as it was.

The output keeps a node reference (role :data:`SOURCE_REFERENCE_ROLE`) to the volume it
was made from; the DICOM export (:mod:`.dicomexport`) files the result into *that*
volume's patient and study, never into whatever happens to be selected.  Warnings of a
run (values that do not look like CT, pixel size outside the training range, a fall
back from the GPU to the CPU, slices denoised one by one because they lie farther apart than
in the model's training) are collected in :attr:`DenoiseJob.messages`, a thread-safe
:class:`~.messages.MessageLog` the GUI drains on its main thread.

Every entry that starts a job takes ``neighbours``, the engine's thick-slice rule
(:func:`LowDoseDenoiseLib.engine.denoise_volume`): None (automatic: each slice is denoised on
its own when the slices lie farther apart than in the model's training), True (always give
the network the neighbouring slices) or False (never: each slice alone), and ``ensemble``, the
engine's self-ensemble (:data:`LowDoseDenoiseLib.engine.ENSEMBLES`: 1, 2, 4 or 8 in-plane symmetries
of each slice stack, averaged; default :data:`~LowDoseDenoiseLib.engine.DEFAULT_ENSEMBLE`).
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .. import __version__, engine
from ..errors import Cancelled, InputError, LowDoseDenoiseError
from ..modelfile import LoadedModel, load_model
from . import compat
from .messages import MessageLog, capture_thread_logs
from .preview import (
    PREVIEW_ATTRIBUTE,
    PREVIEW_REGION_ATTRIBUTE,
    PreviewRegion,
    box_ijk_to_ras,
    node_to_node_points,
    preview_region_of,
    roi_region,
    slice_region,
)

__all__ = [
    "ATTRIBUTE_PREFIX",
    "COMPARISON_LAYOUTS",
    "EXPORT_EXTENSIONS",
    "GPU_BATCH_PIXELS",
    "NEIGHBOURS_SETTINGS",
    "NOISE_SLICES",
    "OUTPUT_SUFFIX",
    "PREVIEW_SUFFIX",
    "SOURCE_REFERENCE_ROLE",
    "TEMPORARY_ATTRIBUTE",
    "VIEW_NAMES",
    "WITH_DIFFERENCE_LAYOUT_ID",
    "DenoiseJob",
    "DenoiseLogic",
    "NotCTError",
    "PreviewJob",
    "ProgressCallback",
    "RunSummary",
    "cancel_bounded_batch",
    "ijk_to_ras",
    "output_name",
    "preview_name",
    "source_volume",
    "volume_array",
    "volume_from_node",
]


ProgressCallback = Callable[[int, int], None]

#: Prefix of the provenance attributes written on the output node.
ATTRIBUTE_PREFIX = "LowDoseDenoise."
#: Attribute that marks the temporary difference volume of a comparison.
TEMPORARY_ATTRIBUTE = ATTRIBUTE_PREFIX + "Temporary"
#: Suffix of the output node's name.
OUTPUT_SUFFIX = " denoised"
#: Suffix of a preview's name (a preview is never mistaken for a whole result).
PREVIEW_SUFFIX = " denoised PREVIEW"
#: On a GPU a batch holds at most this many pixels (4 slices of 512×512), so a cancel waits
#: for at most one short batch; on the CPU every batch is one slice (see :func:`cancel_bounded_batch`).
GPU_BATCH_PIXELS = 4 * 512 * 512
#: Node reference role from an output volume to the volume it was denoised from.
SOURCE_REFERENCE_ROLE = "LowDoseDenoiseSource"
#: At most this many central slices enter the noise measurement of the run summary.
NOISE_SLICES = 5
#: Comparison layouts understood by :meth:`DenoiseLogic.show_comparison`.
COMPARISON_LAYOUTS = ("side-by-side", "with-difference")
#: ``neighbours`` (the engine's thick-slice rule) -> the provenance attribute's value, the CLI's ``--neighbours`` word.
NEIGHBOURS_SETTINGS: Dict[Optional[bool], str] = {value: word for word, value in engine.NEIGHBOURS.items()}
#: File endings :meth:`DenoiseLogic.export` writes (one file each, so the write can be atomic).
EXPORT_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha")

#: Views used by the comparison: original, denoised, difference.
VIEW_NAMES = ("Red", "Yellow", "Green")
#: Layout id registered for the three-view comparison (one row: original | denoised | difference).
WITH_DIFFERENCE_LAYOUT_ID = 7390
_WITH_DIFFERENCE_LAYOUT = (
    '<layout type="horizontal">'
    + "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
        f'<property name="orientation" action="default">Axial</property>'
        f'<property name="viewlabel" action="default">{name[0]}</property>'
        f'<property name="viewcolor" action="default">{color}</property>'
        "</view></item>"
        for name, color in zip(VIEW_NAMES, ("#F34A33", "#EDD54C", "#6EB04B"))
    )
    + "</layout>"
)


class NotCTError(InputError):
    """The input's values do not look like CT in HU; ``prepare(..., allow_non_ct=True)`` runs anyway."""


@dataclass
class RunSummary:
    """What a finished run did, for the log box and scripts.

    Noise SDs (HU) are measured with :func:`LowDoseDenoiseLib.quality.noise.measure_noise`
    (mode of the local SD in flat soft tissue) on up to :data:`NOISE_SLICES` central
    slices, the same slices before and after; NaN when the image has no flat soft tissue.
    """

    model: str
    sha256: str
    strength: float
    device: str
    seconds: float
    slices: int
    noise_in: float
    noise_out: float
    #: The self-ensemble: passes of the network per slice (``denoise_volume(ensemble=)``).
    ensemble: int = engine.DEFAULT_ENSEMBLE

    def line(self) -> str:
        """One line: model, SHA-256 prefix, strength, self-ensemble, device, time and noise before/after."""
        if np.isfinite(self.noise_in) and np.isfinite(self.noise_out):
            noise = f"noise SD {self.noise_in:.1f} -> {self.noise_out:.1f} HU in flat soft tissue"
        else:
            noise = "noise not measured (no flat soft tissue found)"
        return (
            f"{self.model} (sha256 {self.sha256[:12]}), strength {self.strength:g}, "
            f"self-ensemble ×{self.ensemble}, {self.device}, "
            f"{self.slices} slices in {self.seconds:.1f} s; {noise}"
        )


class DenoiseJob:
    """One denoising run: the inputs copied out of the scene, the engine's state and result.

    A job never touches MRML, so :meth:`run` may execute in a worker thread while the
    GUI polls :attr:`state`, :attr:`fraction` and :attr:`eta_seconds` from a timer.
    States: ``ready`` -> ``running`` (-> ``cancelling``) -> ``done`` | ``cancelled`` | ``failed``.
    The engine checks for a cancel before every batch, and the batches are kept short
    (``batch_size``, default :func:`cancel_bounded_batch`: one slice on the CPU), so a
    cancel waits for at most one batch; a cancel asked for before the job is done always
    ends it as ``cancelled``, even when the engine had already finished.
    """

    def __init__(
        self,
        input_id: str,
        input_name: str,
        output_id: Optional[str],
        voxels: np.ndarray,
        spacing: Tuple[float, float],
        model: LoadedModel,
        device: str,
        strength: float,
        messages: Optional[MessageLog] = None,
        batch_size: Optional[int] = None,
        neighbours: Optional[bool] = None,
        ensemble: int = engine.DEFAULT_ENSEMBLE,
    ):
        self.input_id = input_id
        self.input_name = input_name
        self.output_id = output_id
        self.voxels = voxels
        self.spacing = spacing
        self.model = model
        self.device = device
        self.strength = strength
        #: The engine's thick-slice rule: None automatic (by slice spacing), True always, False never
        #: give the network the neighbouring slices (see :func:`~LowDoseDenoiseLib.engine.denoise_volume`).
        self.neighbours = engine.check_neighbours(neighbours)
        #: The engine's self-ensemble: the network runs on this many in-plane symmetries of each slice
        #: stack and the outputs are averaged (1, 2, 4 or 8; see :data:`~LowDoseDenoiseLib.engine.ENSEMBLES`).
        self.ensemble = engine.check_ensemble(ensemble)
        #: Slices per engine batch; a cancel waits for at most one batch.
        self.batch_size = batch_size if batch_size is not None else cancel_bounded_batch(device, *voxels.shape[1:])
        #: Warnings and notes of this run, thread-safe; the GUI drains them on its main thread.
        self.messages = messages if messages is not None else MessageLog()
        self.summary: Optional[RunSummary] = None
        self.state = "ready"
        self.result: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self.done_slices = 0
        self.total_slices = int(voxels.shape[0])
        self._started: Optional[float] = None
        self._first_progress: Optional[Tuple[float, int]] = None
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- progress, for a GUI timer -------------------------------------------------------
    @property
    def fraction(self) -> float:
        """Fraction of slices done, 0..1."""
        return self.done_slices / self.total_slices if self.total_slices else 0.0

    @property
    def eta_seconds(self) -> Optional[float]:
        """Estimated seconds left, or None before the second progress report."""
        if self._first_progress is None or self.done_slices <= self._first_progress[1]:
            return None
        start, done0 = self._first_progress
        rate = (self.done_slices - done0) / max(time.monotonic() - start, 1e-6)
        return (self.total_slices - self.done_slices) / rate

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    # -- running ----------------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Ask the engine to stop before its next batch; the job ends as ``cancelled`` (unless already done)."""
        self._cancel.set()
        if self.state == "running":
            self.state = "cancelling"

    def run(self, progress: Optional[ProgressCallback] = None, cancel: Any = None) -> np.ndarray:
        """Run the engine here (blocking) and return the float32 result; raises on error or cancel."""
        from ..engine import denoise_volume

        if self.state != "ready":
            raise LowDoseDenoiseError(f"This denoising job has already run (state: {self.state}).")
        self.state = "cancelling" if self._cancel.is_set() else "running"
        self._started = time.monotonic()

        def report(done: int, total: int) -> None:
            self.done_slices = done
            if self._first_progress is None:
                self._first_progress = (time.monotonic(), done)
            if progress:
                progress(done, total)

        def is_cancelled() -> bool:
            if self._cancel.is_set():
                return True
            if cancel is None:
                return False
            return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())

        try:
            with capture_thread_logs(self.messages):  # engine warnings of this thread -> messages
                result = denoise_volume(
                    self.voxels,
                    model=self.model,
                    device=self.device,
                    strength=self.strength,
                    progress=report,
                    cancel=is_cancelled,
                    spacing=self.spacing,
                    batch_size=self.batch_size,
                    neighbours=self.neighbours,
                    ensemble=self.ensemble,
                )
                self.summary = self._summarise(result, time.monotonic() - self._started)
                if is_cancelled():  # asked for after the last batch: still a cancel, nothing is kept
                    raise Cancelled("Denoising was cancelled; nothing was written.")
        except Cancelled as error:
            self.error, self.state = error, "cancelled"
            self.messages.info("Cancelled; nothing was added to the scene.")
            raise
        except BaseException as error:
            self.error, self.state = error, "failed"
            self.messages.error(str(error) or type(error).__name__)
            raise
        self.result = result
        self.messages.info(self.summary.line())
        self.state = "done"
        return self.result

    def _summarise(self, result: np.ndarray, seconds: float) -> RunSummary:
        from ..quality.noise import measure_noise

        depth = self.voxels.shape[0]
        start = max(0, depth // 2 - NOISE_SLICES // 2)
        stop = min(depth, start + NOISE_SLICES)

        def noise_sd(hu: np.ndarray) -> float:
            try:
                return float(measure_noise(hu).sd)
            except InputError:  # a slice smaller than the noise window: the summary says "not measured"
                return float("nan")

        noise_in = noise_sd(self.voxels[start:stop].astype(np.float32))
        noise_out = noise_sd(result[start:stop])
        return RunSummary(
            model=f"{self.model.name} {self.model.version}",
            sha256=self.model.sha256,
            strength=self.strength,
            device=self.device,
            seconds=seconds,
            slices=depth,
            noise_in=float(noise_in),
            noise_out=float(noise_out),
            ensemble=self.ensemble,
        )

    def start(self) -> None:
        """Run the engine in a daemon thread; poll :attr:`finished` or call :meth:`wait`."""

        def target() -> None:
            try:
                self.run()
            except BaseException:  # recorded in self.error and self.state
                pass

        self._thread = threading.Thread(target=target, name="LowDoseDenoise", daemon=True)
        self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a started job has finished (for scripts and tests); True when finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished


class PreviewJob(DenoiseJob):
    """A :class:`DenoiseJob` for a preview: the engine runs on :attr:`region`'s slices (plus
    context) only, and :meth:`DenoiseLogic.finish_preview` keeps the box of the region."""

    def __init__(self, *args: Any, region: PreviewRegion, input_dims: Tuple[int, int, int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: The box of the input that the preview shows, and the slices read for it.
        self.region = region
        #: (x, y, z) size of the whole input when the preview was prepared.
        self.input_dims = input_dims

    @property
    def preview(self) -> Optional[np.ndarray]:
        """The float32 result cut to the region's box, once done."""
        return None if self.result is None else self.region.cut(self.result)


@dataclass
class _ViewState:
    """What one slice view showed before the comparison, to put it back afterwards."""

    background_id: Optional[str]
    foreground_id: Optional[str]
    label_id: Optional[str]
    foreground_opacity: float
    linked: int
    hot_linked: int
    slice_to_ras: Any
    field_of_view: Tuple[float, float, float]
    xyz_origin: Tuple[float, float, float]


@dataclass
class _ComparisonState:
    layout: int
    views: Dict[str, _ViewState] = field(default_factory=dict)
    difference_id: Optional[str] = None
    focus_id: Optional[str] = None  # a preview: the views are fitted to it, not to the whole input


class DenoiseLogic:
    """Denoise volume nodes of one MRML scene, compare the result with the original, export it.

    ``application_logic`` (``slicer.app.applicationLogic()`` inside Slicer) is optional;
    when given, the comparison views are fitted to the volumes.
    """

    def __init__(self, scene, application_logic=None):
        if scene is None:
            raise InputError("DenoiseLogic needs an MRML scene.")
        self.scene = scene
        self.application_logic = application_logic
        self._comparison: Optional[_ComparisonState] = None

    # -- denoising ----------------------------------------------------------------------------
    def process(
        self,
        input_node,
        output_node=None,
        model: Union[LoadedModel, str, Path, None] = None,
        device: str = "auto",
        strength: float = 1.0,
        progress: Optional[ProgressCallback] = None,
        cancel: Any = None,
        allow_non_ct: bool = False,
        messages: Optional[MessageLog] = None,
        neighbours: Optional[bool] = None,
        ensemble: int = engine.DEFAULT_ENSEMBLE,
    ):
        """Denoise ``input_node`` and return the output volume node.

        Usable without any GUI.  ``output_node`` None creates a new node named after
        the input, the model and the strength ("CT denoised (model 1.0, strength 0.75)");
        an existing scalar volume node is overwritten but keeps its name.  ``model`` is a
        LoadedModel, a model file or None for the bundled model; ``progress(done, total)``
        and ``cancel`` (a callable or an Event) are passed to the engine.  Values that do
        not look like CT in HU raise :class:`NotCTError` unless ``allow_non_ct``.  The
        run's warnings and summary go to ``messages`` (or a new log, see
        :attr:`DenoiseJob.messages`).  ``neighbours`` is the engine's thick-slice rule: None
        (automatic: each slice alone when the slices lie farther apart than in the model's
        training), True (always use the neighbouring slices), False (each slice alone).
        ``ensemble`` is the engine's self-ensemble: the network runs on 1, 2, 4 or 8 in-plane
        symmetries of each slice stack and the outputs are averaged (1 is the fastest; the
        default :data:`~LowDoseDenoiseLib.engine.DEFAULT_ENSEMBLE` costs two passes).  On
        error or cancel the scene is unchanged.
        """
        job = self.prepare(
            input_node,
            output_node,
            model=model,
            device=device,
            strength=strength,
            allow_non_ct=allow_non_ct,
            messages=messages,
            neighbours=neighbours,
            ensemble=ensemble,
        )
        job.run(progress=progress, cancel=cancel)
        return self.finish(job)

    def prepare(
        self,
        input_node,
        output_node=None,
        model: Union[LoadedModel, str, Path, None] = None,
        device: str = "auto",
        strength: float = 1.0,
        allow_non_ct: bool = False,
        messages: Optional[MessageLog] = None,
        neighbours: Optional[bool] = None,
        ensemble: int = engine.DEFAULT_ENSEMBLE,
    ) -> DenoiseJob:
        """Check the input, output, model, device, strength, neighbours and ensemble; copy the voxels into a job.

        ``neighbours``: None (automatic, by slice spacing), True or False, and ``ensemble``: 1, 2, 4
        or 8 (an int, not a bool or a string), as :func:`~LowDoseDenoiseLib.engine.denoise_volume`
        takes them; anything else is an InputError.
        Raises InputError, ModelError or DeviceError with a message for the user, and
        :class:`NotCTError` when the values do not look like CT in HU (an MR, an 8-bit
        picture, a parameter map) unless ``allow_non_ct``, in which case the job's
        messages carry the warning.  The scene is not changed.
        """
        return self._prepare(input_node, output_node, model, device, strength, allow_non_ct, messages,
                             neighbours=neighbours, ensemble=ensemble)

    def prepare_preview(
        self,
        input_node,
        roi_node=None,
        view: str = "Red",
        model: Union[LoadedModel, str, Path, None] = None,
        device: str = "auto",
        strength: float = 1.0,
        allow_non_ct: bool = False,
        messages: Optional[MessageLog] = None,
        neighbours: Optional[bool] = None,
        ensemble: int = engine.DEFAULT_ENSEMBLE,
    ) -> PreviewJob:
        """A job that denoises only the slice shown in ``view`` or, with ``roi_node``, the ROI's voxels.

        The region is found now (see :mod:`.preview`): the input slice through the centre
        of the ``view`` slice view, or the input voxels in ``roi_node``'s box; the engine
        gets those whole slices plus the model's neighbouring slices as context, so the
        preview equals a full run with the same ``neighbours`` and ``ensemble`` at its voxels
        (with each slice alone, the context slices are read but unused; the thick-slice rule
        looks at the slice spacing, which the region shares with the input; the self-ensemble's
        symmetries act on whole slices).  Checks and errors as :meth:`prepare`;
        the CT check looks at the whole input (a small ROI inside the liver would look 8-bit).
        The scene is not changed.
        """
        return self._prepare(input_node, None, model, device, strength, allow_non_ct, messages,
                             preview=(roi_node, view), neighbours=neighbours, ensemble=ensemble)

    def _prepare(self, input_node, output_node, model, device, strength, allow_non_ct, messages, preview=None,
                 neighbours=None, ensemble=engine.DEFAULT_ENSEMBLE):
        from ..engine import ct_range_problem, resolve_device

        log = messages if messages is not None else MessageLog()
        image = self._check_input(input_node)
        if output_node is not None:
            self._check_output(output_node, input_node)
        strength = _check_strength(strength)
        neighbours = engine.check_neighbours(neighbours)
        ensemble = engine.check_ensemble(ensemble)
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        dims = image.GetDimensions()
        if min(dims[0], dims[1]) < loaded.min_size:
            raise InputError(
                f"'{input_node.GetName()}' is {dims[0]}×{dims[1]} pixels in-plane, below the minimum of "
                f"{loaded.min_size}×{loaded.min_size} of the model '{loaded.name}'; choose a larger volume "
                "or region."
            )
        region = None
        if preview is not None:
            roi_node, view = preview
            if roi_node is not None:
                if roi_node.GetScene() is not self.scene:
                    raise InputError(f"The ROI '{roi_node.GetName()}' belongs to another scene.")
                region = roi_region(input_node, roi_node, loaded.context)
            else:
                region = slice_region(input_node, self._slice_node(view), loaded.context, view)
        target = resolve_device(device)
        view_voxels = _voxel_view(image)
        problem = ct_range_problem(view_voxels)  # the whole input, read in place
        if problem:
            if not allow_non_ct:
                raise NotCTError(
                    f"'{input_node.GetName()}' does not look like CT in Hounsfield units: {problem}. "
                    "The model is trained on CT only; choose a CT volume, or confirm to process it anyway."
                )
            log.warning(f"'{input_node.GetName()}': {problem}; processed anyway, as asked.")
        read = slice(*region.read) if region is not None else slice(None)
        voxels = np.array(view_voxels[read], copy=True)  # the worker must never see VTK memory
        voxels.flags.writeable = False
        spacing = input_node.GetSpacing()
        arguments: Dict[str, Any] = dict(
            input_id=input_node.GetID(),
            input_name=input_node.GetName() or "volume",
            output_id=output_node.GetID() if output_node is not None else None,
            voxels=voxels,
            # in-plane sizes for the pixel-size check, the slice spacing for the thick-slice rule
            spacing=(float(spacing[1]), float(spacing[0]), float(spacing[2])),
            model=loaded,
            device=str(target),
            strength=strength,
            messages=log,
            neighbours=neighbours,
            ensemble=ensemble,
        )
        if region is None:
            return DenoiseJob(**arguments)
        return PreviewJob(region=region, input_dims=(int(dims[0]), int(dims[1]), int(dims[2])), **arguments)

    def preview(
        self,
        input_node,
        roi_node=None,
        view: str = "Red",
        model: Union[LoadedModel, str, Path, None] = None,
        device: str = "auto",
        strength: float = 1.0,
        progress: Optional[ProgressCallback] = None,
        cancel: Any = None,
        allow_non_ct: bool = False,
        messages: Optional[MessageLog] = None,
        neighbours: Optional[bool] = None,
        ensemble: int = engine.DEFAULT_ENSEMBLE,
    ):
        """Denoise the slice shown in ``view`` (or the ``roi_node`` box) and return the preview volume.

        :meth:`prepare_preview`, :meth:`DenoiseJob.run` and :meth:`finish_preview` in a row,
        for scripts; on error or cancel the scene is unchanged.
        """
        job = self.prepare_preview(input_node, roi_node, view, model=model, device=device, strength=strength,
                                   allow_non_ct=allow_non_ct, messages=messages, neighbours=neighbours,
                                   ensemble=ensemble)
        job.run(progress=progress, cancel=cancel)
        return self.finish_preview(job)

    def finish_preview(self, job: PreviewJob, replace: bool = True):
        """Add a finished preview as a small volume of the region's box (main thread); return the node.

        The volume has the input's voxel grid (spacing, directions) with its origin at the
        box's first voxel, the input's parent transform, display and study, a source
        reference to the input, and :data:`~.preview.PREVIEW_ATTRIBUTE` /
        :data:`~.preview.PREVIEW_REGION_ATTRIBUTE`; its name says PREVIEW and what it shows.
        Outside the box a view shows nothing, so a preview is never mistaken for a whole
        result.  ``replace`` removes the earlier previews of the same input (only once the
        new one is in place).  The input is never changed.
        """
        from ..volume import cast_like

        if job.error is not None:
            raise job.error
        if job.result is None:
            raise LowDoseDenoiseError("This preview has not run yet; call run() or start() first.")
        input_node = self._job_input(job)
        image = self._check_input(input_node)
        if tuple(image.GetDimensions()) != tuple(job.input_dims):
            raise InputError(
                f"The input volume '{job.input_name}' changed size while the preview was made; nothing was "
                "added. Run the preview again."
            )
        region = job.region
        box = np.ascontiguousarray(cast_like(region.cut(job.result), _voxel_view(image).dtype))
        new_image = vtk.vtkImageData()
        new_image.SetDimensions(box.shape[2], box.shape[1], box.shape[0])
        new_image.AllocateScalars(image.GetScalarType(), 1)
        _voxel_view(new_image)[...] = box
        earlier = self.previews_of(input_node) if replace else []
        name = self.scene.GenerateUniqueName(preview_name(job.input_name, region, job.model, job.strength))
        node: Any = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        try:
            was_modifying = node.StartModify()
            try:
                node.SetIJKToRASMatrix(_vtk_matrix(box_ijk_to_ras(input_node, region)))
                node.SetAndObserveImageData(new_image)
                node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
                node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, input_node.GetID())
                self._write_provenance(node, job, input_node)
                node.SetAttribute(PREVIEW_ATTRIBUTE, region.label)
                node.SetAttribute(PREVIEW_REGION_ATTRIBUTE, region.attribute())
                node.SetDescription(f"PREVIEW of {region.label} only. " + (node.GetDescription() or ""))
            finally:
                node.EndModify(was_modifying)
            self._copy_display(input_node, node)
            self._place_in_hierarchy(input_node, node)
        except BaseException:
            self._remove_node(node)
            raise
        for old in earlier:
            if old.GetScene() is self.scene:
                self._remove_node(old)
        return node

    def previews_of(self, input_node) -> List[Any]:
        """The preview volumes in the scene made from ``input_node``."""
        found = []
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            if node.GetAttribute(PREVIEW_ATTRIBUTE) and source_volume(node) is input_node:
                found.append(node)
        return found

    def _job_input(self, job: DenoiseJob):
        input_node = self.scene.GetNodeByID(job.input_id)
        if input_node is None:
            raise InputError(
                f"The input volume '{job.input_name}' was removed from the scene while it was being "
                "denoised; nothing was added."
            )
        return input_node

    def finish(self, job: DenoiseJob):
        """Write a finished job's result into the output node (main thread); return the node."""
        from ..volume import cast_like

        if job.error is not None:
            raise job.error
        if job.result is None:
            raise LowDoseDenoiseError("This denoising job has not run yet; call run() or start() first.")
        if isinstance(job, PreviewJob):
            raise LowDoseDenoiseError("This is a preview job; add it with finish_preview().")
        input_node = self._job_input(job)
        image = self._check_input(input_node)
        if tuple(image.GetDimensions()) != tuple(reversed(job.result.shape)):
            raise InputError(
                f"The input volume '{job.input_name}' changed size while it was being denoised; "
                "nothing was added. Run again."
            )
        output_node = self.scene.GetNodeByID(job.output_id) if job.output_id else None
        if output_node is not None:
            self._check_output(output_node, input_node)

        voxels = cast_like(job.result, _voxel_view(image).dtype)
        new_image = vtk.vtkImageData()
        new_image.SetDimensions(image.GetDimensions())
        new_image.AllocateScalars(image.GetScalarType(), 1)
        _voxel_view(new_image)[...] = voxels

        created = output_node is None
        node: Any = output_node  # a vtkMRMLScalarVolumeNode once created below
        try:
            if created:
                name = self.scene.GenerateUniqueName(output_name(job.input_name, job.model, job.strength))
                node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            was_modifying = node.StartModify()
            try:
                node.CopyOrientation(input_node)  # the full IJK-to-RAS matrix, oblique included
                node.SetAndObserveImageData(new_image)
                # under a transform, the result must sit where the input is shown
                node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
                node.SetNodeReferenceID(SOURCE_REFERENCE_ROLE, input_node.GetID())
                self._write_provenance(node, job, input_node)
            finally:
                node.EndModify(was_modifying)
            self._copy_display(input_node, node)
            self._place_in_hierarchy(input_node, node)
        except BaseException:
            if created and node is not None:
                self._remove_node(node)
            raise
        return node

    # -- comparison ---------------------------------------------------------------------------
    def show_comparison(
        self,
        original,
        denoised,
        layout: str = "side-by-side",
        linked: bool = True,
        orientation: str = "Axial",
        fit: bool = True,
    ) -> List[str]:
        """Show ``original`` and ``denoised`` side by side in linked views; return the view names.

        Each view gets its own background volume, the same orientation and the
        original's window/level.  ``with-difference`` adds a third view of (denoised −
        original), a temporary volume with a symmetric window that :meth:`end_comparison`
        removes.  :meth:`end_comparison` also restores the previous layout and views.
        ``fit`` False leaves fitting to the caller: inside Slicer the views get their new
        size only after Qt has processed the layout change, so the GUI processes events
        first and then calls :meth:`fit_views` (as CompareVolumes does).

        ``denoised`` may be a preview of ``original`` (:meth:`finish_preview`): the views
        are then turned to the original's slice plane, centred on the preview and fitted
        to it, and the difference covers the preview's box.
        """
        if layout not in COMPARISON_LAYOUTS:
            raise InputError(f"Unknown comparison layout '{layout}'; use one of {', '.join(COMPARISON_LAYOUTS)}.")
        for role, node in (("original", original), ("denoised", denoised)):
            self._check_volume(node, role)
        box = preview_region_of(denoised, original) if source_volume(denoised) is original else None
        same_size = tuple(original.GetImageData().GetDimensions()) == tuple(denoised.GetImageData().GetDimensions())
        if box is None and not same_size:
            raise InputError(
                f"'{original.GetName()}' and '{denoised.GetName()}' have different sizes; compare a volume "
                "with its own denoised result."
            )
        layout_node = self._layout_node()
        names = list(VIEW_NAMES[: 3 if layout == "with-difference" else 2])
        composites = {name: self._composite_node(name) for name in names}
        slices = {name: self._slice_node(name) for name in names}
        if self._comparison is None:
            state = _ComparisonState(layout=layout_node.GetViewArrangement())
            for name in VIEW_NAMES:
                composite, slice_node = self._find_composite_node(name), self._find_slice_node(name)
                if composite is not None and slice_node is not None:
                    state.views[name] = _save_view(composite, slice_node)
            self._comparison = state
        else:
            self._restore_views(keep_difference=False)

        difference = None
        self._comparison.focus_id = denoised.GetID() if box is not None else None
        if layout == "with-difference":
            difference = self._make_difference(original, denoised, box)
            self._comparison.difference_id = difference.GetID()
        self._match_window_level(original, denoised)

        if layout == "with-difference":
            if not layout_node.IsLayoutDescription(WITH_DIFFERENCE_LAYOUT_ID):
                layout_node.AddLayoutDescription(WITH_DIFFERENCE_LAYOUT_ID, _WITH_DIFFERENCE_LAYOUT)
            layout_node.SetViewArrangement(WITH_DIFFERENCE_LAYOUT_ID)
        else:
            layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        volumes = [original, denoised, difference]
        for name, volume in zip(names, volumes):
            composite = composites[name]
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)
            slices[name].SetOrientation(orientation)
        if box is not None:
            self._focus_on_preview(original, denoised, [slices[name] for name in names])
        if fit:
            self.fit_views(names)
        self.set_linked(linked)
        return names

    def set_linked(self, linked: bool) -> None:
        """Link (and hot-link) the comparison views so panning, zooming and scrolling move all."""
        if self._comparison is None:
            return
        for name in self._comparison_view_names():
            composite = self._find_composite_node(name)
            if composite is not None:
                composite.SetLinkedControl(1 if linked else 0)
                composite.SetHotLinkedControl(1 if linked else 0)

    @property
    def comparing(self) -> bool:
        """True while a comparison is shown."""
        return self._comparison is not None

    @property
    def difference_node(self):
        """The temporary difference volume of the current comparison, or None."""
        if self._comparison is None or not self._comparison.difference_id:
            return None
        return self.scene.GetNodeByID(self._comparison.difference_id)

    def end_comparison(self) -> bool:
        """Restore the layout and views from before :meth:`show_comparison`; False if none was shown."""
        if self._comparison is None:
            return False
        state = self._comparison
        self._restore_views(keep_difference=False)
        layout_node = self._find_layout_node()
        if layout_node is not None:
            layout_node.SetViewArrangement(state.layout)
        self._comparison = None
        return True

    def forget_comparison(self) -> None:
        """Drop the saved view state without restoring it (the scene is being closed)."""
        self._comparison = None

    # -- export -------------------------------------------------------------------------------
    def export(self, node, path: Union[str, Path], overwrite: bool = False, compress: bool = True) -> Path:
        """Write a volume node to NRRD, NIfTI (.nii, .nii.gz) or MHA through an MRML storage node.

        The storage node is not added to the scene, so the node's own storage is not
        changed.  The file is written next to the target and renamed into place.
        """
        self._check_volume(node, "volume to export")
        path = Path(path)
        name = path.name.lower()
        suffix = next((ext for ext in sorted(EXPORT_EXTENSIONS, key=len, reverse=True) if name.endswith(ext)), None)
        if suffix is None:
            raise InputError(f"{path.name}: unknown file type; use .nrrd, .nii, .nii.gz or .mha.")
        from ..io.outputs import atomic_file, check_output

        check_output(path, overwrite=overwrite, overwrite_hint="allow overwriting")
        storage = node.CreateDefaultStorageNode()
        if storage is None or not storage.IsA("vtkMRMLVolumeArchetypeStorageNode"):
            raise InputError(f"'{node.GetName()}' cannot be written as an image file.")
        with atomic_file(path) as handle:
            storage.SetFileName(str(handle.path))
            storage.SetUseCompression(1 if compress else 0)
            if not storage.WriteData(node):
                raise InputError(f"Could not write {path}; check the disk space and the folder's permissions.")
        return path

    # -- checks -------------------------------------------------------------------------------
    def _check_volume(self, node, role: str):
        if node is None:
            raise InputError(f"No {role} is selected; choose a CT volume.")
        if not node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"'{node.GetName()}' ({role}) is a {node.GetClassName()}, not a CT volume.")
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(
                f"'{node.GetName()}' ({role}) is a label map (a segmentation), not a CT image; "
                "choose the CT volume itself."
            )
        if node.GetScene() is not self.scene:
            raise InputError(f"'{node.GetName()}' ({role}) belongs to another scene.")
        image = node.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputError(f"'{node.GetName()}' ({role}) holds no voxels; load the image data first.")
        components = image.GetNumberOfScalarComponents()
        if components != 1 or node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputError(
                f"'{node.GetName()}' ({role}) has {components} components per voxel (a colour or vector "
                "image); choose a scalar (grey-scale) CT volume."
            )
        return image

    def _check_input(self, node):
        image = self._check_volume(node, "input volume")
        dims = image.GetDimensions()
        if min(dims) < 2:
            raise InputError(
                f"'{node.GetName()}' is a 2D image ({dims[0]}×{dims[1]}×{dims[2]} voxels); "
                "choose a 3D CT volume (a series of slices)."
            )
        return image

    def _check_output(self, node, input_node) -> None:
        if node is input_node or node.GetID() == input_node.GetID():
            raise InputError(
                "The output volume is the input volume itself; choose 'Create new volume' so the original "
                "stays unchanged."
            )
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"The output '{node.GetName()}' is not a scalar volume; choose 'Create new volume'.")
        if node.IsA("vtkMRMLVectorVolumeNode"):
            raise InputError(f"The output '{node.GetName()}' is a vector volume; choose 'Create new volume'.")
        if node.GetScene() is not self.scene:
            raise InputError(f"The output '{node.GetName()}' belongs to another scene.")

    # -- output node helpers --------------------------------------------------------------------
    def _write_provenance(self, node, job: DenoiseJob, input_node) -> None:
        for name in list(node.GetAttributeNames() or ()):
            if name.startswith(("DICOM.", ATTRIBUTE_PREFIX)):
                node.RemoveAttribute(name)
        training = job.model.metadata.get("training", {})
        dose = training.get("dose_fraction")
        values = {
            "ModelName": job.model.name,
            "ModelVersion": job.model.version,
            "ModelSHA256": job.model.sha256,
            "ModelTrained": "yes" if training.get("trained", True) else "no",
            "TrainingDose": f"{dose[0]:g}-{dose[1]:g}" if dose else "",
            "Strength": f"{job.strength:g}",
            "Neighbours": NEIGHBOURS_SETTINGS[job.neighbours],  # the thick-slice rule, as --neighbours says it
            "Ensemble": str(job.ensemble),  # the self-ensemble, as --ensemble says it
            "Device": job.device,
            "Date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "Software": f"LowDoseDenoise {__version__}",
            "SourceVolume": input_node.GetName() or "",
        }
        for key, value in values.items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
        node.SetDescription(
            f"Denoised from '{input_node.GetName()}' with {job.model.summary()}, strength {job.strength:g}, "
            f"self-ensemble ×{job.ensemble}, on {job.device}. Not for diagnosis unless validated at your site."
        )

    def _copy_display(self, source, target) -> None:
        target.CreateDefaultDisplayNodes()
        src, dst = source.GetDisplayNode(), target.GetDisplayNode()
        if src is None or dst is None:
            return
        was_modifying = dst.StartModify()
        try:
            if src.GetColorNodeID():
                dst.SetAndObserveColorNodeID(src.GetColorNodeID())
            dst.SetAutoWindowLevel(0)
            dst.SetWindowLevel(src.GetWindow(), src.GetLevel())
            dst.SetInterpolate(src.GetInterpolate())
        finally:
            dst.EndModify(was_modifying)

    def _subject_hierarchy(self):
        return self.scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")

    def _place_in_hierarchy(self, input_node, node) -> None:
        sh = self._subject_hierarchy()
        if sh is None:
            return
        input_item = sh.GetItemByDataNode(input_node)
        parent = sh.GetItemParent(input_item) if input_item else sh.GetSceneItemID()
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:
            item = sh.CreateItem(parent, node)
        # a reused node must not keep the original's DICOM UIDs and attributes
        compat.clear_item_dicom_identity(sh, item, parent)

    def _remove_node(self, node) -> None:
        """Remove a node we created, with its display and storage nodes and its hierarchy item."""
        sh = self._subject_hierarchy()
        if sh is not None:
            item = sh.GetItemByDataNode(node)
            if item:
                sh.RemoveItem(item, False, False)
        dependents = []
        if node.IsA("vtkMRMLDisplayableNode"):
            dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        if node.GetScene() is self.scene:
            self.scene.RemoveNode(node)
        for dependent in dependents:
            if dependent is not None and dependent.GetScene() is self.scene:
                self.scene.RemoveNode(dependent)

    # -- comparison helpers -------------------------------------------------------------------
    def _find_layout_node(self):
        return self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")

    def _layout_node(self):
        node = self._find_layout_node()
        if node is None:
            raise LowDoseDenoiseError(
                "This scene has no view layout, so there are no views to compare in; the comparison "
                "needs Slicer's slice views (or a vtkMRMLLayoutLogic in a script)."
            )
        return node

    def _find_by_layout_name(self, class_name: str, name: str):
        for i in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(i, class_name)
            if node.GetLayoutName() == name:
                return node
        return None

    def _find_slice_node(self, name: str):
        return self._find_by_layout_name("vtkMRMLSliceNode", name)

    def _find_composite_node(self, name: str):
        return self._find_by_layout_name("vtkMRMLSliceCompositeNode", name)

    def _slice_node(self, name: str):
        node = self._find_slice_node(name)
        if node is None:
            raise LowDoseDenoiseError(f"The {name} slice view does not exist in this scene; reset the layout.")
        return node

    def _composite_node(self, name: str):
        node = self._find_composite_node(name)
        if node is None:
            raise LowDoseDenoiseError(f"The {name} slice view has no layers (composite node); reset the layout.")
        return node

    def _comparison_view_names(self) -> List[str]:
        has_difference = self._comparison is not None and bool(self._comparison.difference_id)
        return list(VIEW_NAMES[: 3 if has_difference else 2])

    def _make_difference(self, original, denoised, box=None):
        """A temporary float volume (denoised − original) with a symmetric window around 0.

        ``box`` ((z0, z1), (y0, y1), (x0, x1)): ``denoised`` is a preview of that box of ``original``.
        """
        original_voxels = _voxel_view(original.GetImageData())
        if box is not None:
            original_voxels = original_voxels[tuple(slice(*interval) for interval in box)]
        difference = _voxel_view(denoised.GetImageData()).astype(np.float32) - original_voxels.astype(np.float32)
        image = vtk.vtkImageData()
        image.SetDimensions(denoised.GetImageData().GetDimensions())
        image.AllocateScalars(vtk.VTK_FLOAT, 1)
        _voxel_view(image)[...] = difference
        node = self.scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", f"{denoised.GetName()} minus {original.GetName()}"
        )
        try:
            node.CopyOrientation(denoised)
            node.SetAndObserveImageData(image)
            node.SetAndObserveTransformNodeID(denoised.GetTransformNodeID())
            node.SetAttribute(TEMPORARY_ATTRIBUTE, "1")
            node.SetHideFromEditors(1)
            node.SetSaveWithScene(0)
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            half_width = float(np.percentile(np.abs(difference), 99.5)) if difference.size else 0.0
            half_width = max(half_width, 1.0)
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(2.0 * half_width, 0.0)
            display.SetSaveWithScene(0)
        except BaseException:
            self._remove_node(node)
            raise
        return node

    def _match_window_level(self, original, denoised) -> None:
        src, dst = original.GetDisplayNode(), denoised.GetDisplayNode()
        if src is None:
            return
        if dst is None:
            denoised.CreateDefaultDisplayNodes()
            dst = denoised.GetDisplayNode()
        if (dst.GetWindow(), dst.GetLevel()) != (src.GetWindow(), src.GetLevel()) or dst.GetAutoWindowLevel():
            dst.SetAutoWindowLevel(0)
            dst.SetWindowLevel(src.GetWindow(), src.GetLevel())

    def fit_views(self, names: Optional[List[str]] = None) -> None:
        """Fit the slice views ``names`` (default: the comparison's) to their volumes, or to the
        preview when a preview is compared (so each view shows the previewed part)."""
        if names is None:
            names = self._comparison_view_names() if self._comparison is not None else []
        logic = self.application_logic
        if logic is None:
            return
        focus_id = self._comparison.focus_id if self._comparison is not None else None
        focus = self.scene.GetNodeByID(focus_id) if focus_id else None
        for name in names:
            slice_logic = logic.GetSliceLogicByLayoutName(name)
            if slice_logic is None:
                continue
            if focus is not None:
                dims = slice_logic.GetSliceNode().GetDimensions()
                slice_logic.FitSliceToVolume(focus, dims[0], dims[1])
            else:
                slice_logic.FitSliceToAll()

    def _focus_on_preview(self, original, preview, slice_nodes: List[Any]) -> None:
        """Turn the views to the original's slice plane and centre them on the preview's middle."""
        dims = preview.GetImageData().GetDimensions()
        middle_ijk = np.array([(dims[0] - 1) / 2.0, (dims[1] - 1) / 2.0, (dims[2] - 1) / 2.0, 1.0])
        middle = node_to_node_points(preview, None, [(ijk_to_ras(preview) @ middle_ijk)[:3]])[0]
        for slice_node in slice_nodes:
            slice_node.RotateToVolumePlane(original)
            slice_node.JumpSliceByCentering(*middle)

    def _restore_views(self, keep_difference: bool) -> None:
        state = self._comparison
        if state is None:
            return
        for name, view in state.views.items():
            composite, slice_node = self._find_composite_node(name), self._find_slice_node(name)
            if composite is None or slice_node is None:
                continue
            composite.SetLinkedControl(0)
            composite.SetHotLinkedControl(0)
            slice_node.GetSliceToRAS().DeepCopy(view.slice_to_ras)
            slice_node.SetFieldOfView(*view.field_of_view)
            slice_node.SetXYZOrigin(*view.xyz_origin)
            slice_node.UpdateMatrices()
            for setter, node_id in (
                (composite.SetBackgroundVolumeID, view.background_id),
                (composite.SetForegroundVolumeID, view.foreground_id),
                (composite.SetLabelVolumeID, view.label_id),
            ):
                setter(node_id if node_id and self.scene.GetNodeByID(node_id) is not None else None)
            composite.SetForegroundOpacity(view.foreground_opacity)
            composite.SetLinkedControl(view.linked)
            composite.SetHotLinkedControl(view.hot_linked)
        if not keep_difference and state.difference_id:
            node = self.scene.GetNodeByID(state.difference_id)
            if node is not None:
                self._remove_node(node)
            state.difference_id = None


def _save_view(composite, slice_node) -> _ViewState:
    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(slice_node.GetSliceToRAS())
    return _ViewState(
        background_id=composite.GetBackgroundVolumeID(),
        foreground_id=composite.GetForegroundVolumeID(),
        label_id=composite.GetLabelVolumeID(),
        foreground_opacity=composite.GetForegroundOpacity(),
        linked=composite.GetLinkedControl(),
        hot_linked=composite.GetHotLinkedControl(),
        slice_to_ras=matrix,
        field_of_view=tuple(slice_node.GetFieldOfView()),
        xyz_origin=tuple(slice_node.GetXYZOrigin()),
    )


def _check_strength(strength: Any) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"Strength must be a number between 0 and 1, got {strength!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"Strength must be between 0 (off) and 1 (full), got {strength}.")
    return value


def _vtk_matrix(array: np.ndarray):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _voxel_view(image) -> np.ndarray:
    """The voxels of a single-component vtkImageData as a (z, y, x) numpy view (no copy)."""
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(dims[2], dims[1], dims[0])


def volume_array(node) -> np.ndarray:
    """A copy of a scalar volume node's voxels, (z, y, x), in the stored type (no slicer.util needed)."""
    image = node.GetImageData() if node is not None else None
    if image is None:
        raise InputError("The volume holds no voxels.")
    return np.array(_voxel_view(image), copy=True)


def volume_from_node(node, voxels: Optional[np.ndarray] = None):
    """A volumeio.Volume (ITK/LPS geometry) of a volume node, for the file and DICOM writers."""
    from ..volume import Volume, as_xyz

    if voxels is None:
        voxels = volume_array(node)
    spacing = as_xyz(node.GetSpacing())
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras(node)
    direction = lps[:3, :3] / np.array(spacing)[None, :]
    return Volume(
        voxels=voxels,
        spacing=spacing,
        origin=as_xyz(lps[:3, 3]),
        direction=tuple(float(v) for v in direction.ravel()),
        metadata={"source": node.GetName() or ""},
    )


def ijk_to_ras(node) -> np.ndarray:
    """The node's 4×4 IJK-to-RAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def cancel_bounded_batch(device: Any, height: int, width: int) -> int:
    """Slices per engine batch for the Slicer path: 1 on the CPU, at most :data:`GPU_BATCH_PIXELS` on a GPU.

    The engine checks for a cancel between batches, so the batch bounds how long a
    cancel waits: one slice on the CPU (also the engine's fastest CPU setting), four
    512×512 slices on a GPU (more for smaller slices, at most 32).
    """
    if str(device).split(":")[0] == "cpu":
        return 1
    return max(1, min(32, GPU_BATCH_PIXELS // max(int(height) * int(width), 1)))


def output_name(input_name: str, model: LoadedModel, strength: float) -> str:
    """Name of a new output: "<input> denoised (<model> <version>, strength <s>)"."""
    return f"{input_name or 'volume'}{OUTPUT_SUFFIX} ({model.name} {model.version}, strength {strength:g})"


def preview_name(input_name: str, region: PreviewRegion, model: LoadedModel, strength: float) -> str:
    """Name of a preview: "<input> denoised PREVIEW <slice n of N | ROI 'R'> (<model> <version>, strength <s>)"."""
    return (f"{input_name or 'volume'}{PREVIEW_SUFFIX} {region.label} "
            f"({model.name} {model.version}, strength {strength:g})")


def source_volume(output_node):
    """The volume ``output_node`` was denoised from (its source reference), or None."""
    if output_node is None:
        return None
    return output_node.GetNodeReference(SOURCE_REFERENCE_ROLE)
