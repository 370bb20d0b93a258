"""GrabCut (OpenCV) with a centre-box prior: the classical, training-free baseline.

Object images from classification data are roughly centred, so the box prior is the central
``rect`` fraction of the frame: pixels outside it start as definite background, pixels inside
as probable foreground. Big images are downscaled to ``max_side`` for speed and the mask is
upsampled back; the soft mask is GrabCut's binary mask smoothed with a Gaussian.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .base import as_rgb, safe_key
from .simple import ellipse_mask


def grabcut_mask(
    image: np.ndarray,
    rect: float = 0.8,
    iterations: int = 3,
    max_side: int = 160,
    smooth: float = 1.0,
    largest_component: bool = True,
    min_area: float = 0.01,
    core: float = 0.2,
) -> np.ndarray:
    """Soft foreground mask (float32 ``HxW`` in [0, 1]) of one uint8 ``HxWx3`` RGB image.

    ``rect``: side fraction of the centred prior box; ``iterations``: GrabCut iterations;
    ``max_side``: working resolution cap (px); ``smooth``: Gaussian sigma in working pixels;
    ``largest_component``: keep only the biggest connected foreground blob; ``min_area``: if
    GrabCut keeps less than this fraction of the frame, it is rerun with a centred ellipse
    (diameters ``core`` x the frame) as sure foreground.
    """
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    work = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    wh, ww = work.shape[:2]
    bw, bh = max(1, round(ww * rect)), max(1, round(wh * rect))
    x0, y0 = (ww - bw) // 2, (wh - bh) // 2
    prior = np.zeros((wh, ww), np.float32)
    prior[y0 : y0 + bh, x0 : x0 + bw] = 1.0
    fg = prior
    if min(wh, ww) >= 8 and bw < ww and bh < wh:
        gc = np.zeros((wh, ww), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut initialises its colour models with k-means on OpenCV's global RNG; reseed it
        # so that the same image always gives the same mask (the mask cache relies on it).
        cv2.setRNGSeed(0)
        bgr = cv2.cvtColor(work, cv2.COLOR_RGB2BGR)
        try:
            cv2.grabCut(bgr, gc, (x0, y0, bw, bh), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
            fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
            if fg.mean() < min_area:
                # Collapsed to background: retry with the centre of the box as sure foreground.
                gc = np.where(prior > 0, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
                core = ellipse_mask(wh, ww, core) > 0
                gc[core] = cv2.GC_FGD
                bgd[:], fgd[:] = 0, 0
                cv2.grabCut(bgr, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
                fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
        except cv2.error:  # degenerate colour statistics (e.g. a flat image): keep the box prior
            fg = prior
        if largest_component:
            fg = largest_blob(fg)
    if smooth > 0:
        fg = cv2.GaussianBlur(fg, (0, 0), smooth)
    if (wh, ww) != (h, w):
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(fg, 0.0, 1.0).astype(np.float32)


def largest_blob(fg: np.ndarray) -> np.ndarray:
    """``fg`` (``HxW``, 1 = foreground; values are truncated to uint8) with only its largest
    8-connected blob kept, in ``fg``'s dtype; unchanged with fewer than two blobs."""
    if not fg.any():
        return fg
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 2:
        return fg
    return (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(fg.dtype)


class GrabCutSegmenter:
    """``grabcut``: :func:`grabcut_mask` over a list of images (CPU, milliseconds per image)."""

    name = "grabcut"

    def __init__(self, rect: float = 0.8, iterations: int = 3, max_side: int = 160, smooth: float = 1.0,
                 largest_component: bool = True, min_area: float = 0.01, core: float = 0.2):
        if not 0 < rect <= 1:
            raise ValueError(f"grabcut rect must be in (0, 1], got {rect}")
        if iterations < 1 or max_side < 8:
            raise ValueError("grabcut needs iterations >= 1 and max_side >= 8")
        self.rect, self.iterations, self.max_side = float(rect), int(iterations), int(max_side)
        self.smooth, self.largest_component = float(smooth), bool(largest_component)
        self.min_area, self.core = float(min_area), float(core)

    def cache_key(self) -> str:
        return safe_key("grabcut", self.rect, self.iterations, self.max_side, self.smooth,
                        int(self.largest_component), self.min_area, self.core)

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        return [grabcut_mask(im, self.rect, self.iterations, self.max_side, self.smooth,
                             self.largest_component, self.min_area, self.core) for im in images]
