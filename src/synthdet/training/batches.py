"""Where a training run's batches come from, in an order that is a pure function of (seed, step),
so a resumed run continues with exactly the batches an uninterrupted run would have seen:

- map-style datasets: an endless sampler; epoch ``e`` is a permutation drawn from a
  ``torch.Generator`` seeded with ``(seed, e)``; step ``s`` takes global positions
  ``[s * B, (s + 1) * B)`` of the concatenated epochs (datasets with ``wants_draw``, such as an
  augmenting :class:`~synthdet.datasets.DetectionDataset`, get ``(index, position)`` so every
  draw of an image is augmented anew);
- iterable streams (``SynthStream``): sample indices ``s * B ...``; a single process sets the
  stream's ``start`` (its own worker sharding keeps batches identical for any worker count),
  DDP ranks render their share through the stream's pure ``render(i)``.

Also the ``torchrun`` process-group set-up (:class:`DistInfo`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..datasets.records import collate_detection

logger = logging.getLogger(__name__)

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]

# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    Backend: NCCL on CUDA, gloo on CPU. Returns rank / world size / local rank.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _all_finite(loss: torch.Tensor, info: DistInfo) -> bool:
    ok = torch.isfinite(loss.detach()).all().float().reshape(1)
    if info.world > 1:
        import torch.distributed as dist

        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() > 0)


# ----------------------------------------------------------------------------- batch sources


class EndlessSampler(torch.utils.data.Sampler):
    """Endless index stream over ``n`` items: epoch ``e`` = permutation seeded by ``(seed, e)``.

    Yields, from global step ``start_step`` on, this rank's ``per_rank`` indices of every
    global batch of ``per_rank * world`` positions; ``with_draw``: ``(index, position)`` pairs.
    """

    def __init__(self, n: int, seed: int, start_step: int, per_rank: int, rank: int = 0, world: int = 1,
                 with_draw: bool = False) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.start_step = n, seed, start_step
        self.per_rank, self.rank, self.world = per_rank, rank, world
        self.with_draw = with_draw
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.int64)

    def _index(self, pos: int) -> int:
        epoch = pos // self.n
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        return int(self._perm[pos % self.n])

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = (step * self.world + self.rank) * self.per_rank
            for j in range(self.per_rank):
                pos = base + j
                yield (self._index(pos), pos) if self.with_draw else self._index(pos)
            step += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only needs it for len()
        return 2**62


class _RankShard(torch.utils.data.IterableDataset):
    """This rank's share of a stream with a pure ``render(i)``: global step ``s`` -> indices
    ``s*B + rank*b + j``; DataLoader workers take whole steps round-robin."""

    def __init__(self, stream: Any, start_step: int, per_rank: int, rank: int, world: int) -> None:
        self.stream, self.start_step, self.per_rank, self.rank, self.world = stream, start_step, per_rank, rank, world

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + wid
        while True:
            base = (step * self.world + self.rank) * self.per_rank
            for j in range(self.per_rank):
                i = base + j
                yield self.stream.sample(i) if hasattr(self.stream, "sample") else _sample_to_tensors(
                    self.stream.render(i))
            step += nw


def _sample_to_tensors(sample: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    img = np.ascontiguousarray(sample.image)
    image = torch.from_numpy(img).permute(2, 0, 1).float().div_(255)
    return image, {"boxes": torch.as_tensor(np.asarray(sample.boxes), dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.as_tensor(np.asarray(sample.labels), dtype=torch.int64).reshape(-1)}


def _skip(it: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        next(it)
    return it


def batch_iterator(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    start_step: int,
    seed: int,
    num_workers: int = 0,
    dist_info: DistInfo = DistInfo(),
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Endless batches ``(list of images, list of targets)`` from global step ``start_step`` on.

    ``batch_size`` is the global batch; this rank gets ``batch_size / world`` samples per step.
    """
    world, rank = dist_info.world, dist_info.rank
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world} DDP processes")
    per_rank = batch_size // world
    common = dict(collate_fn=collate_detection, num_workers=num_workers, pin_memory=pin_memory,
                  persistent_workers=False)
    if isinstance(dataset, torch.utils.data.IterableDataset):
        if world == 1 and hasattr(dataset, "start"):
            ds = copy.copy(dataset)
            ds.start = getattr(dataset, "start", 0) + start_step * batch_size
            if getattr(ds, "length", None) is not None:  # a finite stream keeps its end
                ds.length = max(0, ds.length - start_step * batch_size)
            if hasattr(ds, "block"):
                ds.block = per_rank
            return iter(torch.utils.data.DataLoader(ds, batch_size=per_rank, **common))
        if hasattr(dataset, "render"):
            ds = _RankShard(dataset, start_step, per_rank, rank, world)
            return iter(torch.utils.data.DataLoader(ds, batch_size=per_rank, **common))
        if world > 1:
            raise ValueError("DDP over an iterable dataset needs a stream with render(i)")
        logger.warning("iterable dataset without 'start': skipping %d batches to resume", start_step)
        it = iter(torch.utils.data.DataLoader(dataset, batch_size=per_rank, **common))
        return _skip(it, start_step)
    sampler = EndlessSampler(len(dataset), seed, start_step, per_rank, rank, world,  # type: ignore[arg-type]
                             with_draw=bool(getattr(dataset, "wants_draw", False)))
    return iter(torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler, **common))


def mixed_batch_iterator(
    real: torch.utils.data.Dataset,
    synth: torch.utils.data.Dataset,
    batch_size: int,
    real_fraction: float,
    start_step: int,
    seed: int,
    num_workers: int = 0,
    dist_info: DistInfo = DistInfo(),
) -> Iterator[Batch]:
    """Batches with exactly ``round(batch_size * real_fraction)`` real samples, the rest artificial."""
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    n_real = int(round(batch_size * real_fraction))
    n_synth = batch_size - n_real
    its = []
    if n_real:
        its.append(batch_iterator(real, n_real, start_step, seed, num_workers, dist_info))
    if n_synth:
        its.append(batch_iterator(synth, n_synth, start_step, seed + 1, num_workers, dist_info))

    def gen() -> Iterator[Batch]:
        while True:
            images: list[torch.Tensor] = []
            targets: list[dict[str, torch.Tensor]] = []
            for it in its:
                im, tg = next(it)
                images += im
                targets += tg
            yield images, targets

    return gen()
