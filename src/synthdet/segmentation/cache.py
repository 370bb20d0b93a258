"""Masks computed once per object image and stored as 8-bit PNGs.

Layout: ``cache_dir/<segmenter.cache_key()>/<file_digest(image)>.png`` (value x 255, at the
image's own resolution). The key joins the file *content* and the segmenter *settings and
weights* (for a segmenter that fits to the images, ``cosegment``: its fitted state), so an edited
image, a retrained model or a refitted segmenter gives new masks, never stale ones. An image whose
mask the quality gates rejected (:mod:`.gates`) gets ``<digest>.rejected`` (the reason) instead.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.files import atomic_write_json, atomic_write_text, file_digest
from ..utils.image import BadImageError, read_image, write_image
from .base import Segmenter
from .gates import segment_checked

log = logging.getLogger(__name__)


class MaskCache:
    """Read-or-compute soft masks for image files (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, segmenter: Segmenter):
        self.segmenter = segmenter
        self.cache_dir = Path(cache_dir)
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """``cache_dir/<segmenter.cache_key()>`` (a segmenter that fits is fitted by :meth:`prepare`)."""
        if self._root is None:
            self._root = self.cache_dir / self.segmenter.cache_key()
        return self._root

    def fit(self, paths: Sequence[str | os.PathLike]) -> None:
        """Fit the segmenter to ``paths`` if it fits to the images (no-op otherwise)."""
        from .gates import fit_if_needed

        if fit_if_needed(self.segmenter, paths):
            self._root = None  # the key names the fitted state

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
        if mpath.with_suffix(".rejected").is_file():
            raise BadImageError(path, f"mask {mpath.with_suffix('.rejected').read_text().strip()}")
        mask = self._read(mpath)
        if mask is None:
            mask, note = segment_checked(self.segmenter, [read_image(path)], [path])[0]
            if mask is None:
                atomic_write_text(mpath.with_suffix(".rejected"), note + "\n")
                raise BadImageError(path, f"mask {note}")
            mask = self._store(mpath, mask)
        return mask

    def prepare(self, paths: Sequence[str | os.PathLike], batch_size: int = 16, progress: bool = True) -> dict:
        """Segment every image of ``paths`` that has no cached mask yet, ``batch_size`` at a time.

        Returns ``{"total", "cached", "computed", "skipped", "rejected"}``; unreadable images (or
        images the segmenter rejects with :class:`BadImageError`) are skipped, counted and logged;
        ``rejected`` counts images whose masks failed the quality gates (now or in an earlier run).
        A segmenter that fits to the images is fitted to ``paths`` first.
        """
        self.fit(paths)
        counts = {"total": len(paths), "cached": 0, "computed": 0, "skipped": 0, "rejected": 0}
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
            elif mpath.with_suffix(".rejected").is_file():
                counts["rejected"] += 1
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
                masks = segment_checked(self.segmenter, images, [p for p, _ in ok]) if images else []
                pairs = list(zip(ok, masks))
            except BadImageError:  # one bad file in the batch: retry one by one to isolate it
                pairs = []
                for (p, mpath), im in zip(ok, images):
                    try:
                        pairs.append(((p, mpath), segment_checked(self.segmenter, [im], [p])[0]))
                    except BadImageError as e:
                        counts["skipped"] += 1
                        log.warning("skipping %s", e)
            for (_, mpath), (mask, note) in pairs:
                if mask is None:
                    atomic_write_text(mpath.with_suffix(".rejected"), note + "\n")
                    counts["rejected"] += 1
                    continue
                self._store(mpath, mask)
                counts["computed"] += 1
            bar.update(len(chunk))
        bar.close()
        if counts["rejected"]:
            log.warning("mask cache: the quality gates rejected %d of %d masks (those images are skipped)",
                        counts["rejected"], counts["total"])
        if counts["skipped"]:
            log.warning("mask cache: skipped %d of %d images (see warnings above)", counts["skipped"], counts["total"])
        log.info("mask cache %s: %s", self.root, counts)
        summary = getattr(self.segmenter, "summary", None)
        gates = summary() if summary else ""
        if summary and not counts["computed"] and (self.root / "counts.json").is_file():
            try:  # nothing segmented now: keep the summary of the run that made the masks
                gates = json.loads((self.root / "counts.json").read_text()).get("gates", gates)
            except (OSError, ValueError):
                pass
        atomic_write_json(self.root / "counts.json", {"segmenter": self.segmenter.name, **counts, "gates": gates})
        return counts
