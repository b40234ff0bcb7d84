"""Plan a blinded reader study: one image per case and method, a blinded worklist and a separate key.

Every image a reader sees is written as its own int16 NRRD with a neutral name
(``images/img_0007.nrrd``) and nothing in its header but the geometry, so neither the
file name, the pixel type nor a header key tells the method.  An image that appears in
several pairs (the original, compared with each method) is written once per pair, so
the worklist never shows which image recurs.  Image and item numbers are assigned
after shuffling; each reader gets an own random order and every pair its own random
left/right placement.  The key (method behind every image, SHA-256 of every file)
goes to ``key/``, apart from the worklist.

The whole study is built in a temporary folder beside the target and renamed into
place when complete, so a failed or interrupted plan leaves nothing behind.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import Cancelled, InputError
from ..volume import Volume, as_xyz, cast_like
from . import protocol as p

__all__ = [
    "FILTERS",
    "CANCELLED_MESSAGE",
    "CaseSource",
    "KEY_WARNING",
    "PAIR_DESIGNS",
    "Method",
    "StudyPlan",
    "apply_filter",
    "method_label",
    "neutral_volume",
    "parse_method",
    "parse_methods",
    "parse_readers",
    "plan_study",
    "sha256_file",
]


#: Classical filters available as methods, with the parameters they run with.
FILTERS = {
    "cad": "SimpleITK curvature anisotropic diffusion per slice, 5 iterations, time step 0.0625, conductance 1",
    "gaussian": "in-plane Gaussian smoothing, sigma 0.8 pixel (scipy.ndimage)",
    "nlm": "non-local means per slice (scikit-image, patch 5, distance 6, h = 0.8 x the input's noise SD)",
}
PAIR_DESIGNS = ("reference", "all")
CANCELLED_MESSAGE = "Planning was cancelled; no study folder was written."
KEY_WARNING = """KEEP THIS FOLDER AWAY FROM THE READERS.

