"""Drawing boxes and tiling images into grids (previews, contact sheets, reports)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

_PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)],
    dtype=np.uint8,
)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
    names: dict[int, str] | None = None,
    thickness: int = 1,
) -> np.ndarray:
    """Return a copy of ``image`` (HxWx3 uint8 RGB) with XYXY ``boxes`` drawn."""
    out = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        lab = int(labels[i]) if labels is not None else 1
        color = tuple(int(c) for c in _PALETTE[lab % len(_PALETTE)])
        p0 = (int(round(x0)), int(round(y0)))
        p1 = (max(int(round(x1)) - 1, p0[0]), max(int(round(y1)) - 1, p0[1]))
        cv2.rectangle(out, p0, p1, color, thickness)
        text = []
        if names is not None and lab in names:
            text.append(names[lab])
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            cv2.putText(out, " ".join(text), (p0[0], max(p0[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3, color, 1, cv2.LINE_AA)
    return out


def make_grid(images: Sequence[np.ndarray], ncols: int = 8, cell: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile RGB (or grey) uint8 images into one grid image; each is fit into a ``cell``-px square."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    imgs = [np.repeat(im[:, :, None], 3, 2) if im.ndim == 2 else im for im in images]
    cell = cell or max(max(im.shape[:2]) for im in imgs)
    ncols = min(ncols, len(imgs))
    nrows = (len(imgs) + ncols - 1) // ncols
    grid = np.full((nrows * (cell + pad) + pad, ncols * (cell + pad) + pad, 3), 255, np.uint8)
    for k, im in enumerate(imgs):
        h, w = im.shape[:2]
        s = cell / max(h, w)
        im = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, ncols)
        y, x = pad + r * (cell + pad), pad + c * (cell + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid
