"""Overhead of synthdet's training loop vs a bare torchvision loop, same model and batch, one run.

The bare loop is torchvision's reference step (forward, loss sum, ``loss.item()`` finiteness
check, zero_grad, backward, Adam step) over one pre-made batch. Ours is
:func:`synthdet.training.run_training` fed the same pre-made batch (so only the loop itself
is measured: device moves, non-finite guard, logging; the end-to-end figure adds setup and
the final checkpoint). Both time iterations 2..N. Rounds alternate bare/ours to spread machine noise; the median per-iteration time of each is compared.
Target: overhead < 5 %. Ours runs as configured by default (TensorBoard logging on) and once more
with ``tensorboard=False``, to show what the logging costs. Also prints the samples/s the trainer consumes, to compare with the
synthesis stream's rate (``bench/stream.py``).

    python bench/train_step.py --detector ssd_mobilenet --size 128 --batch 8 --iters 10 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from synthdet.models import build_detector
from synthdet.utils.config import parse_key_value
from synthdet.training import TrainConfig, run_training
from synthdet.utils.device import resolve_device


def make_batch(batch: int, size: int, num_classes: int, seed: int = 0):
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


def bare_loop(model, images, targets, iters: int, lr: float, device: torch.device) -> float:
    """torchvision-reference-style loop; returns seconds per iteration."""
    amp = device.type == "cuda"
    model.to(device).train()
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(iters):
        if i == 1:  # time iterations 2..N (the first one pays allocations), as for ours
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(torch.tensor(loss.item())):
            raise RuntimeError("non-finite loss")
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return (time.perf_counter() - t0) / (iters - 1)


def our_loop(model, images, targets, iters: int, lr: float, device: torch.device, batch: int,
             tensorboard: bool = True) -> tuple[float, float]:
    """Returns (seconds per iteration over iterations 2..N, end-to-end seconds per iteration).

    Iteration k starts when the loop asks for batch k, so the request times give the
    per-iteration time including everything the loop does between steps; the end-to-end
    figure adds setup and the final checkpoint write.
    """
    cfg = TrainConfig(iterations=iters + 1, batch_size=batch, lr=lr, device=str(device), checkpoint_every=0,
                      progress=False, log_every=10, seed=0, tensorboard=tensorboard)  # no bar: clean output
    stamps: list[float] = []

    def batches(start, info):
        while True:
            _sync(device)
            stamps.append(time.perf_counter())
            yield images, targets

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_training(model, batches, cfg, d, resume=False, stage="bench")
        total = time.perf_counter() - t0
    # requests 1..iters+1 -> iterations 2..iters measured between requests 2 and iters+1
    return (stamps[iters] - stamps[1]) / (iters - 1), total / (iters + 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="ssd_mobilenet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a detector builder option, e.g. --option fpn_channels=64 (repeatable)")
    args = ap.parse_args()
    options = dict(parse_key_value(kv) for kv in args.option)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    base = build_detector(args.detector, 2, args.size, weights="none", **options)
    # a detector with a train_size of its own trains on inputs of that side (the demo: 192 px crops)
    images, targets = make_batch(args.batch, int(options.get("train_size", args.size)), 2)
    # warm-up (kernel/primitive creation) outside the timing
    bare_loop(copy.deepcopy(base), images, targets, 2, 1e-4, device)
    bare, ours, e2e, no_tb = [], [], [], []
    for r in range(args.rounds):
        bare.append(bare_loop(copy.deepcopy(base), images, targets, args.iters + 1, 1e-4, device))
        o, t = our_loop(copy.deepcopy(base), images, targets, args.iters, 1e-4, device, args.batch)
        ours.append(o)
        e2e.append(t)
        no_tb.append(our_loop(copy.deepcopy(base), images, targets, args.iters, 1e-4, device, args.batch,
                              tensorboard=False)[0])
        print(f"round {r}: bare {bare[-1] * 1000:.1f} ms/it, ours {o * 1000:.1f} ms/it "
              f"(end-to-end incl. setup + final checkpoint {t * 1000:.1f} ms/it; "
              f"TensorBoard off {no_tb[-1] * 1000:.1f} ms/it)")
    b, o = statistics.median(bare), statistics.median(ours)
    overhead = (o - b) / b * 100
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"{args.detector} {options or ''} {args.size}px (batches of {images[0].shape[-1]}px) batch {args.batch} "
          f"on {dev}")
    print(f"bare torchvision loop: {1 / b:.3f} it/s ({args.batch / b:.1f} samples/s)")
    print(f"synthdet run_training: {1 / o:.3f} it/s ({args.batch / o:.1f} samples/s consumed)")
    print(f"overhead: {overhead:+.2f} % (target < 5 %) -> {'OK' if overhead < 5 else 'OVER'}")
    off = statistics.median(no_tb)
    print(f"TensorBoard logging (on by default) vs off: {(o - off) / off * 100:+.2f} %")
    print(f"end-to-end (setup + final checkpoint over {args.iters + 1} iterations): "
          f"{(statistics.median(e2e) - b) / b * 100:+.2f} %")


if __name__ == "__main__":
    main()
