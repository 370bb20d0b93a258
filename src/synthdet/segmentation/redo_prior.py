"""Inputs of the CPU ReDO recipe: frozen ImageNet features, the warm-start prior, the object region.

* :func:`load_redo_data`: the training images at the working resolution, and (for the ``lite0``
  mask network) their frozen EfficientNet-Lite0 features, of each image and of its mirror image,
  computed once per fit with ``cosegment``'s :func:`~.cosegment.lite0_features`.
* :func:`prior_masks`: a cheap label-free mask per training image that the mask network is warm-started
  on: ``cosegment`` (Deep Descriptor Transforming's coarse map from the same features: the
  class's shared principal component times the contrast to the image's own border, as the
  ``cosegment`` segmenter computes it before its GrabCut step; foreground where the map, scaled
  to [0, 1] per image, is above 0.5), ``centre`` (the centred ellipse of the ``ellipse`` baseline)
  or ``none``.
* :func:`object_region`: which of the two regions is the object. With a prior: the region that
  overlaps the prior's foreground more (mean IoU over the training images; the warm start makes
  it region 0 and the check says when training swapped them). Without one: the region that
  covers less of the image border (classification images frame their object).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..utils.files import list_images
from ..utils.image import read_readable

log = logging.getLogger(__name__)

PRIORS = ("cosegment", "centre", "none")
# uint8 images N x S x S x 3 -> (stride-16 N x 112 x S/16 x S/16, stride-32 N x 192 x S/32 x S/32)
FeatureFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class RedoData:
    """Training inputs: ``images`` uint8 ``(N, 3, R, R)``; ``f16`` / ``f32`` float16 Lite0 maps
    ``(2, N, C, h, w)`` (index 0: the image, 1: its mirror image) or ``None``; ``prior`` uint8
    ``(N, 1, R, R)`` (1 = foreground) or ``None``."""

    images: torch.Tensor
    f16: torch.Tensor | None = None
    f32: torch.Tensor | None = None
    prior: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def features(self, idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Float32 ``(f16, f32)`` of images ``idx``, of the mirror image where ``flip``."""
        if self.f16 is None or self.f32 is None:
            return None
        f = flip[:, None, None, None]
        return (torch.where(f, self.f16[1][idx], self.f16[0][idx]).float(),
                torch.where(f, self.f32[1][idx], self.f32[0][idx]).float())


def _resize(im: np.ndarray, side: int) -> np.ndarray:
    interp = cv2.INTER_AREA if min(im.shape[:2]) > side else cv2.INTER_LINEAR
    return cv2.resize(im, (side, side), interpolation=interp)


