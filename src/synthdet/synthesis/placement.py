"""Box placement fitted to real boxes (``placement: fitted``): pure functions of a Generator.

The paper draws the object count, box side, aspect ratio and position uniformly in fixed ranges
(:func:`synthdet.synthesis.compose.sample_boxes`). A :class:`BoxPrior` instead holds the N real
training boxes a user already has, in normalised coordinates, and draws from their smoothed
empirical distribution:

- each real box is the vector ``(log side, log aspect, cx, cy)`` with ``w = box width / image
  width``, ``h = box height / image height`` (the detector sees the image resized to a square),
  ``side = sqrt(w * h)``, ``aspect = w / h`` and the centre ``(cx, cy)`` in [0, 1];
- a synthetic box is one real box drawn uniformly, jittered with Gaussian noise (bandwidth:
  Silverman's rule of thumb per coordinate) and shrunk towards the mean so that the mean and the
  variance of every coordinate stay those of the real boxes (the variance-corrected smoothed
  bootstrap, Silverman 1986, 6.4.1); side, aspect and position are drawn jointly, so "large boxes
  sit in the middle" survives;
- the object count is a real image's count (images drawn uniformly), jittered the same way,
  rounded and kept in the observed range.

Boxes are XYXY with an exclusive end, in canvas pixels (see :mod:`synthdet`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_BOXES = 5


@dataclass(frozen=True)
class BoxPrior:
    """The real boxes a fitted placement draws from.

    ``feats``: float64 ``[M, 4]`` = (log side, log aspect, cx, cy) of the M real boxes;
    ``counts``: int64 ``[K]`` boxes per real image; ``bandwidth``: float64 ``[4]`` and
    ``count_bandwidth``: the Gaussian jitter of each coordinate and of the count.
    """

    feats: np.ndarray
    counts: np.ndarray
    bandwidth: np.ndarray
    count_bandwidth: float

    def __len__(self) -> int:
        return len(self.feats)


def _silverman(x: np.ndarray) -> np.ndarray:
    """Silverman's rule-of-thumb bandwidth per column of ``x`` ``[n, d]``."""
    n = len(x)
    std = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1])
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    spread = np.where((q75 - q25) > 0, np.minimum(std, (q75 - q25) / 1.349), std)
    return 0.9 * spread * n ** (-0.2)


def fit_box_prior(boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                  where: str = "the real boxes", min_boxes: int = MIN_BOXES) -> BoxPrior:
    """Fit a :class:`BoxPrior` to real boxes.

    ``boxes``: one float ``[n_i, 4]`` XYXY (exclusive end, pixels) array per real image;
    ``sizes``: the ``(width, height)`` of each image. Raises ``ValueError`` naming ``where`` when
    there are fewer than ``min_boxes`` usable boxes: a distribution fitted to so few boxes is
    mostly guesswork, so set ``num_objects`` / ``box_side`` / ``box_aspect`` by hand instead.
    """
    if len(boxes) != len(sizes):
        raise ValueError(f"{where}: {len(boxes)} box arrays for {len(sizes)} image sizes")
    feats, counts = [], []
    for b, (w_img, h_img) in zip(boxes, sizes):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        w, h = (b[:, 2] - b[:, 0]) / w_img, (b[:, 3] - b[:, 1]) / h_img
        ok = np.isfinite(b).all(axis=1) & (w > 0) & (h > 0)
        b, w, h = b[ok], w[ok], h[ok]
        counts.append(len(b))
        feats.append(np.stack([0.5 * np.log(w * h), np.log(w / h), (b[:, 0] + b[:, 2]) / (2 * w_img),
                               (b[:, 1] + b[:, 3]) / (2 * h_img)], axis=1))
    x = np.concatenate(feats) if feats else np.zeros((0, 4))
    if len(x) < min_boxes:
        raise ValueError(f"{where}: placement 'fitted' needs at least {min_boxes} real boxes, got {len(x)}; "
                         "use placement: uniform and set num_objects / box_side / box_aspect (or a preset)")
    c = np.asarray(counts, np.int64)
    return BoxPrior(feats=x, counts=c, bandwidth=_silverman(x),
                    count_bandwidth=float(_silverman(c[:, None].astype(np.float64))[0]))


def fit_box_prior_records(records: Sequence, where: str = "the real boxes") -> BoxPrior:
    """:func:`fit_box_prior` over :class:`~synthdet.datasets.records.DetectionRecord` objects."""
    return fit_box_prior([r.boxes for r in records], [(r.width, r.height) for r in records], where)


def load_box_prior(path: str | os.PathLike, fmt: str = "coco", **reader_kwargs: object) -> BoxPrior:
    """Fit a :class:`BoxPrior` to every box of a real dataset (``read_dataset(fmt, path)``)."""
    from ..datasets import read_dataset

    records, _ = read_dataset(fmt, path, **reader_kwargs)
    return fit_box_prior_records(records, where=str(path))


def _smoothed(values: np.ndarray, bandwidth: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Variance-corrected smoothed bootstrap of ``values`` ``[n, d]`` at indices ``idx``."""
    mean, var = values.mean(axis=0), values.var(axis=0)
    shrink = 1.0 / np.sqrt(1.0 + np.divide(bandwidth ** 2, var, out=np.zeros_like(var), where=var > 0))
    noise = rng.standard_normal(idx.shape + (values.shape[1],))
    return mean + (values[idx] - mean + bandwidth * noise) * shrink


def sample_fitted_count(prior: BoxPrior, rng: np.random.Generator) -> int:
    """One object count: a real image's count, smoothed, rounded, inside the observed range."""
    counts = prior.counts[:, None].astype(np.float64)
    idx = rng.integers(len(counts), size=())
    value = _smoothed(counts, np.array([prior.count_bandwidth]), idx, rng)[0]
    return int(np.clip(np.rint(value), prior.counts.min(), prior.counts.max()))


def sample_fitted_boxes(shape: int | tuple[int, ...], prior: BoxPrior, canvas_size: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Boxes int64 ``[*shape, 4]`` XYXY (exclusive end) on a ``canvas_size`` square canvas, drawn
    from the smoothed real boxes; sides clipped to ``[1, canvas]`` px, boxes shifted inside."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    s = canvas_size
    idx = rng.integers(len(prior.feats), size=shape)
    f = _smoothed(prior.feats, prior.bandwidth, idx, rng)
    side, root = np.exp(f[..., 0]), np.exp(0.5 * f[..., 1])
    wh = np.clip(np.rint(np.stack([side * root, side / root], axis=-1) * s), 1, s).astype(np.int64)
    x0 = np.clip(np.rint(f[..., 2] * s - wh[..., 0] / 2), 0, s - wh[..., 0]).astype(np.int64)
    y0 = np.clip(np.rint(f[..., 3] * s - wh[..., 1] / 2), 0, s - wh[..., 1]).astype(np.int64)
    return np.stack([x0, y0, x0 + wh[..., 0], y0 + wh[..., 1]], axis=-1)


def box_features(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(side, aspect, cx, cy)`` float64 ``[n, 4]`` of XYXY boxes ``[n, 4]`` normalised by the image
    size (the quantities a :class:`BoxPrior` fits; side and aspect not logged)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = (b[:, 2] - b[:, 0]) / width, (b[:, 3] - b[:, 1]) / height
    return np.stack([np.sqrt(w * h), w / h, (b[:, 0] + b[:, 2]) / (2 * width),
                     (b[:, 1] + b[:, 3]) / (2 * height)], axis=1)
