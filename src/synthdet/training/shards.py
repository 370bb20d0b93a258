"""Data parallelism over threads for training on a CPU.

On a CPU, one training step of a detector runs each operation on all cores (PyTorch's intra-op
threads). Many of a detector's operations are too small for that to pay (the FCOS target
assignment, GroupNorm, the convolutions of the small pyramid levels), so the cores wait for each
other. :class:`ShardedStep` instead cuts the batch into ``n`` contiguous shards and runs each
shard's forward and backward pass in its own thread, with ``threads`` intra-op threads each, on
its own replica of the model: the replicas share the model's parameters and buffers (the same
storage: an optimiser step on the model updates them all) but not their gradients, which are
summed into the model's in shard order, so a run is deterministic.

The shards' losses are weighted so that they add up to the whole batch's loss: by the count a
detector divided its losses by (``model.loss_count``: FCOS's foreground locations), else by the
number of images. The step therefore computes the same gradient as the unsharded step, up to
rounding (tested). Models with BatchNorm layers that use batch statistics are not sharded
(:func:`shardable`): their statistics would be those of a shard.

``bench/train_step.py`` measures the gain (docs/detectors.md, "Training speed").
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from ..utils.threads import cpu_pool

Targets = list[dict[str, Tensor]]


def shardable(model: nn.Module) -> bool:
    """Whether a step of ``model`` can be split into shards without changing it: no BatchNorm
    layer that normalises with the statistics of its batch (frozen BatchNorm is fine)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _replica(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are the model's storage, with gradients
    of its own."""
    rep = copy.deepcopy(model)
    for (_, p), (_, rp) in zip(model.named_parameters(), rep.named_parameters()):
        rp.data = p.data
    for m, rm in zip(model.modules(), rep.modules()):
        for name, buf in m._buffers.items():
            rm._buffers[name] = buf
    return rep


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges cutting ``n`` items into at most ``shards`` non-empty
    parts whose sizes differ by at most one (the first ones larger)."""
    shards = max(1, min(shards, n))
    size, extra = divmod(n, shards)
    bounds, start = [], 0
    for i in range(shards):
        end = start + size + (i < extra)
        bounds.append((start, end))
        start = end
    return bounds


class ShardedStep:
    """Forward and backward of one batch as ``shards`` parts in parallel threads (module
    docstring). Use :meth:`forward`, then call the returned function to run the backward
    passes; the model's ``.grad`` then holds the whole batch's gradient. :meth:`close` (or
    ``with``) stops the threads."""

    def __init__(self, model: nn.Module, shards: int, threads: int = 1) -> None:
        if shards < 2:
            raise ValueError(f"a sharded step needs at least 2 shards, got {shards}")
        if not shardable(model):
            raise ValueError("this model has BatchNorm layers with batch statistics: it cannot be sharded")
        self.model, self.shards, self.threads = model, shards, threads
        self.replicas = [model, *(_replica(model) for _ in range(shards - 1))]
        self.pool = cpu_pool(shards, threads, name="synthdet-shard")

    def forward(self, images: list[Tensor], targets: Targets) -> tuple[dict[str, Tensor], Callable[[], None]]:
        """Training forward of the shards: returns the batch's loss components (detached, the
        weighted sums of the shards') and a function that runs the weighted backward passes
        and leaves the summed gradient in the model's parameters (replacing what was there)."""
        bounds = shard_bounds(len(images), self.shards)
        models = self.replicas[: len(bounds)]
        for m in models[1:]:
            m.train(self.model.training)
        jobs = [self.pool.submit(m, images[a:b], targets[a:b]) for m, (a, b) in zip(models, bounds)]
        losses = [j.result() for j in jobs]
        weights = _weights(models, bounds)
        total = {k: sum(w * d[k].detach() for w, d in zip(weights, losses)) for k in losses[0]}

        def backward() -> None:
            for m in models:
                for p in m.parameters():
                    p.grad = None
            done = [self.pool.submit(_backward, sum(d.values()) * w) for d, w in zip(losses, weights)]
            for j in done:
                j.result()
            _gather_grads(models)

        return total, backward

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "ShardedStep":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _backward(loss: Tensor) -> None:
    loss.backward()


def _weights(models: list[nn.Module], bounds: list[tuple[int, int]]) -> list[float]:
    """Weights that make the shards' losses add up to the whole batch's: each shard's loss was
    divided by ``max(1, count)`` (``model.loss_count``), the batch's would be by
    ``max(1, total count)``; without ``loss_count``, the shard's share of the images."""
    counts = [getattr(m, "loss_count", None) for m in models]
    if all(c is not None for c in counts):
        total = max(1, sum(counts))
        return [max(1, c) / total for c in counts]
    n = bounds[-1][1]
    return [(b - a) / n for a, b in bounds]


def _gather_grads(models: list[nn.Module]) -> None:
    """Add the replicas' gradients to the model's (``models[0]``), in shard order."""
    for ps in zip(*(m.parameters() for m in models)):
        grads = [p.grad for p in ps if p.grad is not None]
        if not grads:
            continue
        total = grads[0] if ps[0].grad is not None else grads[0].clone()
        for g in grads[1:]:
            total.add_(g)
        ps[0].grad = total
        for p in ps[1:]:
            p.grad = None
