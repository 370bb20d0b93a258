"""sources stage: object instances (folders of images, generators) and background photos.

Exports are lazy (PEP 562): the generator modules import torch, the CLI should not have to.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import ObjectSample, ObjectSource

_EXPORTS = {
    "BackgroundSource": ".backgrounds",
    "FolderObjectSource": ".objects",
    "GeneratorObjectSource": ".generator",
    "load_generator": ".generator",
}

__all__ = sorted([*_EXPORTS, "ObjectSample", "ObjectSource"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
