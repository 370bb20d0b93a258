"""Mask quality against true masks: foreground IoU and pixel accuracy, the quality of the label a
mask gives (pixel precision / recall, IoU of its tight box with the true mask's), plus timing."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..utils.boxes import box_iou, mask_box
from ..utils.files import list_images
from ..utils.image import BadImageError, read_image
from .base import Segmenter
from .gates import MaskGates
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


def label_quality(pred: np.ndarray, true: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """``(precision, recall, box_iou)`` of a predicted mask as a synthetic label: the share of its
    foreground on the object, the share of the object it covers, and the IoU of its tight box
    (what synthesis labels a pasted object with) with the true mask's tight box. An empty mask
    scores precision 0 (1 when the true mask is empty too), box IoU 0 unless both are empty."""
    p, t = pred >= threshold, true >= threshold
    inter = float(np.logical_and(p, t).sum())
    precision = inter / p.sum() if p.any() else float(not t.any())
    recall = inter / t.sum() if t.any() else 1.0
    bp, bt = mask_box(p.astype(np.uint8)), mask_box(t.astype(np.uint8))
    if bp is None or bt is None:
        return float(precision), float(recall), float(bp is None and bt is None)
    return float(precision), float(recall), float(box_iou(np.array(bp), np.array(bt))[0, 0])


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
                       progress: bool = True, gates: "MaskGates | None" = None) -> dict:
    """Score ``segmenter`` on image/true-mask pairs (same stems).

    A segmenter that fits to the images (``cosegment``) is first fitted on the scored images.
    Returns ``{"segmenter", "images", "skipped", "iou", "accuracy", "precision", "recall",
    "box_iou", "box_iou_50", "ms_per_image", "fit_seconds"}``: means over images, foreground at
    ``threshold`` (:func:`label_quality`; ``box_iou_50``: share of images whose tight box has IoU
    >= 0.5 with the true one); time covers ``segment`` only. With ``gates`` (or a gated chain),
    also ``"rejected"`` (masks no segmenter passed),
    ``"iou_accepted"`` (mean IoU of the masks let through) and ``"iou_all"``, where a rejected
    image scores its first member's mask; ``"iou"`` is then ``"iou_all"``.
    """
    from .gates import GatedSegmenter, fit_if_needed, segment_checked

    pairs = paired_files(images_dir, true_masks_dir)[:limit]
    t0 = time.perf_counter()
    fit_if_needed(segmenter, [ip for ip, _ in pairs])
    fit_seconds = time.perf_counter() - t0
    if gates is not None and not isinstance(segmenter, GatedSegmenter):
        segmenter = GatedSegmenter([segmenter], gates)
    gated = isinstance(segmenter, GatedSegmenter)
    ious, accs, labels, accepted, seconds, skipped = [], [], [], [], 0.0, 0
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
        results = segment_checked(segmenter, images, paths)
        seconds += time.perf_counter() - t0
        for k, ((pred, _), true) in enumerate(zip(results, trues)):
            ok = pred is not None
            if not ok:  # score what the first segmenter made, to report IoU over all images too
                pred = segmenter.members[0].segment([images[k]], paths=[paths[k]])[0]
            if true.shape != pred.shape:
                true = cv2.resize(true, pred.shape[::-1], interpolation=cv2.INTER_NEAREST)
            ious.append(mask_iou(pred, true, threshold))
            accs.append(pixel_accuracy(pred, true, threshold))
            labels.append(label_quality(pred, true, threshold))
            accepted.append(ok)
    n = len(ious)
    mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
    prec, rec, box = (list(v) for v in zip(*labels)) if labels else ([], [], [])
    row = {"segmenter": segmenter.name, "images": n, "skipped": skipped, "iou": mean(ious),
           "accuracy": mean(accs), "precision": mean(prec), "recall": mean(rec), "box_iou": mean(box),
           "box_iou_50": mean([b >= 0.5 for b in box]), "ms_per_image": 1000.0 * seconds / n if n else float("nan"),
           "fit_seconds": fit_seconds}
    if gated:
        row.update(rejected=int(n - sum(accepted)), iou_all=mean(ious),
                   iou_accepted=mean([v for v, ok in zip(ious, accepted) if ok]), gates=segmenter.summary())
    return row
