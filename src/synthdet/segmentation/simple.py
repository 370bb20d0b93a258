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
    """All-ones masks: the whole frame is the object (a ``segment eval`` baseline). In the synthesis
    stream ``none`` segments nothing at all: objects carry no mask and are pasted naively (whole
    frame, opaque, whole box; see :class:`~synthdet.sources.base.ObjectSample`)."""

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
    """Masks the user already has, laid out like the images: the mask of ``<root>/cat/001.jpg`` is
    ``mask_dir/cat/001.<png|...>`` (grey or alpha, resized to the image). A flat ``mask_dir`` of
    ``<stem>.png`` files still works for a flat image folder.

    Needs ``paths`` in :meth:`segment`. The mask is the one whose path relative to ``mask_dir``
    matches the most trailing parts of the image path (relative to ``image_root`` when given).
    A missing mask, or one mask file claimed by two different images (``cat/001.jpg`` and
    ``dog/001.jpg`` against a flat ``001.png``), raises :class:`BadImageError` naming the image,
    so callers skip and count it instead of pasting the wrong mask.
    """

    name = "file"

    def __init__(self, mask_dir: str | os.PathLike, image_root: str | os.PathLike | None = None):
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.mask_dir}")
        self.image_root = Path(image_root) if image_root is not None else None
        self._index = _index_masks(self.mask_dir)
        self._owner: dict[Path, Path] = {}  # mask file -> the image it was used for

    def cache_key(self) -> str:
        h = hashlib.blake2b(str(self.mask_dir.resolve()).encode(), digest_size=6)
        for key, p in sorted(self._index.items()):
            st = p.stat()
            h.update(f"{key}:{st.st_size}:{st.st_mtime_ns};".encode())
        return safe_key("file", h.hexdigest())

    def mask_for(self, path: str | os.PathLike) -> Path:
        """The mask file of image ``path``; raises :class:`BadImageError` if none or ambiguous."""
        path = Path(path)
        parts = path.with_suffix("").parts
        if self.image_root is not None:
            try:
                parts = path.with_suffix("").relative_to(self.image_root).parts
            except ValueError:
                pass
        found = next((self._index[k] for k in ("/".join(parts[-n:]) for n in range(len(parts), 0, -1))
                      if k in self._index), None)
        if found is None:
            raise BadImageError(path, f"no mask for it in {self.mask_dir} (expected "
                                      f"{'/'.join(parts[-2:]) if len(parts) > 1 else parts[-1]}.png or similar)")
        owner = self._owner.setdefault(found, path.resolve())
        if owner != path.resolve():
            raise BadImageError(path, f"mask {found} is also the match of {owner}; lay the masks out "
                                      f"in the images' subfolders so each image has its own")
        return found

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        if paths is None or len(paths) != len(images):
            raise ValueError("the 'file' segmenter needs the image paths (segment(images, paths=...))")
        out = []
        for im, path in zip(images, paths):
            h, w = as_rgb(im).shape[:2]
            m = read_mask(self.mask_for(path))
            if m.shape != (h, w):
                m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
            out.append(np.clip(m, 0.0, 1.0).astype(np.float32))
        return out


def _index_masks(mask_dir: Path) -> dict[str, Path]:
    """``{"cat/001": mask file}`` for every image file under ``mask_dir``; ``.png`` wins a tie."""
    index: dict[str, Path] = {}
    files = [p for p in mask_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    for p in sorted(files, key=lambda p: (p.suffix.lower() == ".png", str(p))):
        index[p.relative_to(mask_dir).with_suffix("").as_posix()] = p
    return index
