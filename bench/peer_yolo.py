"""Peer baseline: Ultralytics YOLOv8n on the birds benchmark, scored with synthdet's AP code.

Fairness rules (issue 10, item 6):

- Same images: the offline birds benchmark (``synthdet data birds``), its train / val / test splits.
- Same subsets: N real training images = ``nested_subsets(train, sizes, seed)[N]``, exactly the
  images synthdet's demo gives its runs at N (repeat 0: seed = experiment seed = 0); -1 = all 300.
- Same budget: ``--samples`` training samples on the real images (default 125 x 16 = 2000, the
  demo's finetuning budget), i.e. ``ceil(samples / N)`` epochs at batch 16. Variant (b),
  ``--pretrain-samples`` (the demo pretrains 500 x 16 = 8000), first trains on that many samples
  of synthdet's own synthesis stream (birds classification images, GrabCut masks, the demo's
  canvas and geometry), exported to disk with synthdet's API, then finetunes on the real images
  with the same ``--samples`` as (a), as synthdet's pretrained variant does. ``--equal-total``
  gives (a) ``samples + pretrain_samples`` real samples instead, so both totals are equal.
  Early stopping is off (``patience=0``) so every run gets its whole budget; everything else is
  Ultralytics' default recipe (optimizer=auto, warmup, mosaic closed for the last 10 epochs).
- Same score: the test split is predicted (conf 0.001, NMS IoU 0.6, <= 300 boxes per image) and
  scored with ``synthdet.evaluation.ap.average_precision`` (VOC all-point AP@0.5), the code that
  scores synthdet's detectors; Ultralytics' own mAP is not used.
- YOLO from scratch (``yolov8n.yaml``, ``pretrained=False``): no YOLO weights are available
  offline, while synthdet's detectors start from an offline ImageNet backbone.

Knobs of (b) (issue 14): ``--synth-mosaic`` (Ultralytics' mosaic on the synthetic samples; default 0,
measured: with mosaic on, the pretraining cost AP; the samples are composed scenes already, and mosaic
tiles four of them into one image, shrinking their objects),
``--num-objects`` / ``--box-side`` (the synthetic geometry), ``--finetune-lr`` (AdamW lr0 of the
finetuning), ``--pretrained-weights`` (reuse an earlier run's synthetic phase), ``--skip-scratch``.

Ultralytics is AGPL-3.0 and never a dependency of synthdet: install it in its own environment
(synthdet last, so that its ``opencv-python-headless<5`` is the cv2 that is imported)::

    python -m venv .venv-yolo
    .venv-yolo/bin/pip install ultralytics
    .venv-yolo/bin/pip install -e .
    .venv-yolo/bin/python bench/peer_yolo.py --sizes 10 50 --imgsz 128 --samples 3200 \\
        --pretrain-samples 9600 --equal-total --synth-mosaic 0 --val final --out runs/peer_yolo \\
        --synthdet-results runs/demo/results.csv

Nothing is downloaded: ``YOLO_OFFLINE=1`` is set and the font check is skipped (``plots=False``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

INSTALL = ("ultralytics is not installed; it is AGPL-3.0, so install it in its own environment: "
           "python -m venv .venv-yolo && .venv-yolo/bin/pip install ultralytics && .venv-yolo/bin/pip install -e .")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, -1], help="N real images (-1 = all)")
    p.add_argument("--imgsz", type=int, default=160, help="train/test size and synthetic canvas (demo: 160)")
    p.add_argument("--test-imgsz", type=int, default=None,
                   help="predict the test split at this size (default --imgsz; synthdet's demo detects at 320)")
    p.add_argument("--samples", type=int, default=125 * 16, help="training samples on the real images")
    p.add_argument("--pretrain-samples", type=int, default=0,
                   help="also run (b): pretrain on this many synthetic samples (demo: 8000)")
    p.add_argument("--synth-images", type=int, default=0,
                   help="distinct synthetic images (default: --pretrain-samples, each seen once)")
    p.add_argument("--equal-total", action="store_true", help="(a) trains samples + pretrain_samples")
    p.add_argument("--num-objects", type=int, nargs=2, default=[1, 4], metavar=("MIN", "MAX"),
                   help="objects per synthetic sample (demo: 1 4; the paper's birds row: 1 3)")
    p.add_argument("--box-side", type=float, nargs=2, default=[0.1, 0.7], metavar=("MIN", "MAX"),
                   help="synthetic box side / canvas (demo: 0.1 0.7; the paper's birds row: 0.5 0.9)")
    p.add_argument("--synth-mosaic", type=float, default=0.0,
                   help="Ultralytics' mosaic probability while pretraining on the synthetic samples (default 0: "
                        "measured better than Ultralytics' 1.0)")
    p.add_argument("--pretrained-weights", default=None,
                   help="skip the synthetic phase: finetune (b) from these weights (an earlier run's pretrain last.pt)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="finetune (b) with AdamW at this lr0 (default: Ultralytics' auto, AdamW 0.002 here)")
    p.add_argument("--skip-scratch", action="store_true", help="run only (b) (when (a) is measured already)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="subset seed (demo repeat 0: 0) and YOLO seed")
    p.add_argument("--val", choices=("epoch", "final"), default="epoch",
                   help="validate every epoch and keep the best (Ultralytics' way) or train to the end")
    p.add_argument("--data-root", default=None, help="synthdet data root (default $SYNTHDET_HOME or ~/.cache/synthdet)")
    p.add_argument("--mask-cache", default=None, help="GrabCut mask cache (default OUT/mask_cache)")
    p.add_argument("--synthdet-results", default=None, help="a synthdet experiment's results.csv")
    p.add_argument("--out", required=True, help="output folder")
    return p.parse_args(argv)


def link_split(records: list, folder: Path, names: list[str]) -> Path:
    """Hard-link (else copy) the images to ``folder/images`` and write YOLO labels; return the images dir."""
    from synthdet.datasets.yolo import write_yolo

    images = folder / "images"
    shutil.rmtree(folder, ignore_errors=True)
    images.mkdir(parents=True)
    linked = []
    for rec in records:
        dst = images / Path(rec.image_path).name
        try:
            os.link(rec.image_path, dst)  # not a symlink: write_yolo resolves paths
        except OSError:
            shutil.copy2(rec.image_path, dst)
        linked.append(rec.replace(image_path=str(dst)))
    write_yolo(folder, linked, names)  # labels: "0 cx cy w h", normalised
    return images


def data_yaml(path: Path, train: Path, val: Path, names: list[str]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"train": str(train.absolute()), "val": str(val.absolute()),
                                    "nc": len(names), "names": dict(enumerate(names))}, sort_keys=False))
    return path


def export_synth(bench: Any, out: Path, count: int, args: argparse.Namespace) -> Path:
    """``count`` samples of synthdet's stream, as the demo builds it, in YOLO layout; the images dir."""
    import yaml
    from synthdet.synthesis import SynthConfig, make_stream
    from synthdet.synthesis.export import export_dataset
    from synthdet.utils.config import from_dict

    (o1, o2), (s1, s2) = args.num_objects, args.box_side
    folder = out / f"synth_{args.imgsz}px_{count}_seed{args.seed}_obj{o1}-{o2}_side{s1:g}-{s2:g}"
    done = folder / "synth_config.yaml"
    if done.is_file() and yaml.safe_load(done.read_text()).get("count") == count:
        return folder / "images"
    cfg = from_dict(SynthConfig, {"canvas_size": args.imgsz, "num_objects": list(args.num_objects),
                                     "box_side": list(args.box_side)},
                    where="synthesis")
    stream = make_stream(bench.classification_dir, bench.backgrounds_dir, segmenter="grabcut",
                         cache_dir=args.mask_cache or out / "mask_cache", config=cfg, seed=args.seed,
                         class_name="bird", one_class=True)
    export_dataset(stream, folder, count, "yolo")
    return folder / "images"


