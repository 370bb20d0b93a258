"""Speed of one training step: synthdet's trainer against another commit's, in one run.

Each measurement runs in a fresh process (``--worker``) that imports synthdet from a given
source tree, builds the detector, and times :func:`synthdet.training.run_training` over one
pre-made batch (the loop itself: forward, loss, backward, optimiser step, EMA, clipping;
iterations 2..N, after warm-up steps). With ``--ref COMMIT`` the same worker also runs
COMMIT's code (``git archive`` of its ``src/`` into a temporary folder) and the rounds
alternate between the two trees, so machine noise hits both alike; the speed-up is the ratio
of the medians. ``--isa avx2`` runs every worker with the AVX-512 paths of PyTorch, oneDNN, MKL
and OpenCV switched off (what an AVX2-only processor runs). The workers also report:

- ``GFLOP/s``: the step's floating-point operations (``torch.utils.flop_counter``, with the
  convolution backward counted as one forward per gradient it computes: PyTorch's own formula
  overcounts grouped, i.e. depthwise, convolutions by the group count) over its time, and the
  same for a large fp32 matmul measured in the same worker: the physical reference;
- ``--profile K``: the top K operations by self CPU time (``torch.profiler``), per tree. The
  profiler sees the calling thread only, so this tree's step is profiled unsharded
  (``cpu_shards=1``): the same operations the shards run, each on all threads.

``--demo`` takes each tree's own demo detector (options, training size, batch): "the demo's
trainer, before and after". Examples::

    python bench/train_step.py --demo --ref HEAD~1 --isa avx2 --rounds 5 --profile 15
    python bench/train_step.py --detector fcos_efficientnet_lite0 --size 320 \\
        --option fpn_channels=96 --option head_convs=2 --option train_size=192 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "OPENCV_CPU_DISABLE": "AVX512-SKX"}


# ----------------------------------------------------------------------------- worker (one tree)


def make_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    """``batch`` random images of ``size`` px with 1-4 random boxes each (torchvision targets)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g))
        n = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.35 + 4
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, num_classes + 1, (n,), generator=g)})
    return images, targets


def _setting(args: argparse.Namespace) -> tuple[str, dict, int, int, int]:
    """(detector, options, image size, training input size, batch) of this tree."""
    if args.demo:
        from synthdet.experiments.demo import demo_config

        cfg = demo_config()
        det = cfg.detectors[0]
        options = dict(cfg.detector_options.get(det, {}))
        return det, options, cfg.image_size, int(options.get("train_size", cfg.image_size)), \
            int(cfg.pretrain["batch_size"])
    from synthdet.utils.config import parse_key_value

    options = dict(parse_key_value(kv) for kv in args.option)
    return args.detector, options, args.size, int(options.get("train_size", args.size)), args.batch


def _time_loop(model, images, targets, iters: int, batch: int) -> float:
    """Seconds per iteration of ``run_training`` over iterations 2..iters (the short recipe)."""
    from synthdet.training.config import train_config
    from synthdet.training.engine import run_training

    cfg = train_config({"recipe": "short"}, iterations=iters + 1, batch_size=batch, device="cpu",
                       checkpoint_every=0, progress=False, tensorboard=False, seed=0)
    stamps: list[float] = []

    def batches(start, info):
        while True:
            stamps.append(time.perf_counter())
            yield images, targets

    with tempfile.TemporaryDirectory() as d:
        run_training(model, batches, cfg, d, resume=False, stage="bench")
    return (stamps[iters] - stamps[1]) / (iters - 1)


