"""Where does a trained detector's AP go? Localisation, object size, or false alarms.

For each checkpoint, on a COCO split (default: the birds benchmark's test split), prints AP at IoU
0.3 / 0.5 / 0.7 (a large gap between 0.3 and 0.5 means boxes found but placed loosely), the
recall at IoU 0.5 of the detections scoring >= ``--score`` by ground-truth size (the box's
sqrt(area) in image pixels), and the confident detections that overlap no object (IoU < 0.1).

    python bench/errors.py runs/demo/runs/*__nall__r0/best.pt
    python bench/errors.py CKPT --data path/to/test.json [--images-root DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from synthdet.datasets import DetectionDataset, read_dataset
from synthdet.evaluation.ap import average_precision, box_iou
from synthdet.evaluation.evaluate import predict
from synthdet.models import load_detector

SIZES = {"<32": (0, 32), "32-64": (32, 64), ">=64": (64, float("inf"))}


def errors(preds: list[dict], gts: list[dict], score: float) -> dict:
    """AP at three IoU thresholds, recall at IoU 0.5 by object size, confident false alarms."""
    row = {}
    for iou in (0.3, 0.5, 0.7):
        res = average_precision([p["boxes"] for p in preds], [p["scores"] for p in preds],
                                [p["labels"] for p in preds], [g["boxes"] for g in gts],
                                [g["labels"] for g in gts], iou=iou)
        row[f"AP@{iou}"] = 100 * res["mean"]
    side, best, false_alarms = [], [], 0
    for p, g in zip(preds, gts):
        keep = p["scores"] >= score
        boxes, gt = p["boxes"][keep], g["boxes"].reshape(-1, 4)
        overlap = box_iou(gt, boxes) if len(gt) and len(boxes) else np.zeros((len(gt), len(boxes)))
        best += list(overlap.max(1) if len(boxes) else np.zeros(len(gt)))
        side += list(np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])))
        false_alarms += int((overlap.max(0) < 0.1).sum()) if len(gt) else len(boxes)
    side, best = np.array(side), np.array(best)
    for name, (lo, hi) in SIZES.items():
        sel = (side >= lo) & (side < hi)
        row[f"n {name}"] = int(sel.sum())
        row[f"recall {name}"] = 100 * float((best[sel] >= 0.5).mean()) if sel.any() else float("nan")
    row["false alarms / image"] = false_alarms / max(len(preds), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, help="COCO json (default: the birds benchmark's --split)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--images-root", type=Path, help="image folder of --data (default: next to it)")
    ap.add_argument("--score", type=float, default=0.3, help="score threshold for recall and false alarms")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.data is None:
        from synthdet.datasets.birds import load_birds

        args.data = load_birds().annotations[args.split]
    records, _ = read_dataset("coco", args.data, **({"image_root": args.images_root} if args.images_root else {}))
    dataset = DetectionDataset(records)
    rows = []
    for ckpt in args.checkpoints:
        preds, gts = predict(load_detector(ckpt), dataset, device=args.device, batch_size=16)
        rows.append((ckpt, errors(preds, gts, args.score)))
    keys = list(rows[0][1])
    print(f"\n{args.data} ({len(records)} images); recall at IoU 0.5 of detections scoring >= {args.score}, "
          "by object size (sqrt of box area, px)\n")
    print("| checkpoint | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for ckpt, row in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()]
        print(f"| {ckpt} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
