"""AP at IoU 0.5, Pascal VOC style (all-point interpolated precision envelope).

Conventions, matching the VOC devkit except where noted:

- Boxes are XYXY float pixels with an exclusive end (see :mod:`synthdet`); area and IoU are
  continuous (no ``+1``), like COCO.
- Per class, detections of all images are ranked by score. Each detection is matched to the
  ground-truth box of the same image with the highest IoU (over *all* that image's boxes of
  the class, as in the VOC devkit); it is a true positive if that IoU >= ``iou`` (the devkit
  uses ``>``; ``>=`` is COCO's rule and what "IoU 0.5" reads as) and that box is not taken
  yet, otherwise a false positive (so a duplicate detection is a false positive).
- ``difficult`` ground truth is ignored: not counted in the recall denominator, and a
  detection matched to it is neither a true nor a false positive.
- Ties: detections with equal scores are matched in their input order, but the PR curve gets
  one point per *distinct* score, so the AP does not depend on how tied detections are
  ordered (the devkit's unstable argsort makes it arbitrary there).
- AP = area under the precision envelope (precision made monotone from the right),
  integrated over every recall step ("all-point", VOC 2010+).
- A class with no (non-difficult) ground truth has AP ``nan`` and is left out of the mean;
  a class with ground truth and no detections has AP 0. With no ground truth at all the mean
  is ``nan``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..utils.boxes import box_iou


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP from a PR curve (recall ascending)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _class_curve(
    dets: list[tuple[float, int, np.ndarray]],
    gts: dict[int, tuple[np.ndarray, np.ndarray]],
    npos: int,
    iou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one class's detections; return (recall, precision, scores) at distinct scores."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][0])  # stable: ties keep input order
    taken = {img: np.zeros(len(b), bool) for img, (b, _) in gts.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    scores = np.zeros(len(order))
    for k, i in enumerate(order):
        score, img, box = dets[i]
        scores[k] = score
        gt_boxes, gt_difficult = gts.get(img, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(gt_boxes) == 0:
            fp[k] = 1
            continue
        ious = box_iou(box[None], gt_boxes)[0]
        j = int(np.argmax(ious))
        if ious[j] >= iou:
            if gt_difficult[j]:
                continue
            if not taken[img][j]:
                taken[img][j] = True
                tp[k] = 1
            else:
                fp[k] = 1
        else:
            fp[k] = 1
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    # One curve point per distinct score: the last index of each tie group.
    last = np.nonzero(np.append(scores[1:] != scores[:-1], True))[0] if len(scores) else np.zeros(0, int)
    ctp, cfp, s = ctp[last], cfp[last], scores[last]
    recall = ctp / max(npos, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(ctp + cfp > 0, ctp / np.maximum(ctp + cfp, 1e-12), 0.0)
    return recall, precision, s


def average_precision(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    iou: float = 0.5,
    difficult: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """VOC all-point AP per class and their mean.

    Inputs are per-image lists (same length, one entry per image): ``pred_boxes[i]`` float
    ``[D, 4]`` XYXY, ``pred_scores[i]`` ``[D]``, ``pred_labels[i]`` int ``[D]``,
    ``gt_boxes[i]`` ``[G, 4]``, ``gt_labels[i]`` ``[G]``, optional ``difficult[i]`` bool ``[G]``.

    Returns ``{"per_class": {label: ap}, "mean": float, "num_gt": {label: n},
    "curves": {label: {"recall", "precision", "scores"}}}``; see the module docstring for the
    rules (no ground truth -> ``nan`` and excluded from the mean).
    """
    n = len(gt_boxes)
    if not (len(pred_boxes) == len(pred_scores) == len(pred_labels) == len(gt_labels) == n):
        raise ValueError("average_precision: all per-image lists must have the same length")
    if difficult is not None and len(difficult) != n:
        raise ValueError("average_precision: difficult must have one entry per image")
    gts: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    npos: dict[int, int] = {}
    for i in range(n):
        boxes = np.asarray(gt_boxes[i], np.float64).reshape(-1, 4)
        labels = np.asarray(gt_labels[i]).reshape(-1).astype(np.int64)
        diff = (np.zeros(len(labels), bool) if difficult is None or difficult[i] is None
                else np.asarray(difficult[i], bool).reshape(-1))
        if len(boxes) != len(labels) or len(diff) != len(labels):
            raise ValueError(f"average_precision: image {i}: gt boxes/labels/difficult lengths differ")
        for c in np.unique(labels):
            m = labels == c
            gts.setdefault(int(c), {})[i] = (boxes[m], diff[m])
            npos[int(c)] = npos.get(int(c), 0) + int((~diff[m]).sum())
    dets: dict[int, list[tuple[float, int, np.ndarray]]] = {}
    for i in range(n):
        boxes = np.asarray(pred_boxes[i], np.float64).reshape(-1, 4)
        scores = np.asarray(pred_scores[i], np.float64).reshape(-1)
        labels = np.asarray(pred_labels[i]).reshape(-1).astype(np.int64)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"average_precision: image {i}: prediction boxes/scores/labels lengths differ")
        for b, s, c in zip(boxes, scores, labels):
            dets.setdefault(int(c), []).append((float(s), i, b))
    per_class: dict[int, float] = {}
    curves: dict[int, dict[str, np.ndarray]] = {}
    for c in sorted(set(npos) | set(dets)):
        if npos.get(c, 0) == 0:
            per_class[c] = float("nan")
            continue
        rec, prec, s = _class_curve(dets.get(c, []), gts.get(c, {}), npos[c], iou)
        per_class[c] = voc_ap(rec, prec) if len(rec) else 0.0
        curves[c] = {"recall": rec, "precision": prec, "scores": s}
    valid = [v for v in per_class.values() if not np.isnan(v)]
    mean = float(np.mean(valid)) if valid else float("nan")
    return {"per_class": per_class, "mean": mean, "num_gt": {c: npos.get(c, 0) for c in per_class},
            "curves": curves}
