"""Output folders synthdet owns: an ownership marker, a writer lock, and build-then-rename.

- Every folder synthdet builds into carries ``.synthdet`` (JSON: which command wrote it). A
  non-empty folder without it was not written by synthdet and is never deleted or written into,
  unless the caller passes ``force`` (the user's ``--force``).
- :func:`locked` holds an exclusive lock (``.<name>.lock`` next to the folder, holding the
  writer's pid) while a folder is written; a second writer is refused. The lock is an OS file
  lock, so one left by a killed process is simply taken over.
- :func:`build_then_rename` builds a folder under a temporary sibling name and renames it into
  place when complete, so a reader never sees a half-written dataset.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from .files import pid_alive

MARKER = ".synthdet"


class NotOursError(FileExistsError):
    """A folder holds files synthdet did not write; the message says how to proceed."""


class LockedError(FileExistsError):
    """Another process is writing the same output folder."""


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``.synthdet`` marker of ``folder`` as a dict, or None when there is none."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_marker(folder: str | os.PathLike, writer: str, **info: Any) -> None:
    """Mark ``folder`` as written by synthdet command ``writer`` (extra ``info`` is stored too)."""
    from .files import atomic_write_json

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(Path(folder) / MARKER, {"writer": writer, "written": stamp, **info})


def is_ours(folder: str | os.PathLike, legacy: tuple[str, ...] = (), writer: str | None = None) -> bool:
    """True if ``folder`` is missing, empty, marked (by ``writer``, when given), or holds one of
    the ``legacy`` files (what an older synthdet left there before markers existed)."""
    folder = Path(folder)
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    marker = read_marker(folder)
    if marker is not None:
        return writer is None or marker.get("writer", writer) == writer
    if any((folder / name).is_file() for name in legacy):
        return True
    return not any(folder.iterdir())


def check_ours(folder: str | os.PathLike, force: bool = False, legacy: tuple[str, ...] = (),
               hint: str = "choose another folder, or pass --force to replace it", writer: str | None = None) -> None:
    """Raise :class:`NotOursError` unless synthdet (command ``writer``) may (re)write ``folder``
    (see :func:`is_ours`)."""
    folder = Path(folder)
    if force or is_ours(folder, legacy, writer):
        return
    marker = read_marker(folder) if folder.is_dir() else None
    if not folder.is_dir():
        what = "is a file"
    elif marker is not None:
        what = f"was written by 'synthdet {marker.get('writer')}', not by 'synthdet {writer}'"
    else:
        what = f"holds files synthdet did not write (no {MARKER} marker)"
    raise NotOursError(f"{folder}: {what}; {hint}")


def make_parent(folder: Path) -> None:
    """Create ``folder``'s parent; a file in the way is named in a NotADirectoryError."""
    for p in (folder.parent, *folder.parent.parents):
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(f"{p}: is a file, so {folder} cannot be created")
            break
    folder.parent.mkdir(parents=True, exist_ok=True)


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the writer lock of ``folder`` (created if needed) for the ``with`` block.

    Raises :class:`LockedError` naming the other writer's pid when the folder is being written.
    """
    import fcntl

    folder = Path(folder).absolute()
    make_parent(folder)
    path = _lock_path(folder)
    fd = _acquire(path, fcntl)
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:  # e.g. a full disk: name the lock file
            raise OSError(e.errno, e.strerror, str(path)) from e
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # closing releases the lock


def _acquire(path: Path, fcntl: Any) -> int:
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(path)
            raise LockedError(f"{path.parent / path.name[1:-5]}: being written by another synthdet process "
                              f"(pid {pid or '?'}, lock {path}); wait for it to finish or use another folder"
                              ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file between our open and lock: retry
            return fd
        os.close(fd)
    raise LockedError(f"{path}: could not take the lock (it keeps changing)")


def _read_pid(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def remove_stale_builds(folder: Path) -> None:
    """Remove ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` siblings left by killed builds."""
    for p in folder.parent.glob(f".{folder.name}.*-*"):
        kind, _, pid = p.name[len(folder.name) + 2:].partition("-")
        # a folder of this very process from before is never in use by this call
        if kind in ("tmp", "old") and pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def build_then_rename(folder: str | os.PathLike, writer: str, force: bool = False,
                      legacy: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``folder`` to build into; on success it is marked
    (``writer``) and replaces ``folder``. Refuses a ``folder`` synthdet did not write (unless
    ``force``) and a second concurrent writer. On error ``folder`` is left as it was."""
    folder = Path(folder).absolute()
    check_ours(folder, force, legacy, writer=writer)
    with locked(folder):
        check_ours(folder, force, legacy, writer=writer)  # again: it may have changed meanwhile
        remove_stale_builds(folder)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            write_marker(tmp, writer)
            _swap_in(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(tmp, folder)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
