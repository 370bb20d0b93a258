"""sources stage: object instances (folders of images, generators) and background photos.

Exports are lazy (PEP 562): the generator modules import torch, the CLI should not have to.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports
from .base import ObjectSample, ObjectSource

_EXPORTS = {
    "BackgroundSource": ".backgrounds",
    "FolderObjectSource": ".objects",
    "GeneratorObjectSource": ".generator",
    "load_generator": ".generator",
}

__all__ = sorted([*_EXPORTS, "ObjectSample", "ObjectSource"])


__getattr__ = lazy_exports(__name__, _EXPORTS)
