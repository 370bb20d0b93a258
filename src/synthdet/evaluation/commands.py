"""``synthdet eval``: AP@0.5 of a trained checkpoint on any dataset the readers know (COCO by default)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..utils.choices import DATASET_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="AP@0.5 (VOC all-point) of a checkpoint on a dataset",
                              description="Evaluate a synthdet checkpoint (best.pt / last.pt) on a detection "
                                          "dataset: per-class and mean AP@0.5, a PR-curve plot, metrics.json.")
    p.add_argument("--data", required=True, help="dataset path (a COCO JSON file by default)")
    p.add_argument("--format", default="coco", choices=DATASET_FORMATS, metavar="FORMAT",
                   help="dataset format: %(choices)s (default %(default)s)")
    p.add_argument("--split", default=None, help="split option of the reader")
    p.add_argument("--checkpoint", required=True, type=Path, help="synthdet checkpoint")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: from the checkpoint)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only files you trust)")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and pr.png")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that cannot be used (missing, unreadable, truncated, wrong size) with their "
                        "boxes, counted in metrics.json (default: refuse the dataset before any work)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..datasets import DetectionDataset, read_dataset
    from ..datasets.check import check_records
    from ..utils.files import atomic_write_json
    from .evaluate import evaluate_detector, plot_pr_curves

    records, names = read_dataset(args.format, args.data, split=args.split)  # cheap checks first
    if not records:
        raise ValueError(f"{args.data}: no images")
    records, bad = check_records(records, str(args.data), skip_bad=args.skip_bad_images,
                                 progress=not args.no_progress)
    from ..models import load_detector

    model = load_detector(args.checkpoint, trust=args.trust_checkpoint, image_size=args.image_size)
    res = evaluate_detector(model, DetectionDataset(records), device=args.device, batch_size=args.batch_size,
                            class_names=names or None, progress=not args.no_progress)
    metrics = {"ap50": res["ap50"], "per_class": {str(k): v for k, v in res["per_class"].items()},
               "num_gt": {str(k): v for k, v in res["num_gt"].items()}, "num_images": res["num_images"],
               "data": str(args.data), "checkpoint": str(args.checkpoint),
               "skipped_images": {"count": len(bad), "files": [b.as_dict() for b in bad]}}
    for k, v in metrics["per_class"].items():
        print(f"  {k}: AP50 {v * 100:.2f}")
    left = f" ({len(bad)} bad images left out)" if bad else ""
    print(f"AP50 {res['ap50'] * 100:.2f} on {res['num_images']} images{left}", flush=True)
    if args.out:  # after printing: an unwritable --out must not lose the result
        atomic_write_json(args.out / "metrics.json",
                          {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()})
        plot_pr_curves(res, args.out / "pr.png")
        print(f"written: {args.out / 'metrics.json'}, {args.out / 'pr.png'}")
    return 0
