"""GPU proof in one command (issue 15): the CUDA, AMP, full-size and torchrun paths, each run for
real, one line per step, everything written to one folder.

On a lent GPU (one H100; the sizes below are meant to fit 10 minutes including start-up)::

    python bench/gpu_check.py --out runs/gpu_check

The lent machine cannot reach the network, so the birds benchmark must travel with the working
tree: build it here (``synthdet data birds``), copy it into the git-ignored ``data/``
(``mkdir -p data && cp -r ~/.cache/synthdet/birds data/``), name ``data`` in the run's ``carry``
and add ``--data-root data``.

Each step prints ``step | figure(s) | PASS/FAIL (reason)``; steps are independent (one failing
does not stop the others) and the exit code is 1 if any failed. What each step proves:

- ``setup``: the birds benchmark opens; the object images' GrabCut masks are computed once
  (in parallel processes) into ``OUT/masks``, shared by every later step.
- ``a pretrain DET``: :func:`synthdet.training.pretrain` on the synthesis stream with CUDA + AMP
  (AMP is checked in the run's resolved config) for ``fcos_efficientnet_lite0`` (the default) and
  ``ssd_mobilenet`` (the paper's) at 300 px: end-to-end samples/s (loader start-up included) and
  peak GPU memory (``torch.cuda.max_memory_allocated``).
- ``b finetune+eval DET``: :func:`synthdet.training.finetune` with validation on the birds scenes,
  then :func:`synthdet.evaluation.evaluate_detector` on the test split: test AP@0.5.
- ``c data-efficiency``: the full-size point at 50 real images with the paper's 1000 + 1000
  iterations, pretrained vs not, one repeat, through :class:`synthdet.experiments.ExperimentRunner`
  (default detector and ``short`` recipe; see ``--point-detector`` / ``--point-recipe``).
- ``d redo``: ReDO ``fit_redo`` at 128 px for as many iterations as fit in 3 minutes, then its mean
  IoU on the classification images vs the true masks (the centred-ellipse baseline alongside).
- ``e stream feed``: per step, the trainer's time in ``next(batch_iter)`` vs the training step, with
  N DataLoader workers: does the stream keep the GPU fed (FAIL above ``max_wait_share``).
- ``f torchrun``: ``torchrun --standalone --nproc_per_node 1 -m synthdet.cli pretrain ...`` as a
  subprocess with a timeout. With one process ``WORLD_SIZE`` is 1 and synthdet starts no process
  group, so on one GPU this proves the launcher path, not NCCL itself; the line says which.

``--dry-run`` runs the same code on the CPU with tiny sizes (64 px, a few iterations and images,
ReDO for 10 s at 32 px, two gloo processes for torchrun, AMP off; memory reported as n/a) in under
two minutes on 2 cores; ``tests/test_gpu_check.py`` runs it so the script cannot rot between GPUs.

Outputs: ``OUT/<step>/result.json`` and ``OUT/<step>/log.txt`` (logs, warnings, tracebacks) and
the run folders each step trained in; ``OUT/summary.md`` (the table), ``OUT/summary.json``.

This file holds the sizes and runs the steps; the steps themselves are in ``bench/gpu_check_steps.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from gpu_check_steps import (DETECTORS, Ctx, Result, step_feed, step_finetune, step_point, step_pretrain, step_redo,
                             step_setup, step_torchrun)

log = logging.getLogger("gpu_check")

MARKER = ".gpu_check"

# Every size in one place per mode, so a reader sees the budget. GPU times are estimates for one
# H100 until a lent GPU has run this (each line prints its seconds: adjust here from them).
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda", "amp": True, "image_size": 300,
        "workers": 12, "mask_procs": 12,          # DataLoader workers, GrabCut processes (16 cores)
        "objects": None, "scenes": None,          # all 600 classification images, all 300/60/100 scenes
        "eval_batch": 32,
        # (a) ~20-30 s per detector
        "pretrain_iters": 150, "pretrain_batch": 32,
        # (b) ~20-30 s per detector
        "finetune_iters": 150, "finetune_batch": 16, "val_every": 50,
        # (c) the paper's sizes: 1000 + 1000 iterations, batch 16, 50 real images; ~3 min
        "point_n_real": 50, "point_pretrain_iters": 1000, "point_finetune_iters": 1000,
        "point_batch": 16, "point_val_every": 50,
        # (d) 3 min of ReDO at 128 px with the authors' widths and batch
        "redo_resolution": 128, "redo_seconds": 180.0, "redo_batch": 20, "redo_channels": 64,
        # (e) ~15 s
        "feed_workers": (4, 12), "feed_steps": 60, "feed_batch": 32, "max_wait_share": 0.2,
        # (f) ~30 s
        "ddp_nproc": 1, "ddp_iters": 20, "ddp_batch": 16, "ddp_timeout_s": 240,
    },
    "dry": {
        "device": "cpu", "amp": False, "image_size": 64,
        "workers": 1, "mask_procs": 2,
        "objects": 8, "scenes": 4,
        "eval_batch": 4,
        "pretrain_iters": 3, "pretrain_batch": 4,
        "finetune_iters": 3, "finetune_batch": 2, "val_every": 3,
        "point_n_real": 3, "point_pretrain_iters": 2, "point_finetune_iters": 2,
        "point_batch": 2, "point_val_every": 2,
        "redo_resolution": 32, "redo_seconds": 10.0, "redo_batch": 4, "redo_channels": 8,
        "feed_workers": (1,), "feed_steps": 2, "feed_batch": 2, "max_wait_share": None,
        "ddp_nproc": 2, "ddp_iters": 2, "ddp_batch": 4, "ddp_timeout_s": 120,
    },
}


# ----------------------------------------------------------------------------- running the steps


@dataclass
class Outcome:
    name: str
    seconds: float
    result: Optional[Result] = None
    error: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.result is not None and not self.result.problems

    @property
    def status(self) -> str:
        if self.passed:
            return "PASS"
        return f"FAIL ({self.error or '; '.join(self.result.problems)})"  # type: ignore[union-attr]

    @property
    def figures(self) -> str:
        return f"{self.result.text if self.result else '-'} [{self.seconds:.0f} s]"

    def line(self) -> str:
        return f"{self.name} | {self.figures} | {self.status}"


@contextlib.contextmanager
def _captured(log_path: Path) -> Iterator[None]:
    """Logging, warnings, stdout and stderr of a step go to ``log_path``, not the terminal."""
    with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)


def run_step(name: str, fn: Callable[[Path], Result], out: Path) -> Outcome:
    """Run one step in ``out/<slug>`` (emptied first), never raising; writes its ``result.json``."""
    folder = out / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    outcome = Outcome(name, 0.0)
    with _captured(folder / "log.txt"):
        try:
            outcome.result = fn(folder)
        except Exception as e:  # noqa: BLE001 - a failing step must not stop the others
            log.error("step %s failed:\n%s", name, traceback.format_exc())
            outcome.error = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    outcome.seconds = time.perf_counter() - t0
    values = outcome.result.values if outcome.result else {}
    (folder / "result.json").write_text(json.dumps(
        {"step": name, "passed": outcome.passed, "status": outcome.status, "figures": outcome.figures,
         "seconds": outcome.seconds, "values": values}, indent=2, default=str) + "\n")
    return outcome


def plan(ctx: Ctx, letters: str) -> list[tuple[str, Callable[[Path], Result]]]:
    """The steps to run (``setup`` always), in order, filtered by their letters."""
    steps: list[tuple[str, str, Callable[[Path], Result]]] = [("setup", "setup", partial(step_setup, ctx))]
    steps += [("a", f"a pretrain {d}", partial(step_pretrain, ctx, d)) for d in DETECTORS]
    steps += [("b", f"b finetune+eval {d}", partial(step_finetune, ctx, d)) for d in DETECTORS]
    steps += [("c", f"c data-efficiency n={ctx.sizes['point_n_real']}", partial(step_point, ctx)),
              ("d", "d redo", partial(step_redo, ctx)),
              ("e", "e stream feed", partial(step_feed, ctx)),
              ("f", "f torchrun", partial(step_torchrun, ctx))]
    return [(name, fn) for key, name, fn in steps if key == "setup" or key in letters]


def write_summary(out: Path, outcomes: list[Outcome], mode: str, sizes: dict[str, Any], seconds: float) -> None:
    rows = "\n".join(f"| {o.name} | {o.figures} | {o.status} |".replace("\n", " ") for o in outcomes)
    failed = sum(not o.passed for o in outcomes)
    md = (f"# synthdet GPU check ({mode})\n\n`python {' '.join(sys.argv)}`: {len(outcomes) - failed} of "
          f"{len(outcomes)} steps passed in {seconds:.0f} s.\n\n| step | figures | result |\n|---|---|---|\n{rows}\n\n"
          f"Sizes:\n\n```json\n{json.dumps(sizes, indent=1)}\n```\n")
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(
        {"mode": mode, "seconds": seconds, "sizes": sizes,
         "steps": [{"step": o.name, "passed": o.passed, "status": o.status, "figures": o.figures} for o in outcomes]},
        indent=2, default=str) + "\n")


def _claim(out: Path) -> None:
    """Refuse an existing, non-empty folder this script did not write; mark it as ours."""
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SystemExit(f"gpu_check: {out} holds files this script did not write; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("bench/gpu_check.py\n")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="output folder (default %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes (< 2 min)")
    ap.add_argument("--steps", default="abcdef", help="letters of the steps to run (default all: %(default)s)")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="data root holding birds/ (default $SYNTHDET_HOME or ~/.cache/synthdet)")
    ap.add_argument("--point-detector", default=DETECTORS[0], help="detector of step c (default %(default)s)")
    ap.add_argument("--point-recipe", default="short", choices=("short", "paper"), help="recipe of step c")
    args = ap.parse_args(argv)
    mode = "dry" if args.dry_run else "gpu"
    sizes = SIZES[mode]
    if args.dry_run:  # tiny tensors on a small, shared CPU: one thread (as tests/conftest.py measured)
        torch.set_num_threads(1)
    _claim(args.out)
    logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    ctx = Ctx(sizes, args.out, torch.device(sizes["device"]), args.data_root, args.point_detector, args.point_recipe)
    t0 = time.perf_counter()
    outcomes = []
    for name, fn in plan(ctx, args.steps):
        outcomes.append(run_step(name, fn, args.out))
        print(outcomes[-1].line(), flush=True)
    seconds = time.perf_counter() - t0
    write_summary(args.out, outcomes, mode, sizes, seconds)
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} steps passed in {seconds:.0f} s; "
          f"summary: {args.out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
