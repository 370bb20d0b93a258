"""Atomic writes and file listing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    A crash mid-write leaves the previous file (or nothing) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename is None and e.errno:  # e.g. a full disk during write(): name the file
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


_CLEANED: set[str] = set()  # folders already cleaned by this process


def _remove_stale_temps(folder: Path) -> None:
    """Delete ``.<name>.<pid>.<random>.tmp`` files of :func:`atomic_path` whose writer process is
    gone (killed mid-write). Done once per folder and process, so it costs one listing."""
    key = str(folder.absolute())
    if key in _CLEANED:
        return
    _CLEANED.add(key)
    for p in folder.glob(".*.tmp"):
        pid = p.name[:-len(".tmp")].rsplit(".", 2)[-2] if p.name.count(".") >= 4 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                p.unlink()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename. A failed write (a full disk)
    raises its OSError naming ``path``, not torch's serializer message."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


class _RecordingWriter:
    """A file for ``torch.save`` that keeps the OSError of a failed write (torch reports it as
    an ``unexpected pos`` RuntimeError)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``root`` (hidden files skipped). Raises if ``root`` is missing.

    Image-named symlinks that lead nowhere (a missing target, a loop) are listed too, so that the
    input checks name them instead of the file silently not being there."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p
        for p in it
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        and (p.is_file() or (p.is_symlink() and not p.exists()))
    )


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """Hex digest (blake2b) of a file's content, used as a cache key."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
