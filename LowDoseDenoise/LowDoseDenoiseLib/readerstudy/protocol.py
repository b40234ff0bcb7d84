"""What a reader scores and how a study folder is laid out.

A study folder::

    worklist.json        items (image pairs A/B) and each reader's randomised order: nothing that reveals a method
    protocol.json        criteria, the 1–5 scale with anchors, display window, seed, readers
    images/img_NNNN.nrrd one neutral int16 NRRD per image shown (geometry only, no other header keys)
    scores/READER.jsonl  one append-only score file per reader (JSON Lines, one record per item)
    key/key.json         the method behind each image and each item's A/B, with SHA-256 of every image
    key/README.txt       warning: keep the key away from the readers until reading is done

Every criterion is scored so that 5 is best (5 = no perceptible noise, no artefacts),
which makes "higher is better" true for every column of the summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..errors import InputError

__all__ = [
    "CRITERIA",
    "CRITERION_KEYS",
    "DEFAULT_WINDOW",
    "FORMAT_VERSION",
    "IMAGES_DIR",
    "KEY_DIR",
    "KEY_FILE",
    "PREFERENCES",
    "PROTOCOL_FILE",
    "REFERENCE_METHOD",
    "SCALE",
    "SCORES_DIR",
    "SIDES",
    "WORKLIST_FILE",
    "check_reader_id",
    "protocol_document",
    "read_json",
]


FORMAT_VERSION = 1
WORKLIST_FILE = "worklist.json"
PROTOCOL_FILE = "protocol.json"
IMAGES_DIR = "images"
SCORES_DIR = "scores"
KEY_DIR = "key"
KEY_FILE = "key.json"
REFERENCE_METHOD = "original"
SIDES = ("A", "B")
PREFERENCES = ("A", "B", "equal")
SCALE = (1, 2, 3, 4, 5)
#: Liver window (width, level) in HU, the default display of every item.
DEFAULT_WINDOW = (400.0, 40.0)

#: (key, label, anchors 1..5): every criterion scored so that 5 is best.
CRITERIA: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("overall", "Overall image quality",
     ("non-diagnostic", "poor", "acceptable", "good", "excellent")),
    ("noise", "Noise",
     ("severe noise, obscures anatomy", "marked noise", "moderate noise", "slight noise", "no perceptible noise")),
    ("sharpness", "Sharpness of edges and small structures",
     ("blurred, structures lost", "clearly blurred", "moderately sharp", "sharp", "as sharp as expected at full dose")),
    ("artefacts", "Artefacts",
     ("severe, non-diagnostic", "marked, impair reading", "moderate, do not impair reading", "minor",
      "none")),
    ("confidence", "Diagnostic confidence",
     ("cannot read", "low", "moderate", "high", "full confidence")),
)  # fmt: skip
CRITERION_KEYS = tuple(key for key, _, _ in CRITERIA)

_READER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_reader_id(reader: str) -> str:
    """A reader id usable as a file name (letters, digits, '_', '.', '-')."""
    reader = str(reader).strip()
    if not _READER_ID.match(reader):
        raise InputError(
            f"Reader id {reader!r} is not usable; use letters, digits, '_', '.' or '-' (e.g. R1), at most 64."
        )
    return reader


def protocol_document(readers: List[str], seed: int, window: Tuple[float, float]) -> Dict[str, Any]:
    """The protocol.json content: what the readers score and how the study was randomised.

    The pair design (each method against the original, or all pairs) is kept in the key: telling the
    readers that one image of every pair is the original would unblind half of each pair.
    """
    return {
        "format_version": FORMAT_VERSION,
        "criteria": [
            {"key": key, "label": label, "anchors": {str(score): text for score, text in zip(SCALE, anchors)}}
            for key, label, anchors in CRITERIA
        ],
        "scale": {"min": SCALE[0], "max": SCALE[-1], "higher_is_better": True},
        "preference": {"choices": list(PREFERENCES), "question": "Which image would you rather read?"},
        "window": {"width": float(window[0]), "level": float(window[1]), "changeable": True},
        "seed": int(seed),
        "readers": list(readers),
        "instructions": (
            "Read each pair in the order given, at the window shown (you may change it). Score both images "
            "on every criterion (5 = best), then say which one you would rather read. Do not open the "
            "study folder's files outside the reading module, and do not open the key folder."
        ),
    }


def read_json(path: Path, what: str) -> Dict[str, Any]:
    """A JSON document of the study folder, with a clear message when it is missing or broken."""
    if not path.is_file():
        raise InputError(f"{path} is missing; is {path.parent} a reader-study folder made by `reader-study plan`?")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise InputError(f"{path} ({what}) is not valid JSON ({error}); restore it from the planned study.") from None
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path} is not a version-{FORMAT_VERSION} {what} of a reader study.")
    return document
