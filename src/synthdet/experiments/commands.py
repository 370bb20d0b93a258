"""CLI: ``synthdet train``, ``synthdet experiment``, ``synthdet report``, ``synthdet demo``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _experiment(args: argparse.Namespace) -> int:
    from .config import load_experiment
    from .report import build_report
    from .runner import run_experiment

    cfg = load_experiment(args.config)
    if args.device:
        import dataclasses

        cfg = dataclasses.replace(cfg, device=args.device)
    out = args.out or f"runs/{cfg.name}"
    run_experiment(cfg, out, max_runs=args.max_runs, skip_bad_images=args.skip_bad_images)
    path = build_report(out)
    print(path.read_text())
    print(f"results: {out}/results.csv  report: {path.parent}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.out_dir)
    print(path.read_text())
    print(f"written: {path.parent}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    default = "runs/demo-quick" if args.quick else ("runs/demo" if args.repeats == 1 else f"runs/demo-{args.repeats}x")
    run_demo(args.out or default, quick=args.quick, data_root=args.data_root, device=args.device,
             repeats=args.repeats)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train_run import train

    train(args.objects, args.train, args.out, val=args.val, test=args.test, backgrounds=args.backgrounds,
          own_backgrounds=True if args.own_backgrounds else None, config=args.config, overrides=args.set,
          minutes=args.minutes, iterations=args.iterations, compare_baseline=args.compare_baseline,
          seed=args.seed, device=args.device, skip_bad_images=args.skip_bad_images, progress=not args.no_progress)
    return 0


def _register_train(sub: argparse._SubParsersAction) -> None:
    from ..utils.config import parse_key_value

    p = sub.add_parser(
        "train", help="the whole method on your data in one command: object images + a few labelled images",
        description="Segment the object images, pretrain on synthetic samples pasted on backgrounds (your "
                    "photos, or made from your own images), finetune on the labelled images with the demo's "
                    "validation schedule (best checkpoint kept), evaluate; writes OUT/best.pt and OUT/report.md "
                    "with the demo's settings fitted to your images. Resumable: rerun the same command after a kill.")
    p.add_argument("--objects", required=True, metavar="DIR",
                   help="object images: one subfolder per class, named like the data's categories "
                        "(a folder of images = one class)")
    p.add_argument("--train", required=True, metavar="DATA",
                   help="labelled images: a COCO .json, a YOLO data.yaml (or its folder), a VOC folder (Annotations/)")
    p.add_argument("--val", metavar="DATA", help="validation images (default: a seeded fifth of --train held out)")
    p.add_argument("--test", metavar="DATA", help="test images, evaluated once at the end (optional)")
    p.add_argument("--backgrounds", metavar="DIR",
                   help="background photos (default: made from your training and object images, objects removed)")
    p.add_argument("--own-backgrounds", action="store_true",
                   help="with --backgrounds: also use the backgrounds made from your own images")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (a folder holding files synthdet did not write is refused)")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="experiment settings laid over the demo's (keys of configs/*.yaml but data, study, seed)")
    p.add_argument("--set", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, dotted, e.g. pretrain.cpu_shards=1 (repeatable)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, metavar="M",
                        help="size the run to about M minutes from timed probe steps (prints the --iterations chosen)")
    budget.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="pretraining iterations (finetuning follows at the demo's ratio; default the demo's)")
    p.add_argument("--compare-baseline", action="store_true",
                   help="also finetune the same detector without pretraining (same images and budget), and with "
                        "pretraining on a fifth of the images: the label-savings answer")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the held-out split, the synthesis and the training")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop labelled images that cannot be used (and their boxes) instead of refusing the data")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    p = sub.add_parser("experiment", help="run a YAML experiment (resumable) and write results.csv + report")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("--out", help="output folder (default runs/<name>)")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (resume later)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop real images that cannot be used (missing, unreadable, truncated, wrong size) and their "
                        "boxes, listed in each run's metrics.json (default: refuse before any run)")
    p.set_defaults(func=_experiment)

    p = sub.add_parser("report", help="rebuild tables and plots of an experiment from its results.csv")
    p.add_argument("out_dir")
    p.set_defaults(func=_report)

    p = sub.add_parser("demo", help="the whole method on the built-in offline birds benchmark (CPU friendly)")
    p.add_argument("--quick", action="store_true", help="a first look in a few minutes")
    p.add_argument("--out", help="output folder (default runs/demo, runs/demo-quick or runs/demo-<R>x)")
    p.add_argument("--repeats", type=int, default=1,
                   help="R > 1: the demo R times with seeds 0..R-1 (mean +- std; about 17 min per repeat on "
                        "2 CPU cores; with --out runs/demo after a demo, seed 0 is reused)")
    p.add_argument("--data-root", help="where the birds benchmark is built (default $SYNTHDET_HOME)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_demo)
