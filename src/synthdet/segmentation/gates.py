"""Mask quality gates and segmenter fallback chains.

:class:`MaskGates` checks a soft mask (float32 ``HxW`` in [0, 1], foreground at 0.5) for the
ways unsupervised segmenters fail: foreground area fraction out of range (collapsed to nothing
or to the whole frame), too much of the image border covered (the background was taken, or the
object is cut off), too many connected components, or a largest component holding too little of
the foreground (speckle). For two-region outputs (ReDO) the object is the region that touches
the border less: :meth:`MaskGates.orient` flips a mask whose foreground covers more of the border
than its background does, before the checks (``orient: true``).

:class:`GatedSegmenter` runs segmenters in order (``cosegment,grabcut``): each image gets the mask
of the first one whose mask passes the gates; an image no mask passes is rejected (``None``) and
counted. ``counts`` holds ``{"accepted": {name: n}, "rejected": n, "reasons": {reason: n}}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .base import Segmenter, safe_key


@dataclass(frozen=True)
class MaskGates:
    """Accept a mask only if: ``min_area <= foreground fraction <= max_area``; foreground covers at
    most ``max_border`` of the one-pixel image border; at most ``max_components`` 8-connected
    blobs of at least ``min_component`` of the frame each; the largest blob holds at least
    ``min_largest`` of the foreground. ``orient``: flip two-region masks first (module docstring).
    Defaults: measured on the birds benchmark (docs/segmentation.md)."""

    min_area: float = 0.02
    max_area: float = 0.5
    max_border: float = 0.2
    max_components: int = 3
    min_component: float = 0.002
    min_largest: float = 0.7
    orient: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.min_area <= self.max_area <= 1:
            raise ValueError(f"gates: need 0 <= min_area <= max_area <= 1, got {self.min_area}, {self.max_area}")
        if not 0 <= self.max_border <= 1 or not 0 <= self.min_largest <= 1 or self.max_components < 1:
            raise ValueError("gates: max_border and min_largest must be in [0, 1], max_components >= 1")

    @classmethod
    def from_spec(cls, spec: Any) -> "MaskGates | None":
        """``None``/``False`` -> no gates; ``True``/``"default"`` -> defaults; a mapping -> those fields."""
        if spec is None or spec is False or spec == "none":
            return None
        if spec is True or spec == "default":
            return cls()
        if isinstance(spec, MaskGates):
            return spec
        if not isinstance(spec, dict):
            fields = [f.name for f in dataclasses.fields(cls)]
            raise ValueError(f"gates: expected true/false/default or a mapping of {fields}, got {spec!r}")
        from ..utils.config import from_dict

        return from_dict(cls, spec, where="gates")

    def key(self) -> str:
        return safe_key(*(getattr(self, f.name) for f in dataclasses.fields(self)))

    def orient_mask(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` or ``1 - mask``: whichever region covers less of the image border is the object."""
        fg = mask >= 0.5
        b = _border(fg)
        return (1.0 - mask).astype(np.float32) if b.mean() > 0.5 else mask

    def check(self, mask: np.ndarray) -> str | None:
        """``None`` if ``mask`` (``HxW``) passes every gate, else the first failed gate's name."""
        fg = (np.asarray(mask) >= 0.5).astype(np.uint8)
        area = float(fg.mean())
        if area < self.min_area:
            return "area<min"
        if area > self.max_area:
            return "area>max"
        if float(_border(fg.astype(bool)).mean()) > self.max_border:
            return "border"
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        if int((sizes >= self.min_component * fg.size).sum()) > self.max_components:
            return "components"
        if sizes.max() < self.min_largest * sizes.sum():
            return "fragmented"
        return None


def _border(fg: np.ndarray) -> np.ndarray:
    return np.concatenate([fg[0], fg[-1], fg[1:-1, 0], fg[1:-1, -1]])


