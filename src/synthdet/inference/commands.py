"""``synthdet predict`` (boxes on your own images, videos, globs) and ``synthdet export`` (TorchScript / ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="detect objects in images / a video with a trained checkpoint",
        description="Run a synthdet checkpoint on images (folders, files, glob patterns) or video files: "
                    "OUT/images/*.jpg with boxes drawn, OUT/detections.json (COCO results, for pycocotools "
                    "loadRes) with OUT/images.json (the images they refer to), and with --save-txt "
                    "OUT/labels/*.txt (YOLO: class cx cy w h score).")
    p.add_argument("--checkpoint", required=True, type=Path, help="synthdet checkpoint (best.pt / last.pt)")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="image folders (searched recursively), image or video files, or quoted glob patterns")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder (a folder holding files synthdet did not write is refused)")
    p.add_argument("--score-threshold", type=float, default=0.25, help="drop detections below (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default %(default)s)")
    p.add_argument("--names", default=None, help="class names for labels 1..K, comma-separated (e.g. bird)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the checkpoint's)")
    p.add_argument("--video-stride", type=int, default=1, help="use every N-th video frame (default 1)")
    p.add_argument("--save-txt", action="store_true", help="also write YOLO txt files to OUT/labels")
    p.add_argument("--no-draw", action="store_true", help="do not write the images with boxes drawn")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only files you trust)")
    p.add_argument("--force", action="store_true", help="write into --out even if synthdet did not write it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_predict)

    e = subparsers.add_parser(
        "export", help="export a checkpoint to TorchScript or ONNX",
        description="Export a synthdet checkpoint as one graph: images float32 [B, 3, S, S] in [0, 1] -> "
                    "detections [B, 100, 6] (x0, y0, x1, y1, score, label; score 0 = padding), NMS inside. "
                    "S = the checkpoint's image size; B fixed at export (--batch-size).")
    e.add_argument("--checkpoint", required=True, type=Path, help="synthdet checkpoint (best.pt / last.pt)")
    e.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    e.add_argument("--out", required=True, type=Path, help="file to write (an existing file is refused)")
    e.add_argument("--batch-size", type=int, default=1, help="batch size fixed in the graph (default 1)")
    e.add_argument("--score-threshold", type=float, default=None,
                   help="score threshold fixed in the graph (default: the model's, 0.01)")
    e.add_argument("--image-size", type=int, default=None, help="input side S (default: the checkpoint's)")
    e.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only files you trust)")
    e.add_argument("--force", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=run_export)


def run_predict(args: argparse.Namespace) -> int:
    from ..utils.errors import UserError
    from ..utils.files import file_digest
    from ..utils.inputs import check_images, warn_skipped
    from .outputs import class_names_arg, predict_to_folder
    from .predictor import collect_sources

    if args.batch_size < 1 or args.video_stride < 1:
        raise ValueError("--batch-size and --video-stride must be >= 1")
    names = class_names_arg(args.names)
    sources = collect_sources(args.images)  # cheap checks before loading the model
    images = [s.path for s in sources if not s.video]
    _, bad = check_images(images, desc="checking images", progress=not args.no_progress)
    warn_skipped(bad, len(images), "predict inputs", listed_in=str(args.out / "skipped.json"))
    from .predictor import Detector

    detector = Detector.from_checkpoint(args.checkpoint, trust=args.trust_checkpoint, image_size=args.image_size,
                                        class_names=names, score_threshold=args.score_threshold,
                                        device=args.device)
    settings = {"checkpoint": str(args.checkpoint.resolve()), "checkpoint_digest": file_digest(args.checkpoint),
                "images": list(args.images), "score_threshold": args.score_threshold, "image_size": args.image_size,
                "names": args.names, "video_stride": args.video_stride, "batch_size": args.batch_size,
                "save_txt": args.save_txt, "draw": not args.no_draw}
    stats = predict_to_folder(detector, sources, args.out, batch_size=args.batch_size, save_txt=args.save_txt,
                              draw=not args.no_draw, force=args.force, video_stride=args.video_stride,
                              bad={b.path: b.problem for b in bad}, settings=settings,
                              progress=not args.no_progress)
    if not stats["images"]:
        raise UserError(f"no image could be processed: all {stats['skipped']} inputs were skipped, "
                        f"each listed with its problem in {args.out / 'skipped.json'}")
    resumed = f" ({stats['resumed']} of them done by the interrupted run before)" if stats["resumed"] else ""
    print(f"{stats['images']} images, {stats['skipped']} skipped{resumed}; {stats['detections']} detections "
          f"written to {args.out}" + (f" (skipped files: {args.out / 'skipped.json'})" if stats["skipped"] else ""))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..models import load_detector
    from .export import export_model

    if args.out.exists() and not args.force:
        raise FileExistsError(f"{args.out}: already exists; choose another --out, or --force to replace it")
    model = load_detector(args.checkpoint, trust=args.trust_checkpoint, image_size=args.image_size)
    export_model(model, args.out, args.format, batch_size=args.batch_size, score_threshold=args.score_threshold)
    meta = model.synthdet_meta
    print(f"wrote {args.out} ({args.format}): images float32 [{args.batch_size}, 3, {meta['image_size']}, "
          f"{meta['image_size']}] in [0, 1] -> detections [{args.batch_size}, {model.detections_per_img}, 6]")
    return 0
