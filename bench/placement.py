"""Placement geometry benchmark: how close each placement rule's boxes are to the real boxes.

On the birds benchmark: the boxes of the 100 test scenes are the target; each placement rule
(the authors' Faces and Birds rows, the demo's generic ranges, and ``placement: fitted`` to 10 or
all 300 training scenes, with and without overlap) places 2,000 synthetic samples, and the
table gives objects per image, the box side (sqrt(w h) / image side; median and 10-90 %) and the
two-sample Kolmogorov-Smirnov distance D to the test boxes for side, aspect, centre x / y and the
object count (0 = same distribution). Geometry only: no image is rendered, nothing is trained.
``--time N`` also prints placements per second (N placements each) of the paper's uniform rule
and the fitted one at 320 px, to show what fitting costs in the stream.

    python bench/placement.py [--data-root DIR] [--samples 2000] [--fit-n 10] [--time 5000]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from synthdet.datasets.birds import build_birds
from synthdet.datasets.subsets import nested_subsets
from synthdet.synthesis.compose import place_boxes
from synthdet.synthesis.config import synth_config
from synthdet.synthesis.placement import box_features, fit_box_prior_records

DEMO = {"canvas_size": 160, "num_objects": [1, 4], "box_side": [0.1, 0.7]}


def _row(name: str, feats: np.ndarray, counts: np.ndarray, real: np.ndarray, real_counts: np.ndarray) -> str:
    ks = [stats.ks_2samp(feats[:, k], real[:, k]).statistic for k in range(4)]
    q = np.percentile(feats[:, 0], [50, 10, 90])
    return (f"| {name} | {counts.mean():.2f} | {q[0]:.2f} [{q[1]:.2f}, {q[2]:.2f}] | "
            + " | ".join(f"{d:.2f}" for d in ks) + f" | {stats.ks_2samp(counts, real_counts).statistic:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="birds benchmark root (default $SYNTHDET_HOME)")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--fit-n", type=int, default=10, help="real training images of the small fit (seed 0 subset)")
    ap.add_argument("--time", type=int, default=0, help="also time N placements per rule (0: skip)")
    args = ap.parse_args()

    bench = build_birds(args.data_root)
    train, test = bench.split_records("train")[0], bench.split_records("test")[0]
    real = np.concatenate([box_features(r.boxes, r.width, r.height) for r in test])
    real_counts = np.array([len(r.boxes) for r in test])
    small = nested_subsets(train, [args.fit_n], seed=0)[args.fit_n]
    print(f"target: {len(real)} boxes of {len(test)} test scenes; fit: {sum(len(r.boxes) for r in small)} boxes "
          f"of {args.fit_n} / {sum(len(r.boxes) for r in train)} boxes of {len(train)} training scenes\n")
    print("| placement | objects / image | side: median [p10, p90] | KS D side | KS D aspect | KS D cx | KS D cy "
          "| KS D count |\n|---|---|---|---|---|---|---|---|")
    print(_row(f"real training boxes (all {len(train)})",
               np.concatenate([box_features(r.boxes, r.width, r.height) for r in train]),
               np.array([len(r.boxes) for r in train]), real, real_counts))
    rules = [("faces row", {"preset": "faces"}, None), ("birds row", {"preset": "birds"}, None),
             ("demo (1-4, side 0.1-0.7)", {}, None)]
    for overlap in (False, True):
        for name, fit in ((f"fitted to {args.fit_n}", small), (f"fitted to all {len(train)}", train)):
            label = name + (", allow_overlap" if overlap else "")
            rules.append((label, {"placement": "fitted", "allow_overlap": overlap}, fit))
    for name, overrides, fit in rules:
        cfg = synth_config(DEMO, overrides)
        prior = fit_box_prior_records(fit) if fit is not None else None
        placed = [place_boxes(cfg, np.random.default_rng([0, i]), prior=prior) for i in range(args.samples)]
        feats = np.concatenate([box_features(p, cfg.canvas_size, cfg.canvas_size) for p in placed])
        print(_row(name, feats, np.array([len(p) for p in placed]), real, real_counts))
    if args.time:
        _timing(fit_box_prior_records(train), args.time)


def _timing(prior, n: int) -> None:
    import time

    print()
    for name, overrides in (("uniform (faces row)", {}), ("fitted", {"placement": "fitted"}),
                            ("fitted, allow_overlap", {"placement": "fitted", "allow_overlap": True})):
        cfg = synth_config({"canvas_size": 320}, overrides)
        p = prior if cfg.placement == "fitted" else None
        t0 = time.perf_counter()
        for i in range(n):
            place_boxes(cfg, np.random.default_rng([0, i]), prior=p)
        print(f"{name}: {n / (time.perf_counter() - t0):.0f} placements/s (320 px, Generator creation included)")


if __name__ == "__main__":
    main()
