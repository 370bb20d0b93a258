"""Mask quality against true masks: foreground IoU and pixel accuracy, plus timing."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.files import list_images
from ..utils.image import BadImageError, read_image
from .base import Segmenter
from .simple import read_mask

log = logging.getLogger(__name__)


def mask_iou(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> float:
    """Foreground IoU of two HxW masks binarised at ``threshold`` (1.0 when both are empty)."""
    p, t = pred >= threshold, true >= threshold
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def pixel_accuracy(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of pixels whose binarised labels agree."""
    return float(((pred >= threshold) == (true >= threshold)).mean())


def paired_files(images_dir: str | os.PathLike, true_masks_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(image, true mask)`` pairs matched by path relative to each folder without the suffix
    (``cat/001.jpg`` <-> ``cat/001.png``); an image whose file stem is unique also matches a mask
    of that stem at the top of ``true_masks_dir``. Images without a mask are left out."""
    images_dir, true_masks_dir = Path(images_dir), Path(true_masks_dir)
    masks = {p.relative_to(true_masks_dir).with_suffix("").as_posix(): p for p in list_images(true_masks_dir)}
    images = list_images(images_dir)
    stems = Counter(p.stem for p in images)
    pairs = []
    for p in images:
        m = masks.get(p.relative_to(images_dir).with_suffix("").as_posix())
        if m is None and stems[p.stem] == 1:
            m = masks.get(p.stem)
        if m is not None:
            pairs.append((p, m))
    if not pairs:
        raise ValueError(f"no image in {images_dir} has a mask of the same name in {true_masks_dir}")
    return pairs


def evaluate_segmenter(segmenter: Segmenter, images_dir: str | os.PathLike, true_masks_dir: str | os.PathLike,
                       limit: int | None = None, batch_size: int = 16, threshold: float = 0.5,
                       progress: bool = True) -> dict:
    """Score ``segmenter`` on image/true-mask pairs (same stems).

    Returns ``{"segmenter", "images", "skipped", "iou", "accuracy", "ms_per_image"}``: IoU and
    accuracy are means over images, foreground at ``threshold``; time covers ``segment`` only.
    """
    pairs = paired_files(images_dir, true_masks_dir)[:limit]
    ious, accs, seconds, skipped = [], [], 0.0, 0
    for i in tqdm(range(0, len(pairs), batch_size), desc=f"eval {segmenter.name}", disable=not progress):
        images, trues, paths = [], [], []
        for ip, mp in pairs[i : i + batch_size]:
            try:
                images.append(read_image(ip))
                trues.append(read_mask(mp))
                paths.append(ip)
            except BadImageError as e:
                skipped += 1
                log.warning("skipping %s", e)
        if not images:
            continue
        t0 = time.perf_counter()
        preds = segmenter.segment(images, paths=paths)
        seconds += time.perf_counter() - t0
        for pred, true in zip(preds, trues):
            if true.shape != pred.shape:
                true = cv2.resize(true, pred.shape[::-1], interpolation=cv2.INTER_NEAREST)
            ious.append(mask_iou(pred, true, threshold))
            accs.append(pixel_accuracy(pred, true, threshold))
    n = len(ious)
    return {
        "segmenter": segmenter.name,
        "images": n,
        "skipped": skipped,
        "iou": float(np.mean(ious)) if n else float("nan"),
        "accuracy": float(np.mean(accs)) if n else float("nan"),
        "ms_per_image": 1000.0 * seconds / n if n else float("nan"),
    }
