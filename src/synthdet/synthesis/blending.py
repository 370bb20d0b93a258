"""Blending modes: how one augmented object is pasted into the canvas (pure functions).

``alpha`` is the paper's (``compose.blend``); ``gaussian``, ``poisson`` and ``motion`` follow
Cut, Paste and Learn (Dwibedi et al. 2017). Blending only changes pixels: the label box is taken
from the object's mask before blending, so every mode gives the same labels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..utils.boxes import mask_box
from .compose import blend
from .config import SynthConfig


def draw_mode(cfg: SynthConfig, rng: np.random.Generator) -> str:
    """The blending mode of one object: ``cfg.blend`` itself, or one of its list drawn uniformly
    (nothing is drawn from ``rng`` for a single mode)."""
    if isinstance(cfg.blend, str):
        return cfg.blend
    return cfg.blend[int(rng.integers(len(cfg.blend)))]


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """The mask (float32 hxw in [0, 1]) with its edge softened by a Gaussian blur of ``sigma`` px."""
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised float32 ``k x k`` line kernel of ``length`` px at ``angle`` degrees (odd ``k``)."""
    k = length if length % 2 else length + 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2.0
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    half = (length - 1) / 2.0
    for t in np.linspace(-half, half, max(2 * length, 2)):
        kernel[int(np.floor(c + t * dy + 0.5)), int(np.floor(c + t * dx + 0.5))] = 1.0
    return kernel / kernel.sum()


def motion_blur(obj: np.ndarray, mask: np.ndarray, length: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Object (uint8 hxwx3) and mask (float32 hxw) blurred along a line of ``length`` px at ``angle``
    degrees; the mask spreads outside the object (zero beyond the box), the object's edge is replicated."""
    kernel = motion_kernel(length, angle)
    img = cv2.filter2D(obj, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    msk = cv2.filter2D(mask, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return img, msk


def poisson_blend(canvas: np.ndarray, obj: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """In place: Poisson (gradient-domain) cloning of ``obj`` where ``mask > 0.5`` into ``canvas``
    at (x0, y0) with ``cv2.seamlessClone`` (NORMAL_CLONE). The canvas is padded so objects at the
    border clone too. An empty mask changes nothing; a region under 3 px a side is alpha-blended."""
    tight = mask_box(mask, 0.5)
    if tight is None:
        return
    bx, by = tight[0], tight[1]
    bw, bh = tight[2] - bx, tight[3] - by
    if bw < 3 or bh < 3:  # seamlessClone asserts on regions under 3 px a side: alpha-blend those
        blend(canvas, obj, mask, x0, y0)
        return
    binary = (mask > 0.5).astype(np.uint8) * 255
    pad = 2
    big = cv2.copyMakeBorder(canvas, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    src = cv2.copyMakeBorder(obj, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    src_mask = cv2.copyMakeBorder(binary, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    # seamlessClone puts the mask's bounding rect at center - size // 2: aim it at the same pixels.
    center = (pad + x0 + bx + bw // 2, pad + y0 + by + bh // 2)
    out = cv2.seamlessClone(src, big, src_mask, center, cv2.NORMAL_CLONE)
    canvas[...] = out[pad:-pad, pad:-pad]


def paste(canvas: np.ndarray, obj: np.ndarray, mask: np.ndarray, x0: int, y0: int, mode: str,
          cfg: SynthConfig, rng: np.random.Generator) -> None:
    """In place: paste ``obj`` (uint8 hxwx3) with ``mask`` (float32 hxw in [0, 1]) at (x0, y0) of
    ``canvas`` (uint8 HxWx3; the box fully inside) with blending ``mode``. ``gaussian`` draws a
    sigma in ``cfg.blend_sigma``, ``motion`` a length in ``cfg.motion_length`` and an angle; ``alpha``
    and ``poisson`` draw nothing."""
    if mode == "alpha":
        blend(canvas, obj, mask, x0, y0)
    elif mode == "gaussian":
        blend(canvas, obj, feather(mask, float(rng.uniform(*cfg.blend_sigma))), x0, y0)
    elif mode == "motion":
        length = int(rng.integers(cfg.motion_length[0], cfg.motion_length[1] + 1))
        img, msk = motion_blur(obj, mask, length, float(rng.uniform(0.0, 180.0)))
        blend(canvas, img, msk, x0, y0)
    elif mode == "poisson":
        poisson_blend(canvas, obj, mask, x0, y0)
    else:
        raise ValueError(f"unknown blending mode {mode!r}")
