"""Masks computed once per object image and stored as 8-bit PNGs.

Layout: ``cache_dir/<segmenter.cache_key()>/<file_digest(image)>.png`` (value x 255, at the
image's own resolution). The key joins the file *content* and the segmenter *settings and
weights*, so an edited image or a retrained model gives new masks, never stale ones.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.files import file_digest
from ..utils.image import BadImageError, read_image, write_image
from .base import Segmenter

log = logging.getLogger(__name__)


class MaskCache:
    """Read-or-compute soft masks for image files (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, segmenter: Segmenter):
        self.segmenter = segmenter
        self.root = Path(cache_dir) / segmenter.cache_key()

    def mask_path(self, path: str | os.PathLike) -> Path:
        """Where the mask of image file ``path`` is (or will be) stored."""
        return self.root / f"{file_digest(path)}.png"

    def _read(self, mpath: Path) -> np.ndarray | None:
        if not mpath.is_file():
            return None
        m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
        if m is None:  # a corrupt entry: recompute it
            log.warning("unreadable cached mask %s; recomputing", mpath)
            return None
        return m.astype(np.float32) / 255.0

    def _store(self, mpath: Path, mask: np.ndarray) -> np.ndarray:
        q = np.clip(np.round(mask * 255.0), 0, 255).astype(np.uint8)
        write_image(mpath, q)
        return q.astype(np.float32) / 255.0  # what a later read returns

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """Float32 ``HxW`` mask in [0, 1] of image file ``path`` (computed and stored if missing).

        Raises :class:`BadImageError` for an unreadable image.
        """
        path = Path(path)
        if not path.is_file():
            raise BadImageError(path, "file not found")
        mpath = self.mask_path(path)
        mask = self._read(mpath)
        if mask is None:
            image = read_image(path)
            mask = self._store(mpath, self.segmenter.segment([image], paths=[path])[0])
        return mask

    def prepare(self, paths: Sequence[str | os.PathLike], batch_size: int = 16, progress: bool = True) -> dict:
        """Segment every image of ``paths`` that has no cached mask yet, ``batch_size`` at a time.

        Returns ``{"total", "cached", "computed", "skipped"}``; unreadable images (or images the
        segmenter rejects with :class:`BadImageError`) are skipped, counted and logged.
        """
        counts = {"total": len(paths), "cached": 0, "computed": 0, "skipped": 0}
        todo: list[tuple[Path, Path]] = []
        for p in paths:
            p = Path(p)
            try:
                mpath = self.mask_path(p)
            except OSError as e:
                counts["skipped"] += 1
                log.warning("skipping %s: %s", p, e)
                continue
            if mpath.is_file():
                counts["cached"] += 1
            else:
                todo.append((p, mpath))
        bar = tqdm(total=len(todo), desc=f"masks [{self.segmenter.name}]", unit="img", disable=not progress or not todo)
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            images, ok = [], []
            for p, mpath in chunk:
                try:
                    images.append(read_image(p))
                    ok.append((p, mpath))
                except BadImageError as e:
                    counts["skipped"] += 1
                    log.warning("skipping %s", e)
            try:
                masks = self.segmenter.segment(images, paths=[p for p, _ in ok]) if images else []
                pairs = list(zip(ok, masks))
            except BadImageError:  # one bad file in the batch: retry one by one to isolate it
                pairs = []
                for (p, mpath), im in zip(ok, images):
                    try:
                        pairs.append(((p, mpath), self.segmenter.segment([im], paths=[p])[0]))
                    except BadImageError as e:
                        counts["skipped"] += 1
                        log.warning("skipping %s", e)
            for (_, mpath), mask in pairs:
                self._store(mpath, mask)
                counts["computed"] += 1
            bar.update(len(chunk))
        bar.close()
        if counts["skipped"]:
            log.warning("mask cache: skipped %d of %d images (see warnings above)", counts["skipped"], counts["total"])
        log.info("mask cache %s: %s", self.root, counts)
        return counts
