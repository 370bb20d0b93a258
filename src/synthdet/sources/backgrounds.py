"""Background photos: a folder, an explicit list, or Pascal VOC minus images with excluded classes.

Photos are decoded once at a bounded working size (JPEGs are decoded directly at a reduced scale
by libjpeg, then area-downscaled so the short side is ``work_size``, by default 1.25 x the
requested canvas) and kept in a bounded LRU cache, so drawing a background is one crop and one
small resize. Bad files are skipped and counted; if every file is bad the source raises.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..utils.files import IMAGE_EXTENSIONS, list_images
from ..utils.image import BadImageError, read_image
from ..utils.inputs import BadFile, check_images, warn_skipped
from .base import CachedSource

log = logging.getLogger(__name__)


def decode_reduced(path: str | os.PathLike, min_short_side: int) -> np.ndarray:
    """Decode ``path`` to uint8 RGB whose short side is about ``min_short_side`` (never upscaled).

    The one reader (:func:`~synthdet.utils.image.read_image`, EXIF orientation applied) with
    ``reduce_to``: JPEGs use libjpeg's DCT scaling, so a 2560 px photo costs a fraction of a full
    decode; then an area downscale to the short side.
    """
    arr = read_image(path, reduce_to=min_short_side)
    h, w = arr.shape[:2]
    s = min(h, w)
    if s > min_short_side:
        f = min_short_side / s
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


class BackgroundSource(CachedSource):
    """Random background canvases from photos.

    ``draw(rng, size)`` returns uint8 ``size x size x 3``: a random crop of ``crop`` (low, high)
    times each side of a random photo (1.0 = the whole photo, as in the paper), resized to the
    canvas (a photo smaller than the canvas is upscaled), flipped horizontally with ``flip_p``.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], cache_items: int = 64, work_size: int | None = None,
                 crop: tuple[float, float] = (1.0, 1.0), flip_p: float = 0.0, max_bad_draws: int = 1000) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("BackgroundSource: no background images given")
        if not (0 < crop[0] <= crop[1] <= 1):
            raise ValueError(f"BackgroundSource: crop must satisfy 0 < low <= high <= 1, got {crop}")
        self.cache_items = max(0, int(cache_items))
        self.work_size = work_size
        self.crop = (float(crop[0]), float(crop[1]))
        self.flip_p = float(flip_p)
        self.max_bad_draws = max_bad_draws
        self.skipped: list[BadFile] = []  # left out by precheck()
        self._init_state()

    def precheck(self, progress: bool = True, where: str = "backgrounds") -> list[BadFile]:
        """Probe every photo up front (:func:`~synthdet.utils.inputs.check_images`) and leave out
        the bad ones: returned, kept in ``skipped`` and warned about. Raises ValueError when none
        is usable."""
        good, bad = check_images(self.paths, desc=f"checking {where}", progress=progress)
        if not good:
            raise ValueError(f"{where}: none of the {len(self.paths)} background images can be used "
                             f"(first: {bad[0].path}: {bad[0].problem})")
        self.paths = [self.paths[i] for i in good]
        self.skipped = bad
        warn_skipped(bad, len(good) + len(bad), where)
        return bad

    def _init_state(self) -> None:
        super()._init_state()
        self.stats["upscaled"] = 0

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_folder(cls, root: str | os.PathLike, **kwargs: Any) -> "BackgroundSource":
        """All images under ``root`` (recursive). Raises, naming the folder, if there are none."""
        paths = list_images(root)
        if not paths:
            raise ValueError(f"{root}: no background images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        return cls(paths, **kwargs)

    @classmethod
    def from_voc(cls, voc_root: str | os.PathLike, image_sets: Sequence[str] = ("trainval",),
                 exclude: Sequence[str] = ("person",), **kwargs: Any) -> "BackgroundSource":
        """Pascal VOC images of ``image_sets`` that contain none of the ``exclude`` classes."""
        from ..datasets.voc import voc_background_paths

        paths = voc_background_paths(voc_root, image_sets=image_sets, exclude=exclude)
        if not paths:
            raise ValueError(f"{voc_root}: no VOC background image left in {list(image_sets)} "
                             f"after excluding {list(exclude)}")
        return cls(paths, **kwargs)

    def get(self, index: int, work: int) -> np.ndarray:
        """Photo ``index`` decoded with short side <= ``work`` (cached). Raises BadImageError."""
        key = (index, work)
        hit = self._cache_get(key)
        if hit is not None:
            return hit
        if index in self._bad:
            raise BadImageError(self.paths[index], self._bad[index])
        try:
            img = decode_reduced(self.paths[index], work)
        except BadImageError as e:
            self._bad[index] = e.reason
            self.stats["bad_files"] += 1
            log.warning("skipping background %s (%d bad so far)", e, len(self._bad))
            raise
        img.setflags(write=False)
        self.stats["loaded"] += 1
        self._cache_put(key, img)
        return img

    def _resize(self, patch: np.ndarray, size: int) -> np.ndarray:
        ch, cw = patch.shape[:2]
        if min(cw, ch) < size:
            self.stats["upscaled"] += 1
        interp = cv2.INTER_AREA if cw * ch > size * size else cv2.INTER_LINEAR
        return cv2.resize(patch, (size, size), interpolation=interp)

    def _whole(self, index: int, work: int, size: int, img: np.ndarray) -> np.ndarray:
        key = (index, -size)
        hit = self._cache_get(key)
        if hit is None:
            hit = self._resize(img, size)
            hit.setflags(write=False)
            self._cache_put(key, hit)
        return hit

    def draw(self, rng: np.random.Generator, size: int, crop: tuple[float, float] | None = None,
             flip_p: float | None = None) -> np.ndarray:
        """A writable uint8 ``size x size x 3`` background drawn with ``rng`` only.

        ``crop`` / ``flip_p`` override the source's defaults for this call.
        """
        crop = self.crop if crop is None else crop
        flip_p = self.flip_p if flip_p is None else flip_p
        work = self.work_size or int(round(1.25 * size))
        for _ in range(self.max_bad_draws):
            index = int(rng.integers(len(self.paths)))
            try:
                img = self.get(index, work)
            except BadImageError:
                if len(self._bad) >= len(self.paths):
                    break
                continue
            h, w = img.shape[:2]
            f = float(rng.uniform(*crop))
            cw, ch = max(1, min(w, round(w * f))), max(1, min(h, round(h * f)))
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            if (cw, ch) == (w, h):  # whole photo (the paper's default): resize once, then copy
                out = self._whole(index, work, size, img).copy()
            else:
                out = self._resize(img[y0 : y0 + ch, x0 : x0 + cw], size)
            if rng.random() < flip_p:
                out = np.ascontiguousarray(out[:, ::-1])
            return out
        raise RuntimeError(f"no usable background image ({len(self._bad)} of {len(self.paths)} files are bad, "
                           f"first: {self.paths[next(iter(self._bad))] if self._bad else '?'})")