def _flops(model, images, targets) -> float:
    """Floating-point operations of one training step (forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    def conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                      *rest, out_shape=None, **kw) -> int:
        mask = rest[-1] if rest else (True, True, True)  # grad input, grad weight, grad bias
        return conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed) * \
            (int(bool(mask[0])) + int(bool(mask[1])))

    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward})
    with counter:
        sum(model(images, targets).values()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def _profile(model, images, targets, top: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    from synthdet.training.config import train_config
    from synthdet.training.engine import run_training

    from synthdet.training.config import TrainConfig

    # the profiler records the calling thread's operations only: profile the step unsharded
    unsharded = {"cpu_shards": 1} if "cpu_shards" in TrainConfig.__dataclass_fields__ else {}
    cfg = train_config({"recipe": "short"}, iterations=4, batch_size=len(images), device="cpu",
                       checkpoint_every=0, progress=False, tensorboard=False, seed=0, **unsharded)
    with tempfile.TemporaryDirectory() as d, profile(activities=[ProfilerActivity.CPU]) as prof:
        run_training(model, lambda s, i: iter([(images, targets)] * 4), cfg, d, resume=False, stage="bench")
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)


def worker(args: argparse.Namespace) -> None:
    import copy

    import torch

    from synthdet.models import build_detector

    det, options, size, train_size, batch = _setting(args)
    torch.manual_seed(0)
    model = build_detector(det, 2, size, weights="none", **options)
    images, targets = make_batch(batch, train_size, 2)
    out: dict = {"detector": det, "options": options, "size": size, "train_size": train_size, "batch": batch,
                 "threads": torch.get_num_threads(), "isa": torch.backends.cpu.get_cpu_capability()}
    _time_loop(copy.deepcopy(model), images, targets, 3, batch)  # warm-up: kernels, allocator
    out["seconds_per_it"] = _time_loop(copy.deepcopy(model), images, targets, args.iters, batch)
    if args.flops:
        out["gflop_per_step"] = _flops(copy.deepcopy(model).train(), images, targets) / 1e9
        out["matmul_gflops"] = _matmul_gflops()
    if args.profile:
        out["profile"] = _profile(copy.deepcopy(model), images, targets, args.profile)
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver


def _run_worker(src: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    if args.isa == "avx2":
        env.update(AVX2_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--iters", str(args.iters), *extra]
    if args.demo:
        cmd.append("--demo")
    else:
        cmd += ["--detector", args.detector, "--size", str(args.size), "--batch", str(args.batch)]
        for kv in args.option:
            cmd += ["--option", kv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"worker for {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _export_src(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` (git archive) under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", action="store_true", help="each tree's own demo detector, sizes and batch")
    ap.add_argument("--detector", default="fcos_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=320, help="detection size (image_size)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a detector builder option, e.g. --option train_size=192 (repeatable)")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per round (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ref", metavar="COMMIT", help="also time this commit's trainer, rounds alternating")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: switch the AVX-512 paths off in every worker")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="print the top K ops by self CPU time")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": REPO / "src"}
        if args.ref:
            trees = {f"ref {args.ref}": _export_src(args.ref, Path(tmp)), **trees}
        times: dict[str, list[float]] = {k: [] for k in trees}
        info = {k: _run_worker(src, args, ["--flops"] + (["--profile", str(args.profile)] if args.profile else []))
                for k, src in trees.items()}
        for r in range(args.rounds):
            for k, src in trees.items():
                times[k].append(_run_worker(src, args, [])["seconds_per_it"])
            print(f"round {r}: " + ", ".join(f"{k} {times[k][-1] * 1000:.0f} ms/it" for k in trees), flush=True)
    print(f"\n{_cpu_name()}, {args.isa} ISA (PyTorch capability in the workers: "
          f"{next(iter(info.values()))['isa']}), {next(iter(info.values()))['threads']} threads")
    for k, inf in info.items():
        med = statistics.median(times[k])
        print(f"{k}: {inf['detector']} {inf['options']} detect {inf['size']} px, train {inf['train_size']} px, "
              f"batch {inf['batch']}: {1 / med:.3f} it/s ({inf['batch'] / med:.1f} samples/s), "
              f"median of {len(times[k])} rounds, {med * 1000:.0f} ms/it; {inf['gflop_per_step']:.1f} GFLOP/step "
              f"-> {inf['gflop_per_step'] / med:.0f} GFLOP/s = {100 * inf['gflop_per_step'] / med / inf['matmul_gflops']:.0f} % "
              f"of a 2048^3 fp32 matmul's {inf['matmul_gflops']:.0f} GFLOP/s")
    if args.ref:
        ref, new = (statistics.median(times[k]) for k in trees)
        print(f"speed-up of this tree over {args.ref}: {ref / new:.2f}x")
    for k, inf in info.items():
        if "profile" in inf:
            print(f"\nprofile, {k} (4 steps, top {args.profile} by self CPU time):\n{inf['profile']}")


if __name__ == "__main__":
    main()
