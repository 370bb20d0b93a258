"""The segmenter registry: names (``redo``, ``grabcut``, ...) -> factories, and fallback chains
with quality gates (``"cosegment,grabcut"``, :mod:`.gates`)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .base import Segmenter

# name -> "module:attribute" of a factory taking keyword settings; resolved on first use so
# that importing the package (and ``synthdet --help``) stays fast (no torch import).
_REGISTRY: dict[str, str | Callable[..., Segmenter]] = {
    "redo": "synthdet.segmentation.redo_segmenter:RedoSegmenter",
    "grabcut": "synthdet.segmentation.grabcut:GrabCutSegmenter",
    "none": "synthdet.segmentation.simple:NoneSegmenter",
    "file": "synthdet.segmentation.simple:FileSegmenter",
    "ellipse": "synthdet.segmentation.simple:EllipseSegmenter",
    "cosegment": "synthdet.segmentation.cosegment:CosegmentSegmenter",
}


def register_segmenter(name: str, factory: Callable[..., Segmenter]) -> None:
    """Add (or replace) a segmenter factory under ``name``."""
    _REGISTRY[name] = factory


def list_segmenters() -> list[str]:
    """Registered segmenter names, sorted."""
    return sorted(_REGISTRY)


def get_segmenter(name: str, **kwargs: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` with its keyword settings.

    ``redo`` takes ``checkpoint=``; ``file`` takes ``mask_dir=``; ``grabcut``, ``ellipse`` and
    ``cosegment`` take optional tuning knobs; ``none`` takes nothing. ``gates=`` (true, or a
    mapping of :class:`~.gates.MaskGates` fields) wraps it in quality gates. A comma-separated
    ``name`` (``cosegment,grabcut``) is a fallback chain with gates (default ones unless
    ``gates=`` says otherwise); its settings are ``{member name: {settings}}``.
    """
    gates = kwargs.pop("gates", None)
    names = [n.strip() for n in name.split(",") if n.strip()]
    if len(names) > 1 or gates not in (None, False):
        from .gates import GatedSegmenter, MaskGates

        multi = len(names) > 1
        bad = sorted(set(kwargs) - set(names)) if multi else []
        if bad:
            raise ValueError(f"segmenter chain {name!r}: settings {bad} name no member (give {{member: {{...}}}})")
        members = [_build(n, **(dict(kwargs.get(n) or {}) if multi else kwargs)) for n in names]
        return GatedSegmenter(members, MaskGates.from_spec(True if gates is None else gates))
    return _build(name, **kwargs)


def _build(name: str, **kwargs: Any) -> Segmenter:
    if name not in _REGISTRY:
        raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(list_segmenters())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"segmenter {name!r}: bad settings {sorted(kwargs)}: {e}") from None
