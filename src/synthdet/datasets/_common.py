"""Helpers shared by the real-dataset readers: image sizes, line parsing, box clean-up, splits."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..utils.image import probe_image
from ..utils.inputs import BadFile, probe_all
from .records import validate_boxes

logger = logging.getLogger(__name__)


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming it and ``what`` it is."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file after EXIF orientation, from its header (the pixels
    are not decoded; see :mod:`synthdet.utils.image`). Raises BadImageError naming the problem."""
    return probe_image(path).size


def image_sizes(paths: Sequence[str | os.PathLike], desc: str) -> list[tuple[int, int]]:
    """Header sizes (after EXIF orientation) of many images, in threads, with a progress bar for
    large datasets. An image whose header cannot be read gets ``(0, 0)``, "size unknown": the
    reader keeps going, and the commands' up-front check
    (:func:`~synthdet.datasets.check.check_records`) names the file and its problem."""
    return [(0, 0) if isinstance(r, BadFile) else r.size for r in probe_all(paths, desc=desc)]


def read_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, stripped line)`` for the non-blank lines of a text file."""
    require_file(path, what)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if line:
                yield lineno, line


def read_counted_blocks(path: Path, what: str, dummy_line_on_zero: bool = False
                        ) -> Iterator[tuple[str, int, int, list[tuple[int, str]]]]:
    """Blocks of ``name`` / ``count`` / ``count`` lines (FDDB ellipse lists, WIDER Face gt files).

    Yields ``(name, count, count's line number, [(lineno, line), ...])`` per block, lazily, so a
    caller that checks each block reports the first bad one. ``dummy_line_on_zero``: a count of 0
    is followed by one placeholder line (WIDER Face), which is skipped. Truncated blocks or a
    non-integer count raise ValueError naming file and line.
    """
    lines = list(read_lines(path, what))
    i = 0
    while i < len(lines):
        _, name = lines[i]
        if i + 1 >= len(lines):
            raise ValueError(f"{path}:{lines[i][0]}: image {name!r} has no face count line")
        lineno, count_text = lines[i + 1]
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected a face count after {name!r}, got {count_text!r}") from None
        nlines = max(count, 1) if dummy_line_on_zero else count
        if count < 0 or i + 2 + nlines > len(lines):
            raise ValueError(f"{path}:{lineno}: face count {count} but only {len(lines) - i - 2} lines follow")
        yield name, count, lineno, lines[i + 2:i + 2 + count]
        i += 2 + nlines


def parse_numbers(tokens: Sequence[str], path: Path, lineno: int, count: int | None = None,
                  min_count: int | None = None) -> list[float]:
    """Parse ``tokens`` as floats; a wrong count or a non-number raises ValueError naming file:line."""
    if count is not None and len(tokens) != count:
        raise ValueError(f"{path}:{lineno}: expected {count} values, got {len(tokens)}: {' '.join(tokens)!r}")
    if min_count is not None and len(tokens) < min_count:
        raise ValueError(f"{path}:{lineno}: expected at least {min_count} values, got {len(tokens)}: "
                         f"{' '.join(tokens)!r}")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: not a number in {' '.join(tokens)!r}") from None
    if not all(np.isfinite(values)):
        raise ValueError(f"{path}:{lineno}: non-finite value in {' '.join(tokens)!r}")
    return values


def clean_boxes(boxes: np.ndarray, width: int, height: int, where: str,
                per_box: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Clip XYXY boxes to the image and drop empty ones.

    Returns ``(boxes [M, 4] float32, keep [N] bool, per_box filtered by keep)``; ``per_box`` holds
    arrays aligned with the input boxes (labels, flags) that must follow the same filtering.
    """
    boxes = validate_boxes(boxes, width, height, where)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    per_box = {k: np.asarray(v)[keep] for k, v in (per_box or {}).items()}
    return boxes[keep], keep, per_box


def carve_split(ids: Sequence[int], split: str, val_size: int, seed: int,
                test_ids: Sequence[int]) -> list[int]:
    """Pick ``split`` out of ``ids`` given the test ids; val is a seeded draw of ``val_size`` non-test ids.

    Splits: ``train`` (non-test minus val), ``val``, ``trainval`` (non-test), ``test``, ``all``.
    The order of ``ids`` is kept.
    """
    test = set(int(i) for i in test_ids)
    if split == "all":
        return list(ids)
    if split == "test":
        return [i for i in ids if i in test]
    trainval = [i for i in ids if i not in test]
    if split == "trainval":
        return trainval
    if val_size < 0 or val_size > len(trainval):
        raise ValueError(f"val_size={val_size} but only {len(trainval)} non-test images")
    perm = np.random.default_rng(seed).permutation(len(trainval))
    val = set(trainval[j] for j in perm[:val_size])
    if split == "val":
        return [i for i in trainval if i in val]
    if split == "train":
        return [i for i in trainval if i not in val]
    raise ValueError(f"unknown split {split!r}; expected one of train, val, trainval, test, all")


def log_summary(name: str, records: Sequence, dropped: int, skipped: int = 0) -> None:
    boxes = sum(len(r.boxes) for r in records)
    msg = f"{name}: {len(records)} images, {boxes} boxes"
    if dropped:
        msg += f", {dropped} empty/out-of-image boxes dropped"
    if skipped:
        msg += f", {skipped} skipped"
    logger.info(msg)
