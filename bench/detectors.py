"""Where does the AP go? Train each detector on the birds benchmark's real scenes and print
train / val / test AP@0.5, and AP against iterations (plot), per input size.

Each (detector, size) trains on the N real training scenes (default all 300) with the given
recipe for a fixed wall-clock budget (``--minutes``) or iteration count, validating every
``--val-every`` iterations (the curve), then reports AP of the best validated weights on a
fixed 100-image subset of the training scenes, the validation and the test split.

    python bench/detectors.py --minutes 4                         # every detector, 128 and 256 px
    python bench/detectors.py --detectors fcos_efficientnet_lite0 --sizes 128 --iterations 1500  # ceiling

Output: a Markdown table on stdout, ``OUT/detectors.csv`` and ``OUT/ap_vs_iterations.png``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from synthdet.datasets import DetectionDataset
from synthdet.datasets.birds import build_birds
from synthdet.evaluation import evaluate_detector
from synthdet.models import build_detector, list_detectors
from synthdet.training import finetune
from synthdet.training.config import train_config

# the paper's SSDs train with their own recipe in the CPU demo of wave 1 (Adam, lr 1e-3)
PAPER_DETECTORS = {"ssd_mobilenet", "ssd_resnet50", "ssd_efficientnet_lite0", "retinanet_resnet50"}


class _BudgetSpent(Exception):
    """Raised by the validation function once the wall-clock budget has passed: stops training."""


def run_one(name: str, size: int, args: argparse.Namespace, splits: dict, out: Path) -> dict:
    model = build_detector(name, num_classes=1, image_size=size, weights="imagenet", seed=args.seed,
                           **dict(args.option))
    recipe = args.recipe or ("paper" if name in PAPER_DETECTORS else "short")
    extra = {"lr": 1e-3} if recipe == "paper" else {}
    cfg = train_config({"recipe": recipe, **extra}, iterations=args.iterations, batch_size=args.batch,
                       val_every=args.val_every, image_size=size, progress=False, seed=args.seed,
                       eval_batch_size=16, **dict(args.set))
    train = splits["train"][: args.n_real] if args.n_real > 0 else splits["train"]
    val_ds = DetectionDataset(splits["val"])
    t0 = time.perf_counter()
    deadline = t0 + 60 * args.minutes if args.minutes else None
    curve: list[dict] = []

    def val_fn(m: torch.nn.Module) -> float:
        ap = float(evaluate_detector(m, val_ds, device="cpu", batch_size=16)["ap50"])
        curve.append({"seconds": time.perf_counter() - t0, "ap50": ap})
        if deadline is not None and time.perf_counter() > deadline:
            raise _BudgetSpent
        return ap

    run_dir = out / f"{name}_{size}"
    try:
        result = finetune(model, DetectionDataset(train), None, cfg, run_dir, resume=False, val_fn=val_fn)
        steps = result.steps
    except _BudgetSpent:
        from synthdet.training.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
        steps = (len(curve) - int(cfg.val_at_start)) * cfg.val_every
    seconds = time.perf_counter() - t0
    aps = {s: 100 * float(evaluate_detector(model, DetectionDataset(r), device="cpu", batch_size=16)["ap50"])
           for s, r in (("train", splits["train"][:100]), ("val", splits["val"]), ("test", splits["test"]))}
    steps_of = [(i + (0 if cfg.val_at_start else 1)) * cfg.val_every for i in range(len(curve))]
    return {"detector": name, "size": size, "recipe": recipe, "iterations": steps, "minutes": seconds / 60,
            "it_per_s": steps / seconds, **{f"{k}_ap50": v for k, v in aps.items()},
            "curve": [(s, 100 * c["ap50"]) for s, c in zip(steps_of, curve)]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in rows:
        xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(xs, ys, marker="o", ms=2, label=f"{r['detector']} {r['size']}px")
    ax.set_xlabel("iteration")
    ax.set_ylabel("val AP@0.5 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    from synthdet.utils.config import parse_key_value

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", nargs="+", default=None, help="default: every registered detector")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--minutes", type=float, default=4.0, help="wall-clock budget per run (0: no limit)")
    ap.add_argument("--iterations", type=int, default=10_000, help="iteration cap per run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--n-real", type=int, default=-1, help="real training scenes (-1: all 300)")
    ap.add_argument("--recipe", default=None, help="default: short for new detectors, paper (lr 1e-3) for SSDs")
    ap.add_argument("--set", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--option", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="detector builder option, e.g. fpn_channels=96 (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    bench = build_birds(args.data_root)
    splits = {s: bench.split_records(s)[0] for s in ("train", "val", "test")}
    out = args.out or Path(tempfile.mkdtemp(prefix="synthdet-detectors-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.detectors or list_detectors():
        for size in args.sizes:
            rows.append(run_one(name, size, args, splits, out))
            r = rows[-1]
            print(f"{name} {size}px: {r['iterations']} it in {r['minutes']:.1f} min; AP50 train {r['train_ap50']:.1f} "
                  f"val {r['val_ap50']:.1f} test {r['test_ap50']:.1f}", flush=True)
    keys = ["detector", "size", "recipe", "iterations", "minutes", "it_per_s", "train_ap50", "val_ap50", "test_ap50"]
    with open(out / "detectors.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "ap_vs_iterations.png")
    print("\n| detector | px | recipe | iterations | min | it/s | train AP50 | val AP50 | test AP50 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | {r['size']} | {r['recipe']} | {r['iterations']} | {r['minutes']:.1f} | "
              f"{r['it_per_s']:.2f} | {r['train_ap50']:.1f} | {r['val_ap50']:.1f} | {r['test_ap50']:.1f} |")
    print(f"\noutputs: {out}")


if __name__ == "__main__":
    main()
