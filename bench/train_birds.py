"""``synthdet train`` on the birds benchmark as a user would: its folders and COCO files, not
``benchmark: birds``. Backgrounds: (a) the benchmark's photos, (b) none given (made from the
training and object images), (c) both; at 10 and 50 real images (the demo's nested subsets of
``train.json``, seeds 0-2), with the benchmark's ``val.json`` / ``test.json``.

    python bench/train_birds.py subsets --out runs/train-birds          # writes the subset COCO files
    python bench/train_birds.py commands --out runs/train-birds | xargs -d '\n' -n 1 -P 2 sh -c
    python bench/train_birds.py table --out runs/train-birds            # test AP@0.5 mean +- std, wall time
    python bench/train_birds.py leak --out runs/train-birds/own_n10_s0  # bird pixels left in object backgrounds

Each command runs with one thread (``OMP_NUM_THREADS=1``, ``cpu_shards: 1``) under ``nice -n 19``
and logs to ``OUT/logs/<run>.log``; its wall time is that of the whole command (``/usr/bin/time``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import statistics
from pathlib import Path

from synthdet.datasets.coco import read_coco, write_coco
from synthdet.datasets.subsets import nested_subsets

SIZES = (10, 50)
SEEDS = (0, 1, 2)
MODES = {"photos": "--backgrounds {bg}", "own": "", "both": "--backgrounds {bg} --own-backgrounds"}


def _root(args) -> Path:
    return Path(args.data_root or Path.home() / ".cache" / "synthdet" / "birds")


def subsets(args) -> None:
    records, names = read_coco(_root(args) / "scenes" / "annotations" / "train.json")
    for seed in SEEDS:  # the demo's subsets: one seeded permutation per repeat, nested prefixes
        for n, recs in nested_subsets(records, SIZES, seed=seed).items():
            write_coco(Path(args.out) / "subsets" / f"train_n{n}_s{seed}.json", recs, names)
    print(f"wrote {len(SEEDS) * len(SIZES)} subsets to {Path(args.out) / 'subsets'}")


def commands(args) -> None:
    root, out = _root(args), Path(args.out)
    ann = root / "scenes" / "annotations"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for n in SIZES:
        for mode, extra in MODES.items():
            for seed in SEEDS:
                name = f"{mode}_n{n}_s{seed}"
                cmd = (f"synthdet train --objects {root / 'classification' / 'images'} "
                       f"--train {out / 'subsets' / f'train_n{n}_s{seed}.json'} --val {ann / 'val.json'} "
                       f"--test {ann / 'test.json'} {extra.format(bg=root / 'backgrounds')} --seed {seed} "
                       f"--out {out / name} --set pretrain.cpu_shards=1 --set finetune.cpu_shards=1 --no-progress")
                log = out / "logs" / f"{name}.log"
                print(f"OMP_NUM_THREADS=1 /usr/bin/time -f 'wall %e s' nice -n 19 {args.synthdet} "
                      f"{cmd.removeprefix('synthdet ')} > {shlex.quote(str(log))} 2>&1")


def _wall(log: Path) -> float | None:
    m = re.findall(r"wall ([0-9.]+) s", log.read_text()) if log.is_file() else []
    return float(m[-1]) if m else None


def table(args) -> None:
    out = Path(args.out)
    print("| real images | backgrounds | seed 0 / 1 / 2 | test AP@0.5 mean +- std | wall min per run (not quiet) |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        for mode in MODES:
            aps, walls = [], []
            for seed in SEEDS:
                rows = out / f"{mode}_n{n}_s{seed}" / "experiment" / "results.csv"
                if not rows.is_file():
                    continue
                with open(rows) as f:
                    main = [r for r in csv.DictReader(f) if r["variant"] == "pretrained" and r["n_real_requested"] == "-1"]
                aps.append(100 * float(main[0]["ap50"]))
                walls.append(_wall(out / "logs" / f"{mode}_n{n}_s{seed}.log"))
            if not aps:
                continue
            std = f" +- {statistics.stdev(aps):.1f}" if len(aps) > 1 else ""
            w = [x / 60 for x in walls if x is not None]
            wall = f"{statistics.fmean(w):.1f} ({min(w):.1f}-{max(w):.1f})" if w else "-"
            print(f"| {n} | {mode} | {' / '.join(f'{a:.1f}' for a in aps)} | {statistics.fmean(aps):.1f}{std} | {wall} |")
            if args.json:
                print(json.dumps({"n": n, "mode": mode, "ap": aps, "wall_s": walls}))


def leak(args) -> None:
    """How much of each bird (its true mask) the own-image object backgrounds of one run left in
    place: the true foreground outside the filled region, over the images that gave a background."""
    import numpy as np

    from synthdet.segmentation.gates import MaskGates
    from synthdet.sources.own_backgrounds import object_region
    from synthdet.utils.files import list_images
    from synthdet.utils.image import read_image

    root, run = _root(args), Path(args.out)
    (cache,) = [p for p in (run / "experiment" / "mask_cache").iterdir() if p.is_dir()]
    from synthdet.utils.files import file_digest

    left, used, whole = [], 0, 0
    for p in list_images(root / "classification" / "images"):
        mask = read_image(cache / f"{file_digest(p)}.png")[:, :, 0].astype(np.float32) / 255
        region = None if MaskGates().check(mask) else object_region(mask)
        if region is None:
            continue
        true = read_image(root / "classification" / "true_masks" / f"{p.stem}.png")[:, :, 0] > 127
        used += 1
        left.append((true & ~region).sum() / max(1, true.sum()))
        whole += left[-1] > 0.5
    q = np.percentile(left, [50, 90, 99])
    print(f"{used} object backgrounds: share of the true bird left unfilled: mean {np.mean(left):.3f}, "
          f"median {q[0]:.3f}, p90 {q[1]:.3f}, p99 {q[2]:.3f}, max {max(left):.3f}; more than half left: {whole}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("subsets", "commands", "table", "leak"))
    ap.add_argument("--out", default="runs/train-birds")
    ap.add_argument("--data-root", default=None, help="the birds benchmark (default ~/.cache/synthdet/birds)")
    ap.add_argument("--synthdet", default="synthdet", help="how to call synthdet (e.g. 'python -m synthdet.cli')")
    ap.add_argument("--json", action="store_true", help="table: also one JSON line per row")
    args = ap.parse_args()
    {"subsets": subsets, "commands": commands, "table": table, "leak": leak}[args.what](args)


if __name__ == "__main__":
    main()