def train_yolo(start: str, data: Path, samples: int, n_images: int, name: str, args: argparse.Namespace,
               final_only: bool = False, **extra: Any) -> Path:
    """Train ``start`` (a model YAML or a .pt) for ``ceil(samples / n_images)`` epochs; the weights to use."""
    from ultralytics import YOLO

    epochs = math.ceil(samples / n_images)
    print(f"[{name}] {n_images} images x {epochs} epochs = {n_images * epochs} samples", flush=True)
    model = YOLO(start)
    model.train(data=str(data), epochs=epochs, imgsz=args.imgsz, batch=args.batch, device="cpu",
                pretrained=start.endswith(".pt"), amp=False, plots=False, patience=0, seed=args.seed,
                deterministic=True, val=not final_only and args.val == "epoch",
                project=str(Path(args.out).absolute() / "yolo"), name=name, exist_ok=True, verbose=False, **extra)
    weights = Path(model.trainer.save_dir) / "weights"
    best = weights / "best.pt"
    return best if best.is_file() and not final_only and args.val == "epoch" else weights / "last.pt"


def test_ap(weights: Path, records: list, imgsz: int) -> float:
    """AP@0.5 (synthdet's code) of ``weights`` on ``records``, predicted at ``imgsz``."""
    from synthdet.evaluation.ap import average_precision
    from ultralytics import YOLO

    model = YOLO(str(weights))
    boxes, scores, labels = [], [], []
    for k in range(0, len(records), 16):
        chunk = [r.image_path for r in records[k:k + 16]]
        for res in model.predict(chunk, imgsz=imgsz, conf=0.001, iou=0.6, max_det=300, device="cpu", verbose=False):
            boxes.append(res.boxes.xyxy.cpu().numpy().astype(np.float64))  # original-image pixels
            scores.append(res.boxes.conf.cpu().numpy())
            labels.append(res.boxes.cls.cpu().numpy().astype(np.int64) + 1)
    return average_precision(boxes, scores, labels, [r.boxes for r in records], [r.labels for r in records],
                             iou=0.5, difficult=[r.extra.get("difficult") for r in records])["mean"]


