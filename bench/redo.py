"""ReDO on a class's classification images: IoU against the true masks as training goes on.

Fits ReDO (the CPU recipe of ``synthdet segment fit --segmenter redo``, or a variant: ``--set
KEY=VALUE`` of ``RedoConfig``) once per seed on the images only (no masks, no boxes), and at every
checkpoint scores the object masks of all training images against their true masks (the true
masks never reach the training). Writes ``OUT/<label>_seed<k>.csv`` (one row per checkpoint:
step, wall and process-CPU minutes, mean IoU, the object's area, the losses), ``OUT/curves.png``
(IoU against wall minutes and against CPU minutes of every CSV in ``OUT``) and prints per seed
(also into ``OUT/<label>_summary.json``): the IoU of the prior alone and after the warm start,
the mean IoU of the checkpoint the fit returns (scored at each image's own size, as ``bench/
segmentation.py`` does), iterations, wall and CPU minutes, restarts.

    python bench/redo.py --out runs/redo_bench --seeds 0,1,2 --minutes 30 --threads 2
    python bench/redo.py --out runs/redo_bench --seeds 0 --iterations 3000 --threads 1 \\
        --set prior=centre --label centre

Default images: the birds benchmark's 600 classification images and their true masks.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthdet.segmentation.metrics import evaluate_segmenter, paired_files
from synthdet.segmentation.redo import RedoConfig, load_redo_checkpoint
from synthdet.segmentation.redo_segmenter import RedoSegmenter
from synthdet.segmentation.redo_train import fit_redo
from synthdet.segmentation.simple import read_mask
from synthdet.utils.config import from_dict, load_yaml, parse_key_value, to_dict

FIELDS = ("step", "wall_min", "cpu_min", "iou", "area", "loss_d", "loss_g_adv", "loss_info", "loss_prior",
          "min_region_area")


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _mean_iou(masks: torch.Tensor, trues: torch.Tensor) -> float:
    """Mean foreground IoU at 0.5 of soft ``masks (N, R, R)`` up-sampled to ``trues (N, H, W)`` (bool)."""
    up = F.interpolate(masks[:, None].float(), size=trues.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    p = up >= 0.5
    inter = (p & trues).flatten(1).sum(1).float()
    union = (p | trues).flatten(1).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())


def run_seed(cfg: RedoConfig, pairs: list, images: Path, true_masks: Path, out: Path, csv_path: Path) -> dict:
    """Fit one seed, writing the curve to ``csv_path``; returns the summary row."""
    paths = [ip for ip, _ in pairs]
    trues = {ip: read_mask(mp) >= 0.5 for ip, mp in pairs}
    shape = next(iter(trues.values())).shape
    same = all(t.shape == shape for t in trues.values())
    t0, c0 = time.perf_counter(), _cpu_seconds()
    rows: list[dict] = []
    prior: dict[str, float] = {}

    def score(masks: torch.Tensor, names: list) -> float:
        if same:
            return _mean_iou(masks, torch.from_numpy(np.stack([trues[p] for p in names])))
        return float(np.mean([_mean_iou(m[None], torch.from_numpy(trues[p])[None])  # sizes differ: one by one
                              for m, p in zip(masks, names)]))

    def hook(info: dict) -> None:
        masks = info["object_masks"]
        iou = score(masks, info["paths"])
        if info.get("prior") is not None:
            prior["iou"] = score(info["prior"].float(), info["paths"])
            print(f"  the {cfg.prior} prior alone: IoU {prior['iou']:.3f}", flush=True)
        row = info["row"] or {}
        rows.append({"step": info["step"], "wall_min": round((time.perf_counter() - t0) / 60, 3),
                     "cpu_min": round((_cpu_seconds() - c0) / 60, 3), "iou": round(iou, 4),
                     "area": round(float(masks.mean()), 4),
                     **{k: round(float(row[k]), 4) for k in FIELDS[5:] if k in row}})
        print(f"  step {info['step']:6d}  {rows[-1]['wall_min']:6.1f} min  IoU {iou:.3f}  area {rows[-1]['area']:.3f}",
              flush=True)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)

    ckpt = fit_redo(paths, cfg, out, resume=False, progress=False, on_checkpoint=hook)
    wall, cpu = (time.perf_counter() - t0) / 60, (_cpu_seconds() - c0) / 60
    state = load_redo_checkpoint(ckpt)
    last = load_redo_checkpoint(out / "last.pt")
    seg = RedoSegmenter(ckpt, progress=False)
    r = evaluate_segmenter(seg, images, true_masks, progress=False)
    return {"seed": cfg.seed, "prior_iou": prior.get("iou", float("nan")), "warm_iou": rows[0]["iou"] if rows else
            float("nan"), "checkpoint": ckpt.name, "step": state["step"], "iterations": last["step"],
            "iou": r["iou"], "wall_min": wall, "cpu_min": cpu, "restarts": last["guard"]["restarts"],
            "region": state["object_region"], "orientation": state.get("orientation", {}).get("rule", "")}


def plot(out: Path) -> Path:
    """``out/curves.png``: mean IoU against wall and CPU minutes of every CSV in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for path in sorted(out.glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        for ax, key in zip(axes, ("wall_min", "cpu_min")):
            ax.plot([float(r[key]) for r in rows], [float(r["iou"]) for r in rows], marker=".", label=path.stem)
    for ax, what in zip(axes, ("wall minutes of the fit", "process CPU minutes of the fit")):
        ax.set_xlabel(what)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean IoU against the true masks")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return out / "curves.png"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="default: the birds benchmark's classification images")
    ap.add_argument("--true-masks", type=Path, help="default: the birds benchmark's true masks")
    ap.add_argument("--out", type=Path, required=True, help="folder for the CSVs, the plot and the fits")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--minutes", type=float, help="budget of each fit in wall minutes (default: the recipe's 30)")
    ap.add_argument("--iterations", type=int, help="budget of each fit in ReDO iterations (no time limit)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--config", type=Path, help="YAML file of RedoConfig fields")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a RedoConfig field")
    ap.add_argument("--label", default="redo", help="name of the CSVs (variant), default redo")
    ap.add_argument("--plot-only", action="store_true", help="redraw OUT/curves.png from the CSVs and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plot_only:
        print(plot(args.out))
        return 0
    torch.set_num_threads(args.threads)
    if not (args.images and args.true_masks):
        from synthdet.datasets.birds import load_birds

        bench = load_birds()
        args.images, args.true_masks = bench.classification_dir, bench.true_masks_dir
    pairs = paired_files(args.images, args.true_masks)
    raw = to_dict(from_dict(RedoConfig, load_yaml(args.config), where=str(args.config))) if args.config else {}
    raw.update(dict(parse_key_value(kv) for kv in args.set))
    if args.minutes is not None:
        raw["time_limit_minutes"] = args.minutes
    if args.iterations is not None:
        raw.update(iterations=args.iterations, time_limit_minutes=None)
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = from_dict(RedoConfig, {**raw, "seed": seed, "device": "cpu"}, where="bench/redo.py settings")
        print(f"{args.label} seed {seed}: {len(pairs)} images, {args.threads} thread(s)", flush=True)
        results.append(run_seed(cfg, pairs, args.images, args.true_masks, args.out / f"{args.label}_seed{seed}",
                                args.out / f"{args.label}_seed{seed}.csv"))
    plot(args.out)
    print(f"\n{args.label} on {args.images} ({len(pairs)} images, {args.threads} thread(s))\n")
    print("| seed | prior alone | after the warm start | mean IoU | checkpoint (step) | iterations | wall min "
          "| CPU min | restarts | object region |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['seed']} | {r['prior_iou']:.3f} | {r['warm_iou']:.3f} | {r['iou']:.3f} "
              f"| {r['checkpoint']} ({r['step']}) | {r['iterations']} "
              f"| {r['wall_min']:.1f} | {r['cpu_min']:.1f} | {r['restarts']} | {r['region']} ({r['orientation']}) |")
    (args.out / f"{args.label}_summary.json").write_text(json.dumps(results, indent=1))
    ious = [r["iou"] for r in results]
    print(f"\nmean IoU {np.mean(ious):.3f} +- {np.std(ious):.3f} over {len(ious)} seed(s); "
          f"lowest {min(ious):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
