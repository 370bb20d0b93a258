"""Occlusion bookkeeping for one sample: which pasted object is on top at each canvas pixel.

Objects are pasted in order ``0, 1, 2, ...``; ``owner[y, x]`` is the index of the last object
whose binarised mask covers the pixel (-1: background). Object ``k``'s visible mask is its mask
where no later object is on top (``owner <= k``); its label box is the tight box of that, and its
visible fraction is visible pixels / mask pixels. Boxes are XYXY integer pixels, exclusive end.
"""

from __future__ import annotations

import numpy as np

from ..utils.boxes import mask_box


class Layers:
    """The owner map of an ``size x size`` canvas and the masks of the objects pasted so far.

    ``add(full, box, paints)``: object ``k`` (returned) with ``full`` bool ``hxw`` (what counts as
    the object for visibility: its binarised mask, or the whole box when the mask is empty) at
    ``box`` (XYXY); ``paints``: bool ``hxw`` pixels it covers (its binarised mask).
    """

    def __init__(self, size: int) -> None:
        self.owner = np.full((size, size), -1, np.int16)
        self.fulls: list[np.ndarray] = []
        self.boxes: list[tuple[int, int, int, int]] = []

    def add(self, full: np.ndarray, box: np.ndarray, paints: np.ndarray) -> int:
        k = len(self.fulls)
        x0, y0, x1, y1 = (int(v) for v in box)
        self.owner[y0:y1, x0:x1][paints] = k
        self.fulls.append(full)
        self.boxes.append((x0, y0, x1, y1))
        return k

    def visible(self, k: int, owner: np.ndarray | None = None) -> np.ndarray:
        """Bool ``hxw``: the part of object ``k``'s mask no later object covers."""
        x0, y0, x1, y1 = self.boxes[k]
        own = self.owner if owner is None else owner
        return self.fulls[k] & (own[y0:y1, x0:x1] <= k)

    def fraction(self, k: int, owner: np.ndarray | None = None) -> float:
        """Visible fraction of object ``k`` in [0, 1] (0 for an object with no pixels)."""
        total = int(self.fulls[k].sum())
        return int(self.visible(k, owner).sum()) / total if total else 0.0

    def would_hide(self, paints: np.ndarray, box: np.ndarray, watched: list[int], min_visibility: float) -> bool:
        """True if covering ``paints`` (bool ``hxw``) at ``box`` would leave one of the objects
        ``watched`` with nothing visible or under ``min_visibility`` of it."""
        x0, y0, x1, y1 = (int(v) for v in box)
        hit = [j for j in watched if _intersect(self.boxes[j], (x0, y0, x1, y1))]
        if not hit:
            return False
        trial = self.owner.copy()
        trial[y0:y1, x0:x1][paints] = len(self.fulls)
        return any(_hidden(self.fraction(j, trial), min_visibility) for j in hit)

    def label(self, k: int) -> tuple[np.ndarray | None, float, np.ndarray]:
        """``(visible box float32 [4] XYXY on the canvas or None when nothing is visible, visible
        fraction, visible bool hxw mask)`` of object ``k``."""
        vis = self.visible(k)
        tight = mask_box(vis)
        frac = self.fraction(k)
        if tight is None:
            return None, frac, vis
        x0, y0 = self.boxes[k][:2]
        return np.array([x0 + tight[0], y0 + tight[1], x0 + tight[2], y0 + tight[3]], np.float32), frac, vis


def _intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _hidden(fraction: float, min_visibility: float) -> bool:
    return fraction <= 0.0 or fraction < min_visibility
