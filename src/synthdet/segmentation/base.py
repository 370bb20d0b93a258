"""The segmenter contract (the registry of names is :mod:`.registry`).

A segmenter turns object images into soft foreground masks without any mask or box labels:
``segment(images) -> masks``, with ``images`` a list of ``uint8`` ``HxWx3`` RGB arrays and
``masks`` a list of ``float32`` ``HxW`` arrays in ``[0, 1]`` (1 = object), same ``HxW`` as each
input. ``cache_key()`` names the settings and weights, so that :class:`~.cache.MaskCache`
recomputes masks when either changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..utils.image import to_rgb_uint8


@runtime_checkable
class Segmenter(Protocol):
    """Image(s) in, soft foreground mask(s) out (see the module docstring)."""

    name: str

    def cache_key(self) -> str:
        """A short folder-safe string that changes whenever settings or weights change."""
        ...

    def segment(
        self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None
    ) -> list[np.ndarray]:
        """``images``: uint8 HxWx3 RGB; returns float32 HxW masks in [0, 1], same HxW.

        ``paths`` (optional, same length) names each image's file; only segmenters that
        read per-file data (``file``) need it.
        """
        ...


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any image array (grey, RGBA, 16-bit, float) -> ``uint8`` ``HxWx3`` RGB."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    return to_rgb_uint8(arr)[0]


def safe_key(*parts: object) -> str:
    """Join ``parts`` into a folder-safe cache key."""
    text = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
