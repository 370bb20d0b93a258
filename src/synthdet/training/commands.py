"""``synthdet pretrain | finetune | mixed``: thin CLI layers over :mod:`synthdet.training`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..utils.choices import DATASET_FORMATS, DETECTORS, SEGMENTERS
from ..utils.config import parse_key_value

DEFAULT_DETECTOR = "fcos_efficientnet_lite0"
DEFAULT_RECIPE = "short"
RECIPE_NAMES = ("short", "paper")  # training.config.RECIPES, listed here so --help does not import torch


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, config, curves)")
    p.add_argument("--detector", default=None, choices=DETECTORS, metavar="NAME",
                   help=f"detector: %(choices)s (default {DEFAULT_DETECTOR}, or the one --weights holds)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (backbone, where obtainable) | none | path to a checkpoint, whose detector is "
                        "rebuilt as saved (default imagenet)")
    p.add_argument("--recipe", default=None, choices=RECIPE_NAMES,
                   help="named training recipe: short (AdamW, warmup + cosine, EMA, augmentation; the default) | "
                        "paper (Adam 1e-4 constant)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full unpickling (can run code: only files you trust)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML of TrainConfig settings (top level, or under the command's name)")
    p.add_argument("--set", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override one TrainConfig setting, e.g. lr=5e-5 (repeatable)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:1")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if OUT/last.pt exists (by default a killed run continues from it "
                   "to the same result)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="do not log losses, lr, validation AP and sample images to OUT/tensorboard")


def _real(p: argparse.ArgumentParser, val: bool = True) -> None:
    p.add_argument("--train", required=True, help="real training data (path for --format)")
    p.add_argument("--format", default="coco", choices=DATASET_FORMATS, metavar="FORMAT",
                   help="dataset format of --train/--val: %(choices)s (default %(default)s)")
    p.add_argument("--train-split", default=None, help="split option of the reader (e.g. train)")
    p.add_argument("--n-real", type=int, default=-1,
                   help="use a fixed, nested subset of N training images (-1: all)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the nested subsets")
    if val:
        p.add_argument("--val", default=None, help="validation data (default: none, final weights kept)")
        p.add_argument("--val-split", default=None)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop images that cannot be used (missing, unreadable, truncated, wrong size) and their "
                        "boxes, counted in the log and OUT/result.json (default: refuse the dataset before any work)")


def _synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", required=True, help="folder of object images (class subfolders allowed)")
    p.add_argument("--backgrounds", required=True, help="folder of background photos")
    p.add_argument("--segmenter", default="grabcut", choices=SEGMENTERS, metavar="NAME",
                   help="segmenter: %(choices)s (default %(default)s)")
    p.add_argument("--segmenter-arg", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cache-dir", default=None, help="mask cache folder")
    p.add_argument("--synth-config", type=Path, default=None,
                   help="YAML of SynthConfig settings (preset: faces|birds|cars allowed)")
    p.add_argument("--real-annotations", default=None, metavar="FILE",
                   help="real boxes (COCO, or --real-format) that 'placement: fitted' draws the geometry from")
    p.add_argument("--real-format", default="coco", choices=DATASET_FORMATS, metavar="FORMAT",
                   help="dataset format of --real-annotations (default %(default)s)")
    p.add_argument("--synth-seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain a detector on the endless artificial stream",
                              description="Pretrain (paper III-B): N iterations (recipe: short by default, or paper) on samples synthesised "
                                          "on the fly from object images and background photos.")
    _common(p)
    _synth(p)
    p.set_defaults(func=run_pretrain)

    f = subparsers.add_parser("finetune", help="finetune on N real images, keep the best validation checkpoint",
                              description="Finetune (paper IV-B) from --weights on real box-labelled images; "
                                          "validation AP@0.5 every val_every iterations, best.pt is the result.")
    _common(f)
    _real(f)
    f.set_defaults(func=run_finetune)

    m = subparsers.add_parser("mixed", help="one run on real + artificial samples (ablation baseline)",
                              description="Train once on real images and artificial samples together, each "
                                          "batch holding a fixed fraction of real samples.")
    _common(m)
    _real(m)
    _synth(m)
    m.add_argument("--pool", type=int, default=None, help="fixed pool of K artificial samples (default: stream)")
    m.add_argument("--real-fraction", type=float, default=0.5, help="share of real samples per batch")
    m.set_defaults(func=run_mixed)


def _train_config(args: argparse.Namespace, stage: str):
    from ..utils.config import load_yaml
    from .config import train_config

    data: dict[str, Any] = {}
    if args.config:
        data = load_yaml(args.config)
        if isinstance(data.get(stage), dict):
            data = data[stage]
    data.update(dict(args.set))
    for key in ("iterations", "batch_size", "image_size", "device", "num_workers", "seed", "recipe"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    data.setdefault("recipe", DEFAULT_RECIPE)
    if args.no_progress:
        data["progress"] = False
    if args.no_tensorboard:
        data["tensorboard"] = False
    return train_config(data, where=str(args.config or stage))


def _model(args: argparse.Namespace, num_classes: int, cfg: Any):
    """The detector to train: rebuilt from a checkpoint given as ``--weights`` (its own settings),
    else built by name with its initialisation drawn from ``cfg.seed`` (same command, same weights)."""
    from ..models import build_detector, load_detector

    if args.weights in ("imagenet", "none"):
        return build_detector(args.detector or DEFAULT_DETECTOR, num_classes, cfg.image_size, args.weights,
                              seed=cfg.seed)
    model = load_detector(args.weights, trust=args.trust_checkpoint, image_size=cfg.image_size)
    meta = model.synthdet_meta
    if args.detector and args.detector != meta["name"]:
        raise ValueError(f"{args.weights}: holds a {meta['name']}, not the --detector {args.detector}")
    if meta["num_classes"] != num_classes:
        raise ValueError(f"{args.weights}: trained for {meta['num_classes']} classes, the data has {num_classes}")
    return model


def _read_real(args: argparse.Namespace, path: str, split: str | None, subset: bool):
    """Records of a real dataset, its images checked before any work (bad ones refused, or with
    ``--skip-bad-images`` dropped), then the ``--n-real`` subset; and the bad files."""
    from ..datasets import read_dataset
    from ..datasets.check import check_records
    from ..datasets.subsets import nested_subsets

    records, names = read_dataset(args.format, path, split=split)
    if not records:
        raise ValueError(f"{path}: no images")
    records, bad = check_records(records, str(path), skip_bad=args.skip_bad_images,
                                 progress=not args.no_progress)
    if subset and args.n_real != -1:
        records = nested_subsets(records, [args.n_real], seed=args.subset_seed)[args.n_real]
    return records, names, bad


def _stream(args: argparse.Namespace):
    from ..synthesis import make_stream
    from ..synthesis.config import synth_config
    from ..synthesis.placement import load_box_prior
    from ..utils.config import load_yaml

    data = load_yaml(args.synth_config) if args.synth_config else {}
    if isinstance(data.get("synthesis"), dict):
        data = data["synthesis"]
    cfg = synth_config(data, where=str(args.synth_config or "synthesis"))
    if cfg.placement == "fitted" and not args.real_annotations:
        raise ValueError("placement 'fitted' needs --real-annotations FILE (the real boxes to fit)")
    prior = load_box_prior(args.real_annotations, args.real_format) if cfg.placement == "fitted" else None
    return make_stream(args.objects, args.backgrounds, segmenter=args.segmenter,
                       segmenter_kwargs=dict(args.segmenter_arg), cache_dir=args.cache_dir, config=cfg,
                       seed=args.synth_seed, progress=not args.no_progress, box_prior=prior)


def _report(result: Any, out: Path, skipped: dict[str, list] | None = None) -> None:
    """``OUT/result.json`` (the run's outcome and ``skipped_images``: per input, the files left
    out and why) and the closing line."""
    from dataclasses import asdict

    from ..utils.files import atomic_write_json

    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "losses"}
    skipped = {k: [b.as_dict() for b in v] for k, v in (skipped or {}).items() if v}
    summary["skipped_images"] = {"count": sum(len(v) for v in skipped.values()), **skipped}
    atomic_write_json(out / "result.json", summary)
    best = "" if result.best_ap is None else f", best val AP50 {result.best_ap:.4f} at step {result.best_step}"
    left = f"; {summary['skipped_images']['count']} bad images skipped (see result.json)" if skipped else ""
    print(f"{result.steps} iterations in {result.seconds:.1f}s{best}; checkpoint {result.checkpoint}{left}")


def _stream_skipped(stream: Any) -> dict[str, list]:
    """The object / background / distractor images a stream's sources left out up front."""
    parts = {"objects": stream.objects, "backgrounds": stream.backgrounds, "distractors": stream.distractors}
    return {k: list(getattr(src, "skipped", [])) for k, src in parts.items() if src is not None}


