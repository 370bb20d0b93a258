"""FDDB (Face Detection Data Set and Benchmark): ellipse folds -> box records.

On-disk layout::

    FDDB-folds/FDDB-fold-01-ellipseList.txt ... FDDB-fold-10-ellipseList.txt
    originalPics/2002/08/11/big/img_591.jpg

Each ellipse list repeats: an image path without extension (relative to ``originalPics``), the
face count, then one line per face ``major_axis_radius minor_axis_radius angle center_x center_y 1``
(angle in radians, of the major axis from the x axis). A face's box is the exact bounding box of
the rotated ellipse, clipped to the image. The paper's split: folds 1-5 train (1449 images),
6-7 val (581), 8-10 test (815).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ._common import clean_boxes, image_sizes, log_summary, parse_numbers, read_counted_blocks, require_dir
from .records import DetectionRecord

logger = logging.getLogger(__name__)

FDDB_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5),
    "val": (6, 7),
    "test": (8, 9, 10),
    "trainval": (1, 2, 3, 4, 5, 6, 7),
    "all": tuple(range(1, 11)),
}


def ellipse_to_box(major: np.ndarray, minor: np.ndarray, angle: np.ndarray,
                   cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding box ``[N, 4]`` XYXY of ellipses (semi-axes, angle in radians, centre).

    The half extents are ``sqrt(a^2 cos^2 t + b^2 sin^2 t)`` (x) and ``sqrt(a^2 sin^2 t + b^2 cos^2 t)``
    (y) for semi-major axis ``a`` at angle ``t`` and semi-minor axis ``b``; the result is unclipped.
    """
    a, b, t = (np.asarray(v, np.float64) for v in (major, minor, angle))
    cx, cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
    hw = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
    hh = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1).reshape(-1, 4)


def _parse_fold(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(image name without extension, ellipses [N, 5])`` per image of one ellipse list."""
    out = []
    for name, _, _, block in read_counted_blocks(path, "FDDB ellipse list"):
        ell = []
        for lineno, line in block:
            vals = parse_numbers(line.split(), path, lineno, min_count=5)
            if len(vals) > 6:
                raise ValueError(f"{path}:{lineno}: expected 'major minor angle cx cy 1', got {len(vals)} values")
            ell.append(vals[:5])
        out.append((name, np.array(ell, np.float64).reshape(-1, 5)))
    return out


def read_fddb(root: str | os.PathLike, split: str | Sequence[int] = "train",
              images_dir: str | os.PathLike | None = None) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read FDDB folds into one-class (``face``) records.

    ``split``: ``train`` (folds 1-5), ``val`` (6-7), ``test`` (8-10), ``trainval``, ``all``, or an
    explicit list of fold numbers 1..10. ``images_dir`` defaults to ``root/originalPics``; image
    files are ``<name>.jpg``. Boxes: exact bounding box of each ellipse, clipped to the image
    (XYXY exclusive end). ``extra["ellipses"]``: float32 ``[N, 5]`` (major, minor, angle, cx, cy)
    of the kept boxes; ``extra["fold"]``: the fold number.
    """
    root = Path(root)
    require_dir(root, "FDDB root")
    if isinstance(split, str):
        if split not in FDDB_SPLITS:
            raise ValueError(f"unknown FDDB split {split!r}; expected one of {sorted(FDDB_SPLITS)} or fold numbers")
        folds = FDDB_SPLITS[split]
    else:
        folds = tuple(int(f) for f in split)
        if not folds or any(not 1 <= f <= 10 for f in folds):
            raise ValueError(f"FDDB folds must be in 1..10, got {list(split)}")
    images_dir = Path(images_dir) if images_dir is not None else root / "originalPics"
    entries = []
    for fold in folds:
        path = root / "FDDB-folds" / f"FDDB-fold-{fold:02d}-ellipseList.txt"
        entries += [(fold, name, ell) for name, ell in _parse_fold(path)]
    paths = [images_dir / f"{name}.jpg" for _, name, _ in entries]
    sizes = image_sizes(paths, desc="FDDB image sizes")
    records, dropped = [], 0
    for n, ((fold, name, ell), path, (w, h)) in enumerate(zip(entries, paths, sizes), 1):
        boxes = ellipse_to_box(*ell.T)
        boxes, keep, per_box = clean_boxes(boxes, w, h, f"FDDB {name}", {"ellipses": ell.astype(np.float32)})
        dropped += int((~keep).sum())
        records.append(DetectionRecord(
            image_path=str(path), width=w, height=h, boxes=boxes, labels=np.ones(len(boxes), np.int64),
            image_id=n, extra={"ellipses": per_box["ellipses"].reshape(-1, 5), "fold": fold},
        ))
    log_summary(f"FDDB {root} (folds {list(folds)})", records, dropped)
    return records, {1: "face"}
