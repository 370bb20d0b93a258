"""CLI: ``synthdet experiment``, ``synthdet report``, ``synthdet demo``."""

from __future__ import annotations

import argparse


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


def register(sub: argparse._SubParsersAction) -> None:
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