def run_pretrain(args: argparse.Namespace) -> int:
    from .protocol import pretrain

    cfg = _train_config(args, "pretrain")
    stream = _stream(args)
    model = _model(args, len(stream.class_names), cfg)
    result = pretrain(model, stream, cfg, args.out, resume=not args.no_resume,
                      trust_checkpoint=args.trust_checkpoint)
    _report(result, args.out, _stream_skipped(stream))
    return 0


def _real_datasets(args: argparse.Namespace, image_size: int):
    from ..datasets import DetectionDataset

    train, names, bad_train = _read_real(args, args.train, args.train_split, subset=True)
    val, bad_val = None, []
    if args.val:
        val_records, val_names, bad_val = _read_real(args, args.val, args.val_split, subset=False)
        if val_names and names and val_names != names:
            raise ValueError(f"class names differ between --train {names} and --val {val_names}")
        val = DetectionDataset(val_records, resize=image_size)
    num_classes = max(names) if names else int(max((int(r.labels.max()) for r in train if len(r.labels)),
                                                   default=1))
    skipped = {"train": bad_train, "val": bad_val}
    train_ds = DetectionDataset(train, resize=image_size, skip_unreadable=args.skip_bad_images)
    return train_ds, val, names, num_classes, len(train), skipped


def run_finetune(args: argparse.Namespace) -> int:
    from .protocol import finetune

    cfg = _train_config(args, "finetune")
    train, val, names, k, n, skipped = _real_datasets(args, cfg.image_size)
    model = _model(args, k, cfg)
    print(f"finetuning {model.synthdet_meta['name']} on {n} real images, {k} classes")
    result = finetune(model, train, val, cfg, args.out, resume=not args.no_resume, class_names=names,
                      trust_checkpoint=args.trust_checkpoint)
    _report(result, args.out, skipped)
    return 0


def run_mixed(args: argparse.Namespace) -> int:
    from ..synthesis import SynthPool
    from .protocol import mixed

    cfg = _train_config(args, "mixed")
    train, val, names, k, n, skipped = _real_datasets(args, cfg.image_size)
    stream = _stream(args)
    synth = stream if args.pool is None else SynthPool(stream, args.pool)
    model = _model(args, k, cfg)
    result = mixed(model, train, synth, cfg, args.out, real_fraction=args.real_fraction, val_dataset=val,
                   resume=not args.no_resume, class_names=names, trust_checkpoint=args.trust_checkpoint)
    _report(result, args.out, {**skipped, **_stream_skipped(stream)})
    print(json.dumps({"real_images": n, "pool": args.pool, "real_fraction": args.real_fraction}))
    return 0
