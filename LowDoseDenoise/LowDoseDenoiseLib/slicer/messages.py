"""Messages from a run for the person at the screen, safe to produce in any thread.

A denoising job runs in a worker thread; its warnings (pixel size outside the training
range, fell back from the GPU to the CPU, values that do not look like CT) must reach
the main thread, where the Slicer panel shows them in its log box.  :class:`MessageLog`
is a plain-Python, thread-safe queue of :class:`Message` items: the worker appends, the
GUI timer calls :meth:`MessageLog.drain`.  :func:`capture_thread_logs` forwards the log
records that the library emits *in the current thread* (the engine logs each warning it
issues) into such a log, without touching the global ``warnings`` state, which is not
thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, List

__all__ = ["Message", "MessageLog", "capture_thread_logs", "LIBRARY_LOGGER"]

#: Logger name of the whole library (``logging.getLogger(__name__)`` in each module).
LIBRARY_LOGGER = "LowDoseDenoiseLib"


@dataclass(frozen=True)
class Message:
    """One line for the log box: ``level`` is "info", "warning" or "error"."""

    level: str
    text: str
    time: float = field(default_factory=time.time)

    def line(self) -> str:
        """The text with a level prefix for warnings and errors."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        prefix = {"warning": "Warning: ", "error": "Error: "}.get(self.level, "")
        return f"[{stamp}] {prefix}{self.text}"


class MessageLog:
    """A thread-safe list of messages: any thread adds, the GUI drains the new ones.

    A text already in the log is not added twice (the engine may warn about what the
    logic already checked before the run).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: List[Message] = []
        self._read = 0

    def add(self, level: str, text: str) -> None:
        if level not in ("info", "warning", "error"):
            raise ValueError(f"Unknown message level {level!r}; use info, warning or error.")
        with self._lock:
            if any(m.text == text and m.level == level for m in self._messages):
                return
            self._messages.append(Message(level, text))

    def info(self, text: str) -> None:
        self.add("info", text)

    def warning(self, text: str) -> None:
        self.add("warning", text)

    def error(self, text: str) -> None:
        self.add("error", text)

    def drain(self) -> List[Message]:
        """The messages added since the last drain (main thread)."""
        with self._lock:
            new, self._read = self._messages[self._read :], len(self._messages)
        return new

    @property
    def messages(self) -> List[Message]:
        """Every message so far, drained or not."""
        with self._lock:
            return list(self._messages)

    @property
    def warnings(self) -> List[str]:
        """The texts of the warnings so far."""
        return [m.text for m in self.messages if m.level == "warning"]


class _ThreadHandler(logging.Handler):
    def __init__(self, log: MessageLog, thread_id: int) -> None:
        super().__init__(level=logging.WARNING)
        self._log, self._thread_id = log, thread_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread_id:
            return
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break the run
            text = str(record.msg)
        self._log.add("error" if record.levelno >= logging.ERROR else "warning", text)


@contextlib.contextmanager
def capture_thread_logs(log: MessageLog, logger_name: str = LIBRARY_LOGGER) -> Iterator[MessageLog]:
    """Forward warnings and errors logged under ``logger_name`` by this thread into ``log``."""
    handler = _ThreadHandler(log, threading.get_ident())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield log
    finally:
        logger.removeHandler(handler)
