"""Are two experiment folders the same result? Test APs of ``results.csv`` and every tensor of
every pretraining checkpoint, compared exactly (no tolerance).

Left out: the checkpoint's copy of numpy's *global* RNG state (``rng/numpy``). synthdet never
seeds or draws from it (every sampler gets its own generator), so it holds whatever entropy the
process started with and differs between any two processes.

For checking that a change keeps the numbers on one machine (docs/reproducibility.md): run the
same experiment before and after the change into two folders, then::

    python bench/compare_runs.py /work/runs/before /work/runs/after

Prints one line per run and per checkpoint; the exit code is 1 if anything differs.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

UNSEEDED = ("/rng/numpy/",)  # global numpy RNG state: never seeded by synthdet, differs per process


def tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested checkpoint dict / list, keyed by its path (``/model/head.weight``)."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}/{i}")


def _aps(folder: Path) -> dict[str, str]:
    with open(folder / "results.csv", newline="") as f:
        return {r["run_id"]: r["ap50"] for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="experiment folder (holding results.csv, pretrain/)")
    ap.add_argument("b", type=Path, help="the other experiment folder")
    args = ap.parse_args(argv)
    differ = 0
    aps_a, aps_b = _aps(args.a), _aps(args.b)
    for run in sorted(aps_a.keys() | aps_b.keys()):
        same = aps_a.get(run) == aps_b.get(run)
        differ += not same
        print(f"{run}: test AP@0.5 {aps_a.get(run)} vs {aps_b.get(run)}: {'same' if same else 'DIFFERENT'}")
    for ck in sorted(args.a.glob("pretrain/*/last.pt")):
        other = args.b / ck.relative_to(args.a)
        if not other.is_file():
            print(f"{ck.relative_to(args.a)}: missing in {args.b}")
            differ += 1
            continue
        ta = {k: v for k, v in tensors(torch.load(ck, map_location="cpu", weights_only=True))
              if not k.startswith(UNSEEDED)}
        tb = {k: v for k, v in tensors(torch.load(other, map_location="cpu", weights_only=True))
              if not k.startswith(UNSEEDED)}
        bad = sorted(k for k in ta.keys() | tb.keys() if k not in ta or k not in tb or not torch.equal(ta[k], tb[k]))
        differ += bool(bad)
        n_model = sum(k.startswith("/model/") for k in ta)
        print(f"{ck.relative_to(args.a)}: {len(ta)} tensors ({n_model} model weights; global numpy RNG left out): "
              + ("all equal" if not bad else f"{len(bad)} differ, e.g. {bad[:3]}"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
