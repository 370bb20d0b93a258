"""Backgrounds made from the user's own images, for when no background photos are given.

Two kinds, both in the target domain by construction:

- **scenes**: each real training image with its labelled boxes (each grown by a margin) filled by
  inpainting (``cv2.inpaint``, Telea), and its largest square crop that touches no grown box,
  when that crop is large enough (:func:`scene_backgrounds`);
- **objects**: each classification image with its object mask (grown) filled by inpainting
  (:func:`object_background`); the mask comes from the segmentation stage (the mask cache).

A pixel of a labelled box never reaches a background: the filled region covers every box plus
the margin, it is blanked and ``cv2.inpaint`` fills it from the pixels outside it, a crop never
intersects a grown box, and when an image is downscaled first, the region is downscaled with
the same pixel footprints (a pixel whose footprint touches a box is filled). Tested: two images
that differ only inside their boxes give identical backgrounds.

Boxes are XYXY float pixels with an exclusive end (see :mod:`synthdet`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from ..utils.image import BadImageError, read_image, write_image

log = logging.getLogger(__name__)

BOX_MARGIN = 0.05  # each box grows by this fraction of its side (and at least 2 px) before filling
MIN_CROP = 1 / 3  # a box-free crop is kept when its side is at least this fraction of the short side
MASK_GROW = 0.08  # an object mask grows by this fraction of the image's short side before filling
MAX_FILLED = 0.7  # an object image whose grown mask covers more than this is not used
MAX_SIDE = 640  # images are downscaled to this longer side before anything else


def box_region(height: int, width: int, boxes: np.ndarray, margin: float = BOX_MARGIN) -> np.ndarray:
    """Bool ``[height, width]``: every pixel that any XYXY box (exclusive end) touches once grown
    by ``margin`` of its side on each side (at least 2 px)."""
    region = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        gx = max(2.0, margin * (x1 - x0))
        gy = max(2.0, margin * (y1 - y0))
        c0, r0 = max(0, int(np.floor(x0 - gx))), max(0, int(np.floor(y0 - gy)))
        c1, r1 = min(width, int(np.ceil(x1 + gx))), min(height, int(np.ceil(y1 + gy)))
        region[r0:r1, c0:c1] = True
    return region


def largest_free_square(region: np.ndarray) -> tuple[int, int, int] | None:
    """``(x0, y0, side)`` of a largest square of pixels outside ``region`` (bool ``HxW``), or None
    when every pixel is in it. Exact up to one pixel: the chessboard distance of each free pixel to
    the region or the image border is the half-side of the largest square centred on it."""
    free = np.pad(~region, 1).astype(np.uint8)
    if not free.any():
        return None
    dist = cv2.distanceTransform(free, cv2.DIST_C, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    half = int(dist[y, x]) - 1  # the square [x - half, x + half] stays inside the free pixels
    return int(x) - half, int(y) - half, 2 * half + 1


def fill_region(image: np.ndarray, region: np.ndarray, radius: int = 3) -> np.ndarray:
    """``image`` (uint8 ``HxWx3``) with the pixels of ``region`` (bool ``HxW``) replaced by
    ``cv2.inpaint`` (Telea) from the pixels outside it. The region is blanked first: OpenCV's
    Telea reads masked pixels next to the image border, and no value under it may leak."""
    if not region.any():
        return image.copy()
    blank = image.copy()
    blank[region] = 0
    return cv2.inpaint(blank, region.astype(np.uint8), radius, cv2.INPAINT_TELEA)


def _downscale(image: np.ndarray, region: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Both resized so the longer side is at most ``max_side`` (``INTER_AREA``, same footprints):
    a pixel of the small region is set when any source pixel of its footprint was."""
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return image, region
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    touched = cv2.resize(region.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    return small, cv2.dilate(touched.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def scene_backgrounds(image: np.ndarray, boxes: np.ndarray, margin: float = BOX_MARGIN,
                      min_crop: float = MIN_CROP, max_side: int = MAX_SIDE) -> dict[str, np.ndarray]:
    """Backgrounds of one real image (uint8 ``HxWx3``) with XYXY ``boxes`` in its pixels:
    ``{"filled": the image with the grown boxes inpainted}`` plus ``"crop"``, its largest square
    touching no grown box, when that square's side is at least ``min_crop`` of the short side
    (an image without boxes: the whole image, as ``"crop"`` only)."""
    region = box_region(image.shape[0], image.shape[1], boxes, margin)
    image, region = _downscale(image, region, max_side)
    if not region.any():
        return {"crop": image.copy()}
    out = {"filled": fill_region(image, region)}
    square = largest_free_square(region)
    if square is not None and square[2] >= max(8, min_crop * min(image.shape[:2])):
        x0, y0, side = square
        out["crop"] = image[y0:y0 + side, x0:x0 + side].copy()
    return out


def object_region(mask: np.ndarray, grow: float = MASK_GROW, max_filled: float = MAX_FILLED) -> np.ndarray | None:
    """Bool ``HxW``: an object mask (float ``HxW`` in [0, 1], foreground where > 0.1) grown by
    ``grow`` of the short side; None when it is empty (nothing was found to remove) or covers
    more than ``max_filled`` of the image."""
    fg = (np.asarray(mask) > 0.1).astype(np.uint8)
    if not fg.any():
        return None
    k = 2 * max(2, round(grow * min(fg.shape))) + 1
    region = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)
    return None if region.mean() > max_filled else region


def object_background(image: np.ndarray, mask: np.ndarray, grow: float = MASK_GROW,
                      max_filled: float = MAX_FILLED, max_side: int = MAX_SIDE) -> np.ndarray | None:
    """A classification image (uint8 ``HxWx3``) with its :func:`object_region` inpainted (the
    mask is resized to the image first); None when there is no usable region."""
    h, w = image.shape[:2]
    if mask.shape != (h, w):
        mask = cv2.resize(np.asarray(mask, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    region = object_region(mask, grow, max_filled)
    if region is None:
        return None
    image, region = _downscale(image, region, max_side)
    return fill_region(image, region)


def write_scene_backgrounds(records: Iterable, folder: str | os.PathLike, **kwargs: float) -> list[Path]:
    """:func:`scene_backgrounds` of every record (a :class:`~synthdet.datasets.records.DetectionRecord`)
    as PNGs ``<folder>/scene_<k>_<kind>.png``; returns their paths. Boxes are scaled to the decoded
    image when its size differs from the record's. Unreadable images are skipped and logged."""
    folder = Path(folder)
    paths = []
    for k, rec in enumerate(records):
        try:
            image = read_image(rec.image_path)
        except BadImageError as e:
            log.warning("own backgrounds: skipping %s", e)
            continue
        h, w = image.shape[:2]
        boxes = np.asarray(rec.boxes, np.float64).reshape(-1, 4)
        if rec.width and rec.height and (w, h) != (rec.width, rec.height):
            boxes = boxes * np.array([w / rec.width, h / rec.height] * 2)
        for kind, bg in scene_backgrounds(image, boxes, **kwargs).items():
            path = folder / f"scene_{k:05d}_{kind}.png"
            write_image(path, bg)
            paths.append(path)
    return paths


def write_object_backgrounds(paths: Sequence[str | os.PathLike], mask_of: Callable[[Path], np.ndarray],
                             folder: str | os.PathLike, **kwargs: float) -> list[Path]:
    """:func:`object_background` of every object image (``mask_of(path)``: its soft mask, e.g.
    ``MaskCache.get``) as PNGs ``<folder>/object_<k>.png``; images without a usable mask or whose
    mask covers too much are skipped. Returns the written paths."""
    folder = Path(folder)
    out = []
    for k, p in enumerate(paths):
        try:
            image, mask = read_image(p), mask_of(Path(p))
        except BadImageError as e:
            log.debug("own backgrounds: no object background from %s", e)
            continue
        bg = object_background(image, mask, **kwargs)
        if bg is not None:
            path = folder / f"object_{k:05d}.png"
            write_image(path, bg)
            out.append(path)
    return out
