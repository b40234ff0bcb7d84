"""Every file and folder the library writes goes through here: one output check, one atomic writer.

:func:`check_output` is the one place that decides whether a target may be written:
it refuses an existing target without ``overwrite``, a missing or unwritable parent
folder, a target that is one of the inputs or lies inside an input folder (a DICOM
series folder, say), a folder target that holds an input, and a file where a folder is
expected (or the other way round).  :func:`check_distinct` refuses a batch whose
outputs collide.

:func:`atomic_file` and :func:`atomic_folder` write to a temporary name beside the
target (``.NAME.partial-<pid>-<random>``), fsync, and rename into place only when the
write is complete; any exception (disk full, Ctrl-C, SIGTERM turned into an exception
by the CLI) removes the temporary file or folder, so a failed write leaves nothing.
The result gets the permissions a plain ``open()``/``mkdir()`` would give (the user's
umask), not the private mode of a temporary file.  Partials left by a run that was
killed (SIGKILL, power loss) are removed by the next write of the same target, with a
warning that says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import warnings
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import InputError, OutputError

__all__ = [
    "OVERWRITE_HINT",
    "PARTIAL",
    "AtomicFile",
    "PathLike",
    "atomic_file",
    "atomic_folder",
    "check_distinct",
    "check_output",
    "current_umask",
    "file_mode",
    "json_ready",
    "remove_stale_partials",
    "write_bytes",
    "write_text",
]


logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Marker in the name of every temporary file or folder (``.NAME.partial-<pid>-<hex>``).
PARTIAL = ".partial"
#: What the message of a refused existing target tells the user to do.
OVERWRITE_HINT = "pass --overwrite to replace it"

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it for longer than a moment)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _as_path(path: PathLike) -> Path:
    return Path(os.fspath(path))


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as given
        return path.absolute()


# ------------------------------------------------------------------------------ checking


def check_output(
    target: PathLike,
    inputs: Iterable[PathLike] = (),
    overwrite: bool = False,
    folder: bool = False,
    what: str = "Output",
    overwrite_hint: str = OVERWRITE_HINT,
) -> Path:
    """Check that ``target`` may be written, before any work is done; returns it as a Path.

    ``inputs`` are the files and folders the run reads: the target may not be one of
    them, lie inside an input folder, or (for a folder target) contain an input.
    ``folder`` says the target is a folder (a DICOM series); an existing empty folder
    counts as free.  Raises :class:`InputError` with what is wrong and what to do.
    """
    target = _as_path(target)
    if not target.name or target.name in (".", ".."):
        raise InputError(f"{what} {target} names no {'folder' if folder else 'file'}; give a path with a name.")
    resolved = _resolved(target)
    sources = [(_as_path(source), _resolved(_as_path(source))) for source in inputs]
    for source, source_resolved in sources:
        if resolved == source_resolved:
            raise InputError(f"{what} {target} is the input {source} itself; inputs are never overwritten, so "
                             "choose another output path.")
    for source, source_resolved in sources:
        if source.is_dir() and source_resolved in resolved.parents:
            raise InputError(f"{what} {target} lies inside the input folder {source}; a later read of that folder "
                             "would mix the output into the input, so choose a location outside it.")
        if folder and resolved in source_resolved.parents:
            raise InputError(f"{what} folder {target} holds the input {source}; choose a separate output folder "
                             "(inputs are never overwritten).")
    parent = _parent(target)
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"{what} {target}: {parent} is a file, not a folder; choose another location.")
        raise InputError(f"{what} folder {parent} does not exist; create it first or choose another location.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} folder {parent} is not writable; choose another location.")
    if target.is_symlink() and not target.exists():
        raise InputError(f"{what} {target} is a broken symbolic link; remove it or choose another path.")
    if target.exists():
        if folder and not target.is_dir():
            raise InputError(f"{what} {target} exists and is a file; give a folder path for the series.")
        if not folder and target.is_dir():
            raise InputError(f"{what} {target} exists and is a folder; give a file path.")
        if folder and not any(target.iterdir()):
            return target
        if not overwrite:
            kind = "folder" if folder else "file"
            raise InputError(f"{what} {kind} {target} already exists; {overwrite_hint} or choose another name.")
        if not os.access(target if folder else parent, os.W_OK):
            raise InputError(f"{what} {target} exists and is not writable; choose another location.")
    return target


def check_distinct(targets: Sequence[Tuple[PathLike, PathLike]]) -> None:
    """Refuse a batch in which two inputs would be written to the same output.

    ``targets`` holds (input, output) pairs; raises :class:`InputError` naming both
    inputs and the shared output before anything is read or written.
    """
    seen: Dict[str, PathLike] = {}
    for source, target in targets:
        key = os.path.normcase(str(_resolved(_as_path(target))))
        if key in seen:
            raise InputError(
                f"Inputs {seen[key]} and {source} would both be written to {target}; rename one of them, or run "
                "them separately with their own output paths."
            )
        seen[key] = source


# ------------------------------------------------------------------------------ partials


_PARTIAL_PID = re.compile(re.escape(PARTIAL) + r"-(\d+)-")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process, or a platform without signal 0
    return True


def remove_stale_partials(target: PathLike) -> List[Path]:
    """Remove ``.NAME.partial*`` leftovers of ``target`` from runs that were killed; warn when any were.

    A partial whose writer (the pid in its name) is still running is left alone, so two
    runs writing next to each other do not disturb each other.  Returns what was removed.
    """
    target = _as_path(target)
    parent = _parent(target)
    removed: List[Path] = []
    if not parent.is_dir():
        return removed
    prefix = f".{target.name}{PARTIAL}"
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in candidates:
        match = _PARTIAL_PID.search(path.name[len(target.name) + 1:])
        if match and _pid_alive(int(match.group(1))):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as error:
            logger.debug("cannot remove stale partial %s: %s", path, error)
            continue
        removed.append(path)
    if removed:
        message = (f"Removed {len(removed)} unfinished file(s) left by an earlier interrupted run next to {target} "
                   f"(for example {removed[0].name}).")
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return removed


def _temporary_name(target: Path, suffix: str = "") -> Path:
    return _parent(target) / f".{target.name}{PARTIAL}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


# ------------------------------------------------------------------------------ writing


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    if os.name != "posix":
        return
    _fsync_file(path)


def _public_mode(path: Path, folder: bool) -> None:
    """The mode a plain write would give: 0666 (files) or 0777 (folders) less the umask."""
    mode = (0o777 if folder else 0o666) & ~current_umask()
    os.chmod(path, mode)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as error:  # pragma: no cover - best effort while already failing
        logger.debug("cannot remove %s: %s", path, error)


def _write_failed(target: Path, error: OSError) -> OutputError:
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif error.errno == errno.EROFS:
        reason = "the file system is read-only"
    return OutputError(f"Could not write {target}: {reason}. Nothing was written; free space or choose another "
                       "location and run again.")


class AtomicFile:
    """The temporary side of one file write: :attr:`path` to write to, companions to rename with it."""

    def __init__(self, target: Path, suffix: str) -> None:
        self.target = target
        self.path = _temporary_name(target, suffix)
        self._companions: List[Tuple[Path, Path]] = []

    def companion(self, final: PathLike, temporary: Optional[PathLike] = None) -> Path:
        """Register a file that travels with the main one (an .mhd's .raw); returns its temporary path."""
        final = _as_path(final)
        tmp = _as_path(temporary) if temporary is not None else _temporary_name(final)
        self._companions.append((tmp, final))
        return tmp

    def _temporaries(self) -> List[Path]:
        return [self.path] + [tmp for tmp, _ in self._companions]

    def _commit(self) -> None:
        for tmp, final in self._companions:
            _fsync_file(tmp)
            _public_mode(tmp, folder=False)
            os.replace(tmp, final)
        if not self.path.exists():
            raise OutputError(f"Could not write {self.target}: the writer produced no file. Nothing was written.")
        _fsync_file(self.path)
        _public_mode(self.path, folder=False)
        os.replace(self.path, self.target)
        _fsync_folder(_parent(self.target))


def _suffix_of(target: Path) -> str:
    """The full type suffix writers choose the format by (``.nii.gz`` counts as one)."""
    name = target.name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return target.name[-len(double):]
    return target.suffix


@contextlib.contextmanager
def atomic_file(target: PathLike, keep_suffix: bool = True) -> Iterator[AtomicFile]:
    """Write a file atomically: ``with atomic_file(out) as f: write(f.path)``.

    The temporary file sits beside ``target`` and keeps its suffix (so format-by-name
    writers such as SimpleITK or matplotlib pick the right one).  On success it is
    fsynced, given the umask's mode and renamed onto ``target``; on any exception,
    KeyboardInterrupt included, it is removed.  An OSError (disk full, permission)
    becomes :class:`OutputError` saying that nothing was written.  The caller checks the
    target first with :func:`check_output`.
    """
    target = _as_path(target)
    remove_stale_partials(target)
    handle = AtomicFile(target, _suffix_of(target) if keep_suffix else "")
    try:
        yield handle
        handle._commit()
    except BaseException as error:
        for path in handle._temporaries():
            _remove(path)
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            raise _write_failed(target, error) from None
        raise


@contextlib.contextmanager
def atomic_folder(target: PathLike) -> Iterator[Path]:
    """Write a folder atomically: ``with atomic_folder(out) as tmp: write files into tmp``.

    On success the files and the folder are fsynced, given the umask's modes, and the
    folder is renamed onto ``target``; an existing ``target`` (already allowed by
    :func:`check_output`) is moved aside first and removed only once the new one is in
    place.  On any exception the temporary folder is removed and an existing target is
    left as it was.
    """
    target = _as_path(target)
    remove_stale_partials(target)
    tmp = _temporary_name(target)
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync_file(path)
                _public_mode(path, folder=False)
            elif path.is_dir():
                _public_mode(path, folder=True)
        _public_mode(tmp, folder=True)
        _fsync_folder(tmp)
        _replace_folder(tmp, target)
        _fsync_folder(_parent(target))
    except BaseException as error:
        _remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            raise _write_failed(target, error) from None
        raise


def _replace_folder(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
        os.replace(tmp, target)
        return
    backup = _temporary_name(target, ".old")
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    _remove(backup)


def write_bytes(target: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_file`)."""
    target = _as_path(target)
    with atomic_file(target, keep_suffix=False) as handle:
        with open(handle.path, "wb") as stream:
            stream.write(data)
    return target


def write_text(target: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically (see :func:`atomic_file`)."""
    return write_bytes(target, text.encode(encoding))


def json_ready(value):
    """A report made JSON-writable: non-finite floats become None (JSON has no inf/NaN), numpy scalars
    Python numbers, keys strings; used by every JSON report the library writes."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def file_mode(path: PathLike) -> int:
    """The permission bits of ``path`` (for tests and messages)."""
    return stat.S_IMODE(os.stat(path).st_mode)
