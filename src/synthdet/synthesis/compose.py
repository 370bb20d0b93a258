"""Pure functions of one synthetic sample: place boxes, blend objects, boxes from masks.

Boxes are XYXY with an exclusive end (see :mod:`synthdet`); placed boxes are integer pixels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..utils.boxes import mask_box
from .config import SynthConfig
from .placement import BoxPrior, sample_fitted_boxes, sample_fitted_count


def sample_box_sizes(shape: int | tuple[int, ...], cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Box sizes as int64 ``[*shape, 2]`` (w, h): side uniform int in ``box_side x canvas``,
    aspect ``w/h`` uniform in ``box_aspect``, area ``side**2``, clipped to ``[1, canvas]``."""
    s = cfg.canvas_size
    lo = max(1, int(round(cfg.box_side[0] * s)))
    hi = max(lo, int(round(cfg.box_side[1] * s)))
    side = rng.integers(lo, hi + 1, size=shape).astype(np.float64)
    root = np.sqrt(rng.uniform(*cfg.box_aspect, size=shape))
    wh = np.stack([side * root, side / root], axis=-1)
    return np.clip(np.rint(wh), 1, s).astype(np.int64)


def sample_boxes(shape: int | tuple[int, ...], cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Boxes (int64 ``[*shape, 4]`` XYXY, exclusive end) placed uniformly inside the canvas."""
    wh = sample_box_sizes(shape, cfg, rng)
    s = cfg.canvas_size
    x0 = rng.integers(0, s - wh[..., 0] + 1)
    y0 = rng.integers(0, s - wh[..., 1] + 1)
    return np.stack([x0, y0, x0 + wh[..., 0], y0 + wh[..., 1]], axis=-1).astype(np.int64)


def overlaps(boxes: np.ndarray) -> np.ndarray:
    """For boxes ``[..., n, 4]`` XYXY (exclusive end): bool ``[...]``, True where any two boxes of a
    set share at least one pixel (touching is allowed)."""
    b = np.asarray(boxes)
    if b.shape[-2] < 2:
        return np.zeros(b.shape[:-2], bool)
    ix = (b[..., :, None, 0] < b[..., None, :, 2]) & (b[..., None, :, 0] < b[..., :, None, 2])
    iy = (b[..., :, None, 1] < b[..., None, :, 3]) & (b[..., None, :, 1] < b[..., :, None, 3])
    inter = ix & iy
    n = b.shape[-2]
    inter[..., np.arange(n), np.arange(n)] = False
    return inter.any(axis=(-1, -2))


def any_overlap(boxes: np.ndarray) -> bool:
    """True if any two XYXY (exclusive-end) boxes ``[n, 4]`` share at least one pixel."""
    return bool(overlaps(np.asarray(boxes).reshape(-1, 4)))


def _samplers(cfg: SynthConfig, rng: np.random.Generator, prior: BoxPrior | None
              ) -> tuple[Callable[[], int], Callable[[int | tuple[int, ...]], np.ndarray], int]:
    """(draw a count, draw boxes of a shape, the largest count) of ``cfg.placement``."""
    if cfg.placement == "fitted":
        if prior is None:
            raise ValueError("placement 'fitted' needs the real boxes (box_prior=, or --real-annotations)")
        return (lambda: sample_fitted_count(prior, rng),
                lambda shape: sample_fitted_boxes(shape, prior, cfg.canvas_size, rng), int(prior.counts.max()))
    lo, hi = cfg.num_objects
    return lambda: int(rng.integers(lo, hi + 1)), lambda shape: sample_boxes(shape, cfg, rng), hi


def place_boxes(cfg: SynthConfig, rng: np.random.Generator, max_counts: int = 1000,
                prior: BoxPrior | None = None) -> np.ndarray:
    """The paper's placement: draw a count in ``num_objects``; unless ``allow_overlap``, try up to
    ``max_tries`` times to draw that many mutually non-intersecting boxes, else draw a new count.
    With ``placement: fitted`` the count and the boxes come from ``prior`` instead (see
    :mod:`synthdet.synthesis.placement`), with the same retries.

    The ``max_tries`` tries of one count are drawn at once (vectorised) and the first valid one is
    kept. Returns int64 ``[N, 4]`` XYXY boxes. After ``max_counts`` failed counts (only possible
    with extreme settings) one box is returned, which never overlaps.
    """
    count, draw, hi = _samplers(cfg, rng, prior)
    for _ in range(max_counts):
        n = count()
        if cfg.allow_overlap or n <= 1:
            return draw(n)
        tries = draw((cfg.max_tries, n))
        ok = np.flatnonzero(~overlaps(tries))
        if ok.size:
            return tries[ok[0]]
    return draw(min(1, hi))


def label_box(mask: np.ndarray, placed: np.ndarray, threshold: float = 0.0) -> tuple[np.ndarray, bool]:
    """The label box of an object pasted at ``placed`` (XYXY) with box-sized ``mask`` (h x w).

    Returns (float32 ``[4]`` XYXY in canvas pixels, ``empty``): the tight box of the binarised mask,
    shifted to the canvas; an empty mask falls back to the whole placed box (paper).
    """
    x0, y0 = int(placed[0]), int(placed[1])
    tight = mask_box(mask, threshold)
    if tight is None:
        return np.asarray(placed, np.float32).copy(), True
    return np.array([x0 + tight[0], y0 + tight[1], x0 + tight[2], y0 + tight[3]], np.float32), False


def blend(canvas: np.ndarray, obj: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """In place: ``canvas[box] = obj * mask + canvas[box] * (1 - mask)`` on the box region only.

    ``canvas`` uint8 HxWx3; ``obj`` uint8 hxwx3 and ``mask`` float32 hxw in [0, 1], placed with
    the top-left corner at (x0, y0) fully inside the canvas. Float32, rounded back to uint8.
    """
    h, w = mask.shape
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    m = mask[:, :, None]
    bg = region.astype(np.float32)
    out = bg + (obj.astype(np.float32) - bg) * m
    region[...] = (out + 0.5).astype(np.uint8)