key.json says which method made every image of this reader study, and which image of
every pair is A and which is B.  Anyone who reads it is no longer blinded.  Move this
folder elsewhere (or keep the study's copy for the readers without it) until every
reader has finished; `lowdose-denoise reader-study summarize` needs it back, unchanged,
to unblind the scores.  It also holds the SHA-256 of every image, so the summary
refuses to unblind if an image file was changed after planning.
"""


@dataclass(frozen=True)
class Method:
    """One way of making an image of a case: the original, a model at a strength, or a filter."""

    spec: str  # what the user wrote, e.g. "lowdose-liver-pan@0.5"
    kind: str  # "original", "model" or "filter"
    model: Optional[str] = None  # model file path; None = the bundled model
    strength: float = 1.0
    filter: Optional[str] = None


def _resolve_model(name: str) -> Optional[str]:
    """The model file a name or path means, or None when it means none (the registry where present)."""
    from .. import modelfile

    resolver = getattr(modelfile, "resolve_model", None)
    if resolver is not None:
        try:
            return str(resolver(name))
        except Exception:  # ModelError: not a model; the caller says what is valid
            return None
    path = Path(name).expanduser()
    if path.is_file():
        return str(path)
    shipped = {model_path.stem: model_path for model_path in getattr(modelfile, "available_models", list)()}
    return str(shipped[name]) if name in shipped else None


def _model_names() -> List[str]:
    from .. import modelfile

    if hasattr(modelfile, "list_models"):
        return [entry.name for entry in modelfile.list_models() if entry.problem is None]
    return [path.stem for path in getattr(modelfile, "available_models", list)()]


def parse_method(spec: str) -> Method:
    """``original``, ``cad``/``gaussian``/``nlm``, or ``MODEL[@STRENGTH]``.

    MODEL is ``model`` (the default bundled model), a bundled model's name (``NAME`` or
    ``NAME@VERSION``) or a .pt file; the strength after the last '@' lies in (0, 1].
    """
    text = str(spec).strip()
    if not text:
        raise InputError("An empty method name was given; list methods separated by commas, e.g. original,model,cad.")
    lowered = text.lower()
    if lowered == p.REFERENCE_METHOD:
        return Method(spec=lowered, kind="original")
    if lowered in FILTERS:
        return Method(spec=lowered, kind="filter", filter=lowered)
    if lowered.partition("@")[0] in (p.REFERENCE_METHOD, *FILTERS):
        raise InputError(f"Method '{text}': only a model takes @STRENGTH; write '{text.partition('@')[0]}'.")
    if lowered in ("model", "bundled"):
        return Method(spec=text, kind="model", model=None)
    whole = _resolve_model(text)  # NAME@VERSION is a model name, not a strength
    if whole is not None:
        return Method(spec=text, kind="model", model=whole)
    name, at, strength_text = text.rpartition("@")
    if not at:
        name, strength_text = text, ""
    strength = 1.0
    if strength_text:
        try:
            strength = float(strength_text)
        except ValueError:
            raise InputError(f"Method '{text}': the strength after '@' must be a number in (0, 1].") from None
        if not 0.0 < strength <= 1.0:
            raise InputError(f"Method '{text}': the strength must lie in (0, 1]; 0 would be the original.")
    if name.lower() in ("model", "bundled"):
        return Method(spec=text, kind="model", model=None, strength=strength)
    model = _resolve_model(name)
    if model is not None:
        return Method(spec=text, kind="model", model=model, strength=strength)
    if Path(name).suffix.lower() == ".pt" or "/" in name or os.sep in name:
        raise InputError(f"Method '{text}': model file {name} not found; give an existing .pt model file.")
    choices = ", ".join([p.REFERENCE_METHOD, *FILTERS, "model", *_model_names(), "PATH.pt"])
    raise InputError(f"Unknown method '{text}'; use one of {choices} (a model takes an optional @STRENGTH).")


def parse_methods(specs: Union[str, Sequence[str]]) -> List[Method]:
    """A comma-separated list (or a sequence) of methods; 'original' must be one of them, none twice."""
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    methods = [parse_method(item) for item in items]
    seen = set()
    for method in methods:
        key = (method.kind, method.model, method.strength, method.filter)
        if key in seen:
            raise InputError(f"Method '{method.spec}' is listed twice; list every method once.")
        seen.add(key)
    if not any(method.kind == "original" for method in methods):
        raise InputError("The methods must include 'original': every method is compared with the original image.")
    if len(methods) < 2:
        raise InputError("Give at least one method besides 'original' (e.g. --methods original,model,cad).")
    return methods


def parse_readers(text: str) -> Union[int, List[str]]:
    """A reader count (``"3"``: ids R1..R3) or comma-separated reader ids (``"anna,ben"``), as the CLI and GUI take."""
    text = str(text).strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise InputError("A study needs at least one reader; give a count of 1 or more, or reader ids.")
        return count
    ids = [name.strip() for name in text.split(",") if name.strip()]
    if not ids:
        raise InputError("Give the number of readers (e.g. 2) or their ids separated by commas (e.g. R1,R2).")
    return ids


@dataclass(frozen=True)
class CaseSource:
    """A case that is not a file: e.g. a volume node of a Slicer scene.

    ``source`` is what the key records as the case's origin (the readers never see
    it); ``load`` returns the case as a :class:`~LowDoseDenoiseLib.volume.Volume` (a
    copy: planning never modifies it) and is called once, when the case is planned,
    so only one case is in memory at a time; ``identity`` tells two cases apart.
    """

    source: str
    load: Callable[[], Volume]
    identity: str = ""


#: A case of :func:`plan_study`: an image file, a DICOM series folder or a :class:`CaseSource`.
Case = Union[str, os.PathLike, CaseSource]


# ---------------------------------------------------------------- images


def apply_filter(name: str, hu: np.ndarray, spacing: Sequence[float], progress: Any = None,
                 cancel: Any = None) -> np.ndarray:
    """One of :data:`FILTERS` (the library's classical peers, quality.filters) on (z, y, x) HU, slice by
    slice as :data:`FILTERS` describes them; float32 out.

    ``progress(done, total)`` after every slice; ``cancel`` (a callable or an object with
    ``is_set()``) is checked before every slice and raises Cancelled, so a cancel during a slow
    filter (non-local means: about 0.3 s per 512² slice) waits for one slice, not the whole case.
    NLM's h comes from the noise SD of the whole volume, as when it is run on the volume at once.
    """
    from ..engine import is_cancelled
    from ..quality.filters import CLASSICAL_FILTERS, nl_means
    from ..quality.noise import estimate_noise_sd

    if name not in FILTERS or name not in CLASSICAL_FILTERS:
        raise InputError(f"Unknown filter '{name}'; use one of {', '.join(FILTERS)}.")
    array = np.asarray(hu, dtype=np.float32)
    volume = array[None] if array.ndim == 2 else array
    if name == "nlm":
        sigma = float(estimate_noise_sd(volume))

        def run(block: np.ndarray) -> np.ndarray:
            return nl_means(block, spacing, sigma=sigma)
    else:
        def run(block: np.ndarray) -> np.ndarray:
            return CLASSICAL_FILTERS[name](block, spacing)

    out = np.empty(volume.shape, dtype=np.float32)
    depth = volume.shape[0]
    for k in range(depth):
        if is_cancelled(cancel):
            raise Cancelled(f"The {name} filter was cancelled; nothing was kept.")
        out[k] = np.asarray(run(volume[k : k + 1]), dtype=np.float32)[0]
        if progress:
            progress(k + 1, depth)
    return out[0] if array.ndim == 2 else out


@dataclass
class _ModelCache:
    device: str = "auto"
    loaded: Dict[Optional[str], Any] = field(default_factory=dict)

    def get(self, path: Optional[str]):
        if path not in self.loaded:
            from ..modelfile import load_model

            self.loaded[path] = load_model(path)
        return self.loaded[path]


def _method_image(method: Method, volume: Volume, models: _ModelCache, progress: Any = None,
                  cancel: Any = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """(float32 HU, key details) of ``method`` applied to ``volume``; ``progress(done, total)`` and
    ``cancel`` go to the model's run (engine.denoise_volume) or the filter's slices (apply_filter)."""
    hu = volume.hu()
    if method.kind == "original":
        return hu, {}
    if method.kind == "filter":
        assert method.filter is not None  # parse_method names the filter of every "filter" method
        return (apply_filter(method.filter, hu, volume.spacing, progress=progress, cancel=cancel),
                {"filter": FILTERS[method.filter]})
    from .. import engine

    model = models.get(method.model)
    out = engine.denoise_volume(hu, model, device=models.device, strength=method.strength, spacing=volume.spacing,
                                progress=progress, cancel=cancel)
    details = {"model": model.name, "model_version": model.version, "model_sha256": model.sha256,
               "strength": method.strength}
    return out, details


def method_label(method: Method, models: _ModelCache) -> str:
    """The name a method has in the key and the report: 'original', 'cad', 'lowdose-liver-pan@0.5'."""
    if method.kind != "model":
        return method.spec
    name = models.get(method.model).name
    return name if method.strength == 1.0 else f"{name}@{method.strength:g}"


def neutral_volume(volume: Volume, hu: np.ndarray) -> Volume:
    """int16 HU with the case's geometry and nothing else: no metadata, same pixel type for every method."""
    return Volume(
        voxels=cast_like(hu, np.int16),
        spacing=as_xyz(volume.spacing),
        origin=as_xyz(volume.origin),
        direction=tuple(float(d) for d in volume.direction),
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- the plan


@dataclass
class StudyPlan:
    """What :func:`plan_study` wrote."""

    folder: Path
    cases: int
    methods: List[str]
    items: int
    images: int
    readers: List[str]


def _pairs(labels: List[str], design: str) -> List[Tuple[str, str]]:
    if design == "reference":
        return [(p.REFERENCE_METHOD, label) for label in labels if label != p.REFERENCE_METHOD]
    return list(itertools.combinations(labels, 2))


def _check_out(out: Path, cases: Sequence[Path], overwrite: bool) -> None:
    from ..io import outputs

    outputs.check_output(out, inputs=cases, overwrite=overwrite, folder=True, what="Study")
    if (out / p.SCORES_DIR).is_dir() and any((out / p.SCORES_DIR).iterdir()):
        raise InputError(f"{out} holds reader scores; planning it again would orphan them, so choose a new folder.")


def plan_study(
    cases: Sequence[Case],
    methods: Union[str, Sequence[str]],
    out: Union[str, os.PathLike],
    readers: Union[int, Sequence[str]] = 2,
    seed: int = 0,
    pairs: str = "reference",
    window: Tuple[float, float] = p.DEFAULT_WINDOW,
    device: str = "auto",
    overwrite: bool = False,
    force: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    cancel: Any = None,
) -> StudyPlan:
    """Make the images of every case and method and write a blinded study folder ``out``.

    ``cases`` are image files or DICOM series folders (read, never modified) or
    :class:`CaseSource` objects (volumes already in memory, e.g. Slicer nodes:
    :func:`.sceneplan.plan_study_from_nodes`);
    ``methods`` as :func:`parse_methods`; ``readers`` a count (ids R1..RN) or a list of
    ids; ``pairs`` 'reference' (each method against the original) or 'all' (every two
    methods).  The same inputs and ``seed`` give the same study.

    ``progress(message)`` is told each step (and the slices of each model run);
    ``cancel`` (a callable returning True to stop, or a ``threading.Event``, as the
    engine's) is checked before every case and method and between the model's batches:
    a cancelled plan raises :class:`~..errors.Cancelled` and leaves no study folder.
    """
    from ..engine import check_cancel, ct_range_problem, is_cancelled
    from ..io.imagefiles import read_volume

    check_cancel(cancel)

    def stop_if_cancelled() -> None:
        if is_cancelled(cancel):
            raise Cancelled(CANCELLED_MESSAGE)

    out = Path(out)
    if not cases:
        raise InputError("Give at least one case (an image file or a DICOM series folder).")
    if pairs not in PAIR_DESIGNS:
        raise InputError(f"Unknown pair design '{pairs}'; use 'reference' (each method vs original) or 'all'.")
    width, level = (float(v) for v in window)
    if not width > 0:
        raise InputError(f"The window width must be positive, got {width:g} HU.")
    reader_ids = [f"R{i + 1}" for i in range(int(readers))] if isinstance(readers, int) else list(readers)
    if not reader_ids:
        raise InputError("A study needs at least one reader (--readers 1 or more).")
    reader_ids = [p.check_reader_id(r) for r in reader_ids]
    if len(set(reader_ids)) != len(reader_ids):
        raise InputError("A reader id is given twice; every reader needs an own id.")
    method_list = parse_methods(methods)
    case_list: List[Union[Path, CaseSource]] = [c if isinstance(c, CaseSource) else Path(c) for c in cases]
    case_paths = [c for c in case_list if isinstance(c, Path)]
    for case_path in case_paths:
        if not case_path.exists():
            raise InputError(f"Case {case_path} does not exist; check the path.")
    identities = [c.identity or c.source if isinstance(c, CaseSource) else str(c.resolve()) for c in case_list]
    if len(set(identities)) != len(identities):
        raise InputError("A case is listed twice; list every case once.")
    _check_out(out, case_paths, overwrite)
    say = progress or (lambda message: None)
    models = _ModelCache(device=device)
    labels = [method_label(m, models) for m in method_list]
    if len(set(labels)) != len(labels):
        raise InputError(f"Two methods have the same name ({', '.join(labels)}); list every method once.")
    rng = np.random.default_rng(seed)

    from ..io import outputs

    with outputs.atomic_folder(out) as work:
        (work / p.IMAGES_DIR).mkdir()
        (work / p.SCORES_DIR).mkdir()
        (work / p.KEY_DIR).mkdir()
        design = _pairs(labels, pairs)
        # every (case, pair, side) appearance gets its own image file; numbers are assigned after shuffling
        appearances: List[Tuple[Dict[str, Any], str]] = []
        items: List[Dict[str, Any]] = []
        for case_index in range(len(case_list)):
            for first, second in design:
                swap = bool(rng.integers(2))
                left, right = (second, first) if swap else (first, second)
                items.append({"case": case_index, "A": left, "B": right})
        item_numbers = rng.permutation(len(items)) + 1
        for item, number in zip(items, item_numbers):
            item["id"] = f"item_{number:04d}"
            for side in p.SIDES:
                appearances.append((item, side))
        image_numbers = rng.permutation(len(appearances)) + 1
        width_digits = max(4, len(str(len(appearances))))
        for (item, side), number in zip(appearances, image_numbers):
            item[f"image_{side}"] = f"{p.IMAGES_DIR}/img_{number:0{width_digits}d}.nrrd"

        key_images: Dict[str, Any] = {}
        key_cases = []
        for case_index, case in enumerate(case_list):
            source = case.source if isinstance(case, CaseSource) else str(case)
            stop_if_cancelled()
            say(f"case {case_index + 1}/{len(case_list)}: reading {source}")
            volume = case.load() if isinstance(case, CaseSource) else read_volume(case, force=force)
            if np.issubdtype(volume.voxels.dtype, np.floating) and not np.isfinite(volume.voxels).all():
                raise InputError(f"{source} contains NaN or infinite values; fix or mask them first.")
            problem = ct_range_problem(volume.voxels)
            if problem and not force:
                raise InputError(f"{source}: {problem}; pass --force to use it anyway.")
            key_cases.append({"case": f"case_{case_index + 1:02d}", "source": source,
                              "shape": list(volume.voxels.shape), "spacing": list(volume.spacing)})
            made = {}
            for method, label in zip(method_list, labels):
                stop_if_cancelled()
                step = f"case {case_index + 1}/{len(case_list)}: {label}"
                say(step)

                def slices_done(done: int, total: int, step: str = step) -> None:
                    say(f"{step}, {done}/{total} slices")

                try:
                    hu, details = _method_image(method, volume, models, progress=slices_done, cancel=cancel)
                except Cancelled:
                    raise Cancelled(CANCELLED_MESSAGE) from None
                made[label] = (neutral_volume(volume, hu), details)
            for item in items:
                if item["case"] != case_index:
                    continue
                for side in p.SIDES:
                    label = item[side]
                    image, details = made[label]
                    path = work / item[f"image_{side}"]
                    _write_image(image, path)
                    key_images[item[f"image_{side}"]] = {
                        "case": f"case_{case_index + 1:02d}", "method": label, "sha256": sha256_file(path), **details,
                    }
            del made

        stop_if_cancelled()
        items.sort(key=lambda item: item["id"])
        worklist = {
            "format_version": p.FORMAT_VERSION,
            "items": [{"id": item["id"], "A": item["image_A"], "B": item["image_B"]} for item in items],
            "readers": {
                reader: [items[i]["id"] for i in rng.permutation(len(items))] for reader in reader_ids
            },
        }
        key = {
            "format_version": p.FORMAT_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seed": int(seed),
            "pairs": pairs,
            "methods": {label: {"spec": m.spec, "kind": m.kind} for m, label in zip(method_list, labels)},
            "cases": key_cases,
            "items": {item["id"]: {"case": f"case_{item['case'] + 1:02d}", "A": item["A"], "B": item["B"]}
                      for item in items},
            "images": dict(sorted(key_images.items())),
            "worklist_sha256": hashlib.sha256(_json_bytes(worklist)).hexdigest(),
        }
        _write_json(work / p.WORKLIST_FILE, worklist)
        _write_json(work / p.PROTOCOL_FILE, p.protocol_document(reader_ids, seed, (width, level)))
        _write_json(work / p.KEY_DIR / p.KEY_FILE, key)
        (work / p.KEY_DIR / "README.txt").write_text(KEY_WARNING, encoding="utf-8")
        (work / "README.txt").write_text(_study_readme(reader_ids), encoding="utf-8")
    return StudyPlan(folder=out, cases=len(case_list), methods=labels, items=len(items), images=len(appearances),
                     readers=reader_ids)


def _write_image(volume: Volume, path: Path) -> None:
    from ..io.imagefiles import write_volume

    write_volume(volume, path)


def _json_bytes(document: Dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=False) + "\n").encode("utf-8")


def _write_json(path: Path, document: Dict[str, Any]) -> None:
    path.write_bytes(_json_bytes(document))


def _study_readme(readers: List[str]) -> str:
    return (
        "Blinded reader study\n\n"
        f"Readers: {', '.join(readers)}. Each reader opens this folder in the Slicer module 'Reader Study', enters\n"
        "the own id and scores the pairs in the order given; every pair is saved at once to scores/READER.jsonl.\n\n"
        "The key/ folder tells which image is which: remove it before the folder goes to the readers, and put it\n"
        "back, unchanged, for the summary (reader-study summarize THIS_FOLDER --out REPORT.md).\n"
    )
