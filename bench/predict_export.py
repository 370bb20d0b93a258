"""Does a checkpoint give the same detections through every way out of synthdet?

On a COCO split (default: the birds benchmark's test split): the test AP@0.5 of
``Detector.predict`` on the image files (score >= 0.01, to compare with the AP an experiment
reported for the same checkpoint), then ``synthdet export`` to TorchScript and ONNX (when
onnxruntime is installed) and, on the first ``--count`` images resized to the checkpoint's input
size, the detections of each exported file against the PyTorch model's: counts and the largest box
difference in pixels.

    python bench/predict_export.py runs/demo/runs/*pretrained__n50__r0/best.pt
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from synthdet.cli import main as synthdet_cli
from synthdet.datasets import read_dataset
from synthdet.evaluation.ap import average_precision
from synthdet.inference import Detector
from synthdet.inference.export import load_exported, split_detections
from synthdet.utils.image import read_image


def largest_difference(out: list[dict], ref: list[dict]) -> float:
    """Largest box-coordinate difference (px) between two per-image detection lists; nan when the
    counts differ in any image."""
    if any(len(o["boxes"]) != len(r["boxes"]) for o, r in zip(out, ref)):
        return float("nan")
    return max((float(np.abs(o["boxes"] - r["boxes"]).max()) for o, r in zip(out, ref) if len(r["boxes"])),
               default=0.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, help="COCO json (default: the birds benchmark's test split)")
    ap.add_argument("--images-root", type=Path, help="image folder of --data (default: next to it)")
    ap.add_argument("--count", type=int, default=20, help="images compared with the exported files")
    args = ap.parse_args(argv)
    if args.data is None:
        from synthdet.datasets.birds import load_birds

        args.data = load_birds().annotations["test"]
    records, _ = read_dataset("coco", args.data, **({"image_root": args.images_root} if args.images_root else {}))
    det = Detector.from_checkpoint(args.checkpoint, score_threshold=0.01)
    preds = det.predict([r.image_path for r in records], batch_size=8)
    ap50 = average_precision([p["boxes"] for p in preds], [p["scores"] for p in preds],
                             [p["labels"] for p in preds], [r.boxes for r in records],
                             [r.labels for r in records])["mean"]
    print(f"{args.checkpoint}: Detector.predict on {len(records)} images of {args.data}: AP@0.5 {100 * ap50:.2f}")

    size = int(det.image_size)
    images = np.stack([cv2.resize(read_image(r.image_path), (size, size), interpolation=cv2.INTER_LINEAR)
                       for r in records[:args.count]])
    ref = det.predict_arrays(list(images))
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    formats = [("torchscript", "model.pt")]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        formats.append(("onnx", "model.onnx"))
    else:
        print("onnx / onnxruntime not installed (pip install 'synthdet[export]'): ONNX skipped")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in formats:
            path = Path(tmp) / name
            if synthdet_cli(["export", "--checkpoint", str(args.checkpoint), "--format", fmt, "--out", str(path),
                             "--score-threshold", "0.01", "--batch-size", str(len(images))]):
                raise SystemExit(f"synthdet export --format {fmt} failed")
            out = split_detections(load_exported(path)(x))
            print(f"{fmt}: {sum(len(o['boxes']) for o in out)} detections on {len(images)} images "
                  f"(PyTorch {sum(len(r['boxes']) for r in ref)}), largest box difference "
                  f"{largest_difference(out, ref):.2g} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