class GatedSegmenter:
    """Segmenters tried in order with :class:`MaskGates` (see the module docstring).

    :meth:`segment_checked` returns a mask or ``None`` (rejected) per image; :meth:`segment`
    raises :class:`~synthdet.utils.image.BadImageError` for a rejected image, so callers that
    skip bad images skip it. :meth:`fit` fits the members that need fitting.
    """

    def __init__(self, members: Sequence[Segmenter], gates: MaskGates):
        if not members:
            raise ValueError("a segmenter chain needs at least one segmenter")
        self.members = list(members)
        self.gates = gates
        self.name = ",".join(m.name for m in self.members)
        self.counts: dict[str, Any] = {"accepted": Counter(), "rejected": 0, "reasons": Counter()}

    def cache_key(self) -> str:
        h = hashlib.blake2b(digest_size=6)
        h.update("|".join(m.cache_key() for m in self.members).encode())
        h.update(self.gates.key().encode())
        return safe_key("gated", self.name, h.hexdigest())

    def fit(self, paths: Sequence[str | os.PathLike]) -> None:
        for m in self.members:
            fit_if_needed(m, paths)

    def segment_checked(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None
                        ) -> list[tuple[np.ndarray | None, str]]:
        """Per image ``(mask, name of the segmenter that made it)`` or ``(None, "rejected: reasons")``."""
        out: list[tuple[np.ndarray | None, str]] = [(None, "")] * len(images)
        todo = list(range(len(images)))
        why: dict[int, list[str]] = {i: [] for i in todo}
        for m in self.members:
            if not todo:
                break
            masks = m.segment([images[i] for i in todo], paths=[paths[i] for i in todo] if paths is not None else None)
            left = []
            for i, mask in zip(todo, masks):
                if self.gates.orient:
                    mask = self.gates.orient_mask(mask)
                reason = self.gates.check(mask)
                if reason is None:
                    out[i] = (mask, m.name)
                    self.counts["accepted"][m.name] += 1
                else:
                    why[i].append(f"{m.name} {reason}")
                    left.append(i)
            todo = left
        for i in todo:
            out[i] = (None, "rejected: " + ", ".join(why[i]))
            self.counts["rejected"] += 1
            self.counts["reasons"][why[i][-1].split(" ", 1)[1]] += 1
        return out

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        from ..utils.image import BadImageError

        masks = []
        for i, (mask, note) in enumerate(self.segment_checked(images, paths)):
            if mask is None:
                raise BadImageError(paths[i] if paths is not None else f"image {i}", f"mask {note}")
            masks.append(mask)
        return masks

    def summary(self) -> str:
        """One line: ``accepted 580 (cosegment 560, grabcut 20), rejected 20 (area<min 12, ...)``."""
        acc = self.counts["accepted"]
        parts = ", ".join(f"{k} {v}" for k, v in acc.items())
        rej = ", ".join(f"{k} {v}" for k, v in self.counts["reasons"].most_common())
        return (f"gates: accepted {sum(acc.values())} ({parts or '-'}), rejected {self.counts['rejected']}"
                + (f" ({rej})" if rej else ""))


def fit_if_needed(segmenter: Segmenter, paths: Sequence[str | os.PathLike]) -> bool:
    """Call ``segmenter.fit(paths)`` if it fits to the class's images (``cosegment``; a chain
    holding one); a fit already done or cached on disk is reused. Returns whether it has ``fit``."""
    if hasattr(segmenter, "fit"):
        segmenter.fit(list(paths))
        return True
    return False


def segment_checked(segmenter: Segmenter, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None
                    ) -> list[tuple[np.ndarray | None, str]]:
    """``segmenter``'s masks as ``(mask or None, note)`` pairs, for gated and plain segmenters alike."""
    if isinstance(segmenter, GatedSegmenter):
        return segmenter.segment_checked(images, paths)
    return [(m, segmenter.name) for m in segmenter.segment(images, paths=paths)]
