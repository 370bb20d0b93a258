"""Segmenters without learning: ``none`` (whole frame), ``ellipse`` (centred baseline), ``file``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..utils.files import IMAGE_EXTENSIONS
from ..utils.image import BadImageError, read_image_rgba
from .base import as_rgb, safe_key


class NoneSegmenter:
    """All-ones masks: the whole object frame is pasted ("naive pasting" ablation)."""

    name = "none"

    def cache_key(self) -> str:
        return "none"

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        return [np.ones(as_rgb(im).shape[:2], np.float32) for im in images]


def ellipse_mask(height: int, width: int, axes: float = 0.75) -> np.ndarray:
    """Binary float32 ``HxW`` mask of the centred ellipse whose diameters are ``axes`` x W, H."""
    yy = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / (axes * height / 2)
    xx = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / (axes * width / 2)
    return (yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0).astype(np.float32)


class EllipseSegmenter:
    """Trivial baseline: a centred ellipse covering ``axes`` of each side (ignores the pixels)."""

    name = "ellipse"

    def __init__(self, axes: float = 0.75):
        if not 0 < axes <= 2:
            raise ValueError(f"ellipse axes must be in (0, 2], got {axes}")
        self.axes = float(axes)

    def cache_key(self) -> str:
        return safe_key("ellipse", self.axes)

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        out = []
        for im in images:
            h, w = as_rgb(im).shape[:2]
            out.append(ellipse_mask(h, w, self.axes))
        return out


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as float32 ``HxW`` in [0, 1]: the alpha channel if any, else grey level."""
    rgb, alpha = read_image_rgba(path)
    if alpha is not None:
        return alpha
    return (rgb.astype(np.float32).mean(axis=2) / 255.0).astype(np.float32)


class FileSegmenter:
    """Masks the user already has: ``mask_dir/<image stem>.<png|...>``, grey or alpha, resized.

    Needs ``paths`` in :meth:`segment` (the image file names); a missing mask raises
    :class:`BadImageError` naming the image, so callers can skip and count it.
    """

    name = "file"

    def __init__(self, mask_dir: str | os.PathLike):
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.mask_dir}")
        self._index = {
            p.stem: p
            for p in sorted(self.mask_dir.iterdir(), reverse=True)  # .png wins over .jpg
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        }

    def cache_key(self) -> str:
        h = hashlib.blake2b(str(self.mask_dir.resolve()).encode(), digest_size=6)
        for stem, p in sorted(self._index.items()):
            st = p.stat()
            h.update(f"{stem}:{st.st_size}:{st.st_mtime_ns};".encode())
        return safe_key("file", h.hexdigest())

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        if paths is None or len(paths) != len(images):
            raise ValueError("the 'file' segmenter needs the image paths (segment(images, paths=...))")
        out = []
        for im, path in zip(images, paths):
            h, w = as_rgb(im).shape[:2]
            mpath = self._index.get(Path(path).stem)
            if mpath is None:
                raise BadImageError(path, f"no mask named {Path(path).stem}.* in {self.mask_dir}")
            m = read_mask(mpath)
            if m.shape != (h, w):
                m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
            out.append(np.clip(m, 0.0, 1.0).astype(np.float32))
        return out