def image_features(images: Sequence[np.ndarray], size: int, features: FeatureFn | None = None,
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Lite0 ``(f16, f32)`` float32 maps of uint8 RGB images squashed to ``size`` x ``size``."""
    from .cosegment import lite0_features

    fn = features or lite0_features
    a, b = [], []
    for i in range(0, len(images), batch_size):
        f16, f32 = fn(np.stack([_resize(im, size) for im in images[i : i + batch_size]]))
        a.append(f16)
        b.append(f32)
    return np.concatenate(a), np.concatenate(b)


def load_redo_data(images: str | os.PathLike | Sequence[str | os.PathLike], resolution: int,
                   feature_size: int | None, max_images: int | None = None, features: FeatureFn | None = None,
                   progress: bool = True) -> tuple[RedoData, list]:
    """Read the images (a folder, searched recursively, or a list of files; bad files skipped and
    counted), squash them to ``resolution``; with ``feature_size``, also their Lite0 features and
    those of their mirror images. Returns the data and the paths read, in order. ``max_images``:
    an evenly spaced subset."""
    if isinstance(images, (str, os.PathLike)):
        paths, where = list_images(images), str(images)
    else:
        paths = [Path(p) for p in images]
        where = str(paths[0].parent) if paths else "the image list"
    if max_images is not None and len(paths) > max_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_images).round().astype(int)]
    small, f16s, f32s, kept, skipped = [], [[], []], [[], []], [], 0
    chunk = 64
    for i in tqdm(range(0, len(paths), chunk), desc="loading images", unit="batch", disable=not progress):
        batch, ok, bad = read_readable(paths[i : i + chunk])
        kept += ok
        skipped += bad
        if not batch:
            continue
        small += [_resize(im, resolution) for im in batch]
        if feature_size is not None:
            for k, ims in enumerate((batch, [np.ascontiguousarray(im[:, ::-1]) for im in batch])):
                f16, f32 = image_features(ims, feature_size, features)
                f16s[k].append(torch.from_numpy(f16).half())
                f32s[k].append(torch.from_numpy(f32).half())
    if skipped:
        log.warning("skipped %d of %d images in %s", skipped, len(paths), where)
    if len(small) < 2:
        raise ValueError(f"ReDO needs at least 2 readable images in {where}, found {len(small)}")
    data = RedoData(torch.from_numpy(np.stack(small)).permute(0, 3, 1, 2).contiguous())
    if feature_size is not None:
        data.f16 = torch.stack([torch.cat(f) for f in f16s])
        data.f32 = torch.stack([torch.cat(f) for f in f32s])
    return data, kept


def centre_ellipse(resolution: int, axes: float = 0.75) -> np.ndarray:
    """Bool ``R x R`` centred ellipse whose axes are ``axes`` of the side (the ``ellipse`` baseline)."""
    c = (resolution - 1) / 2
    yy, xx = np.mgrid[:resolution, :resolution]
    return ((yy - c) / (axes * resolution / 2)) ** 2 + ((xx - c) / (axes * resolution / 2)) ** 2 <= 1


def prior_masks(kind: str, data: RedoData) -> torch.Tensor | None:
    """The warm-start prior of every training image: uint8 ``(N, 1, R, R)``, or ``None`` for ``none``
    (see the module docstring)."""
    if kind not in PRIORS:
        raise ValueError(f"unknown ReDO prior {kind!r}; choose one of {', '.join(PRIORS)}")
    n, r = len(data), data.images.shape[-1]
    if kind == "none":
        return None
    if kind == "centre":
        return torch.from_numpy(centre_ellipse(r)).to(torch.uint8).expand(n, 1, r, r).contiguous()
    if data.f16 is None or data.f32 is None:
        raise ValueError("the cosegment prior needs the Lite0 features (mask_net: lite0)")
    from .cosegment import _unit, coarse_map, shared_axis

    f16, f32 = data.f16[0].float().numpy(), data.f32[0].float().numpy()
    mean, axis = shared_axis(f32)
    out = np.stack([cv2.resize(_unit(coarse_map(f16[i], f32[i], mean, axis)), (r, r),
                               interpolation=cv2.INTER_LINEAR) > 0.5 for i in range(n)])
    return torch.from_numpy(out[:, None].astype(np.uint8))


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def border_occupancy(masks: torch.Tensor) -> torch.Tensor:
    """Mean mask value of each region on the image border: masks ``(B, K, R, R)`` -> ``(K,)``."""
    r = masks.shape[-1]
    b = max(1, r // 16)
    border = torch.ones(r, r, dtype=torch.bool, device=masks.device)
    border[b:-b, b:-b] = False
    return masks[:, :, border].mean(dim=(0, 2))


def object_region(masks: torch.Tensor, prior: torch.Tensor | None) -> tuple[int, str, list[float]]:
    """Which region of soft ``masks (N, K, R, R)`` is the object (module docstring): ``(region,
    rule, scores)``; ``rule`` ``"prior"`` (scores: mean IoU of each region with ``prior (N, 1, R,
    R)``, the highest wins) or ``"border"`` (scores: border occupancy, the lowest wins)."""
    if prior is not None:
        fg = prior[:, 0].bool()
        scores = [float(_iou(masks[:, k] >= 0.5, fg).mean()) for k in range(masks.shape[1])]
        return int(np.argmax(scores)), "prior", [round(s, 4) for s in scores]
    occ = border_occupancy(masks)
    return int(occ.argmin()), "border", [round(float(v), 4) for v in occ]
