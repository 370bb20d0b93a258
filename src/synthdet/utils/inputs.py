"""Up-front input checks: every image a command will read is probed cheaply before the work.

:func:`check_images` runs :func:`~synthdet.utils.image.probe_image` (header and last bytes, no
decoding) over many files, in threads, with a progress bar, and splits them into usable ones and
:class:`BadFile` entries. Each command then does one of two things with the bad ones: labelled
data is refused before any work (:func:`refusal`: the count, the first few files one line each,
the option that goes on anyway), unlabelled folders (``predict``'s inputs, object and background
images) are skipped, counted and warned about (:func:`warn_skipped`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from .errors import UserError
from .image import BadImageError, ImageInfo, probe_image

logger = logging.getLogger(__name__)

SHOWN = 5  # bad files named one per line in a refusal or warning
_PROGRESS_MIN = 500  # fewer files are checked without a progress bar
_THREADS_MIN = 64  # fewer files are checked in the calling thread


@dataclass(frozen=True)
class BadFile:
    """An input file left out of the work and why (``problem``: ``file not found``, ...)."""

    path: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.path, "problem": self.problem}


def _probe(path: str | os.PathLike) -> ImageInfo | BadFile:
    try:
        return probe_image(path)
    except BadImageError as e:
        return BadFile(str(path), e.reason)


def default_threads(count: int) -> int:
    """Threads for checking ``count`` files: header reads wait on the disk more than on the CPU."""
    return 1 if count < _THREADS_MIN else min(16, 4 * (os.cpu_count() or 1))


def probe_all(paths: Sequence[str | os.PathLike], desc: str = "checking images", progress: bool = True,
              threads: int | None = None) -> list[ImageInfo | BadFile]:
    """:func:`~synthdet.utils.image.probe_image` of every path, in order: its
    :class:`~synthdet.utils.image.ImageInfo`, or a :class:`BadFile` naming the problem."""
    from tqdm import tqdm

    threads = default_threads(len(paths)) if threads is None else max(1, threads)
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False,
              disable=not progress or len(paths) < _PROGRESS_MIN) as bar:
        if threads == 1:
            out = []
            for p in paths:
                out.append(_probe(p))
                bar.update()
            return out
        with ThreadPoolExecutor(threads) as pool:
            out = []
            for r in pool.map(_probe, paths):
                out.append(r)
                bar.update()
            return out


def check_images(paths: Sequence[str | os.PathLike], desc: str = "checking images", progress: bool = True,
                 threads: int | None = None) -> tuple[list[int], list[BadFile]]:
    """Indices of the usable ``paths`` and the bad ones (see :func:`probe_all`)."""
    results = probe_all(paths, desc, progress, threads)
    good = [i for i, r in enumerate(results) if not isinstance(r, BadFile)]
    return good, [r for r in results if isinstance(r, BadFile)]


def _listing(bad: Sequence[BadFile], rest: str = "") -> list[str]:
    lines = [f"{b.path}: {b.problem}" for b in bad[:SHOWN]]
    if len(bad) > SHOWN:
        lines.append(f"... and {len(bad) - SHOWN} more{rest}")
    return lines


def refusal(bad: Sequence[BadFile], total: int, where: str, option: str = "--skip-bad-images") -> UserError:
    """The error for labelled data with bad images: one line with the count and ``option``, then
    the first few files, ``<file>: <problem>`` each."""
    return UserError(f"{where}: {len(bad)} of {total} images cannot be used; nothing was done: fix or remove "
                     f"them, or pass {option} to drop them and their boxes",
                     details=_listing(bad, f" (a run with {option} lists them all)"))


def warn_skipped(bad: Sequence[BadFile], total: int, where: str, listed_in: str = "") -> None:
    """Log that ``bad`` (of ``total``) images of ``where`` are skipped, naming the first few
    (``listed_in``: where all of them are written, e.g. ``OUT/skipped.json``)."""
    if not bad:
        return
    logger.warning("%s: skipping %d of %d images that cannot be used", where, len(bad), total)
    for line in _listing(bad, f" (all listed in {listed_in})" if listed_in else ""):
        logger.warning("  %s", line)