def synthdet_reference(path: str | None) -> dict[tuple[str, int], float]:
    """``{(variant, n_real_requested): mean test AP@0.5 over repeats}`` of a synthdet results.csv."""
    if not path:
        return {}
    groups: dict[tuple[str, int], list[float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("study", "data_efficiency") == "data_efficiency":
                groups.setdefault((r["variant"], int(r["n_real_requested"])), []).append(float(r["ap50"]))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def print_table(rows: list[tuple[int, int, str, float]], ref: dict[tuple[str, int], float]) -> None:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    head = "| N | variant | YOLOv8n test AP@0.5 |"
    if ref:
        head += " synthdet no_pretraining | synthdet pretrained |"
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    for n_req, n, variant, ap in rows:
        label = "0" if n_req == 0 else (f"all ({n})" if n_req < 0 else str(n))
        line = f"| {label} | {variant} | {pct(ap)} |"
        if ref:
            if n_req == 0:
                line += f" - | {pct(ref.get(('pretrain_only', 0)))} |"
            else:
                line += f" {pct(ref.get(('no_pretraining', n_req)))} | {pct(ref.get(('pretrained', n_req)))} |"
        print(line)


def run(args: argparse.Namespace) -> list[tuple[int, int, str, float]]:
    from synthdet.datasets.birds import build_birds
    from synthdet.datasets.subsets import nested_subsets

    out = Path(args.out).absolute()
    test_size = args.test_imgsz or args.imgsz
    bench = build_birds(args.data_root)
    train, names_map = bench.split_records("train")
    val, test = bench.split_records("val")[0], bench.split_records("test")[0]
    names = [names_map[k] for k in sorted(names_map)]
    subsets = nested_subsets(train, [n for n in args.sizes if n != 0], seed=args.seed)
    val_dir = link_split(val, out / "data" / "val", names)
    rows: list[tuple[int, int, str, float]] = []
    pretrained = None
    if args.pretrained_weights:
        pretrained = Path(args.pretrained_weights)
        rows.append((0, 0, "pretrain only", test_ap(pretrained, test, test_size)))
    elif args.pretrain_samples > 0:
        count = args.synth_images or args.pretrain_samples
        synth = export_synth(bench, out, count, args)
        yml = data_yaml(out / "data" / "synth.yaml", synth, val_dir, names)
        pretrained = train_yolo("yolov8n.yaml", yml, args.pretrain_samples, count, "pretrain", args, final_only=True,
                                mosaic=args.synth_mosaic)
        rows.append((0, 0, "pretrain only", test_ap(pretrained, test, test_size)))
    for n_req in [n for n in args.sizes if n != 0]:
        recs = subsets[n_req]
        yml = data_yaml(out / "data" / f"n{n_req}.yaml", link_split(recs, out / "data" / f"train_n{n_req}", names),
                        val_dir, names)
        base = args.samples + (args.pretrain_samples if args.equal_total else 0)
        if not args.skip_scratch:
            w = train_yolo("yolov8n.yaml", yml, base, len(recs), f"n{n_req}_scratch", args)
            rows.append((n_req, len(recs), "no pretraining", test_ap(w, test, test_size)))
        if pretrained is not None:
            lr = {} if args.finetune_lr is None else {"optimizer": "AdamW", "lr0": args.finetune_lr, "warmup_bias_lr": 0.0}
            w = train_yolo(str(pretrained), yml, args.samples, len(recs), f"n{n_req}_pretrained", args, **lr)
            rows.append((n_req, len(recs), "pretrained on synthdet stream", test_ap(w, test, test_size)))
        print_table(rows, synthdet_reference(args.synthdet_results))  # partial table after each N
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("ultralytics") is None:
        print(INSTALL, file=sys.stderr)
        return 2
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no analytics, no online checks
    import ultralytics.data.utils as yolo_data_utils

    yolo_data_utils.check_font = lambda *a, **k: None  # would try to download Arial.ttf
    rows = run(args)
    print("\nfinal:")
    print_table(rows, synthdet_reference(args.synthdet_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
