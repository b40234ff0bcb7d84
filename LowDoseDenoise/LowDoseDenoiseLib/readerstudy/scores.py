"""A reader's session: the worklist in the reader's order, the next unscored item, the score file.

Scores go to ``scores/READER.jsonl``, one JSON record per line, appended and fsynced
after every item, so a crash or closing Slicer loses at most the item being scored.
A record that was only half written when the process died (a torn last line, no
newline) is dropped when the file is next opened; a broken line elsewhere is a
corrupt file and is refused.  Scoring an item again appends a new record; the last
record of an item counts.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..errors import InputError
from . import protocol as p

__all__ = ["ReadingItem", "ReadingSession", "ScoreFile", "Study", "check_scores"]


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadingItem:
    """One pair to read: its id, its position in the reader's order and the two image files."""

    id: str
    index: int
    total: int
    image_a: Path
    image_b: Path


class ScoreFile:
    """An append-only JSON Lines file of score records, safe against a crash mid-write."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

    def records(self) -> List[Dict[str, Any]]:
        """Every complete record in file order (a torn last line is left out)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        records = []
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:
                raise InputError(
                    f"{self.path}, line {number}, is not a score record (the file was edited or damaged); "
                    "restore it from a backup or remove that line."
                ) from None
            if not isinstance(record, dict) or "item" not in record:
                raise InputError(f"{self.path}, line {number}, is not a score record; remove that line.")
            records.append(record)
        if tail.strip():
            log.warning("%s: dropping a half-written last record (the program stopped while saving).", self.path)
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record and make it durable (flush + fsync) before returning."""
        line = (json.dumps(dict(record), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a torn record from a crash: cut it off before appending
                    handle.seek(0)
                    keep = handle.read().rfind(b"\n") + 1
                    handle.truncate(keep)
                    handle.seek(0, os.SEEK_END)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if new_file:
            _fsync_dir(self.path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # Windows cannot open folders; NTFS journals the entry itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_scores(scores: Mapping[str, Any], side: str) -> Dict[str, int]:
    """Every criterion scored once with a whole number 1..5; returns a clean dict."""
    if not isinstance(scores, Mapping):
        raise InputError(f"Scores of image {side} must be a mapping of criterion to score.")
    unknown = sorted(set(scores) - set(p.CRITERION_KEYS))
    if unknown:
        raise InputError(f"Unknown criteria for image {side}: {', '.join(unknown)}; use {', '.join(p.CRITERION_KEYS)}.")
    clean = {}
    for key, label, _ in p.CRITERIA:
        value = scores.get(key)
        if value is None:
            raise InputError(f"Image {side}: score '{label}' before saving (1–5).")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise InputError(f"Image {side}: '{label}' must be a whole number 1–5, got {value!r}.")
        if int(value) not in p.SCALE:
            raise InputError(f"Image {side}: '{label}' must lie in 1–5, got {value!r}.")
        clean[key] = int(value)
    return clean


class Study:
    """A planned study folder as a reader sees it: worklist and protocol (never the key)."""

    def __init__(self, folder: Union[str, os.PathLike]):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"Study folder {self.folder} does not exist; give the folder `reader-study plan` wrote.")
        self.worklist = p.read_json(self.folder / p.WORKLIST_FILE, "worklist")
        self.protocol = p.read_json(self.folder / p.PROTOCOL_FILE, "protocol")
        self.items = {item["id"]: item for item in self.worklist["items"]}
        self.readers = list(self.worklist["readers"])

    @property
    def window(self) -> Tuple[float, float]:
        window = self.protocol.get("window", {})
        return float(window.get("width", p.DEFAULT_WINDOW[0])), float(window.get("level", p.DEFAULT_WINDOW[1]))

    def order(self, reader: str) -> List[str]:
        if reader not in self.worklist["readers"]:
            raise InputError(
                f"Reader '{reader}' is not in this study (readers: {', '.join(self.readers)}); use one of those ids "
                "or plan the study with more readers."
            )
        return list(self.worklist["readers"][reader])

    def score_file(self, reader: str) -> ScoreFile:
        return ScoreFile(self.folder / p.SCORES_DIR / f"{p.check_reader_id(reader)}.jsonl")


class ReadingSession:
    """One reader working through a study: next item, record, resume after a crash."""

    def __init__(self, folder: Union[str, os.PathLike], reader: str):
        self.study = Study(folder)
        self.reader = p.check_reader_id(reader)
        self.order = self.study.order(self.reader)
        self.file = self.study.score_file(self.reader)
        self.scored: Dict[str, Dict[str, Any]] = {}
        for record in self.file.records():
            if record["item"] not in self.study.items:
                raise InputError(f"{self.file.path} scores item {record['item']!r}, which this worklist lacks; "
                                 "it belongs to another study.")
            self.scored[record["item"]] = record

    @property
    def total(self) -> int:
        return len(self.order)

    @property
    def done(self) -> int:
        return sum(1 for item in self.order if item in self.scored)

    @property
    def finished(self) -> bool:
        return self.done == self.total

    def next_index(self) -> Optional[int]:
        """Position of the first unscored item in this reader's order; None when all are scored."""
        for index, item in enumerate(self.order):
            if item not in self.scored:
                return index
        return None

    def item(self, index: int) -> ReadingItem:
        if not 0 <= index < self.total:
            raise InputError(f"Item {index + 1} is outside this worklist (1–{self.total}).")
        item_id = self.order[index]
        entry = self.study.items[item_id]
        return ReadingItem(id=item_id, index=index, total=self.total, image_a=self.study.folder / entry["A"],
                           image_b=self.study.folder / entry["B"])

    def next_item(self) -> Optional[ReadingItem]:
        index = self.next_index()
        return None if index is None else self.item(index)

    def previous_record(self, item_id: str) -> Optional[Dict[str, Any]]:
        """The saved record of an item (to show when the reader goes back), or None."""
        return self.scored.get(item_id)

    def record(
        self,
        item_id: str,
        scores_a: Mapping[str, Any],
        scores_b: Mapping[str, Any],
        preference: str,
        comment: str = "",
        seconds: Optional[float] = None,
        window: Optional[Tuple[float, float]] = None,
    ) -> Dict[str, Any]:
        """Validate and save the scores of one item (durable on return); returns the record."""
        if item_id not in self.study.items or item_id not in self.order:
            raise InputError(f"Item {item_id!r} is not in reader {self.reader}'s worklist.")
        if preference not in p.PREFERENCES:
            raise InputError(f"Choose a preference (A, B or equal) before saving; got {preference!r}.")
        record = {
            "format_version": p.FORMAT_VERSION,
            "reader": self.reader,
            "item": item_id,
            "scores": {"A": check_scores(scores_a, "A"), "B": check_scores(scores_b, "B")},
            "preference": preference,
            "comment": str(comment or ""),
            "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if seconds is not None:
            record["seconds"] = round(float(seconds), 1)
        if window is not None:
            record["window"] = [float(window[0]), float(window[1])]
        self.file.append(record)
        self.scored[item_id] = record
        return record
