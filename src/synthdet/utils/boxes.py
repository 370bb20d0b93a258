"""Box helpers shared by the stages: IoU of box sets and the tight box of a mask.

Boxes are XYXY float pixels with an exclusive end (see :mod:`synthdet`)."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N, M]`` between XYXY boxes ``a[N, 4]`` and ``b[M, 4]`` (continuous areas)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def mask_box(mask: np.ndarray, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """Tight XYXY box (exclusive end) of ``mask > threshold`` in the mask's own pixels, or None if empty."""
    fg = mask > threshold
    cols = np.flatnonzero(fg.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(fg.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
