"""The plain training loop: batches in, one optimiser step each, periodic validation and
checkpoints, exact resumption, non-finite-loss guard, AMP on CUDA and DDP under ``torchrun``.

Data order is a pure function of (seed, step), so a resumed run continues with exactly the
batches an uninterrupted run would have seen:

- map-style datasets: an endless sampler; epoch ``e`` is a permutation drawn from a
  ``torch.Generator`` seeded with ``(seed, e)``; step ``s`` takes global positions
  ``[s * B, (s + 1) * B)`` of the concatenated epochs;
- iterable streams (``SynthStream``): sample indices ``s * B ...``; a single process sets the
  stream's ``start`` (its own worker sharding keeps batches identical for any worker count),
  DDP ranks render their share through the stream's pure ``render(i)``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..datasets.records import collate_detection
from ..utils.config import dump_yaml, to_dict
from ..utils.device import resolve_device
from ..utils.files import atomic_write_json, atomic_write_text
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig

logger = logging.getLogger(__name__)

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; the run stops."""


@dataclass
class TrainResult:
    """Outcome of a run. ``checkpoint``: the result (``best.pt`` when validated, else ``last.pt``)."""

    best_ap: Optional[float]
    best_step: Optional[int]
    curve: list[dict[str, Any]]
    checkpoint: Path
    steps: int
    seconds: float
    last_checkpoint: Optional[Path] = None
    losses: list[dict[str, float]] = field(default_factory=list)


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
    global batch of ``per_rank * world`` positions.
    """

    def __init__(self, n: int, seed: int, start_step: int, per_rank: int, rank: int = 0, world: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.start_step = n, seed, start_step
        self.per_rank, self.rank, self.world = per_rank, rank, world
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
                yield self._index(base + j)
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
    sampler = EndlessSampler(len(dataset), seed, start_step, per_rank, rank, world)  # type: ignore[arg-type]
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


# ----------------------------------------------------------------------------- one step


def train_one_step(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp: bool = False,
    max_grad_norm: Optional[float] = None,
    dist_info: DistInfo = DistInfo(),
    step: int = 0,
) -> dict[str, float]:
    """Forward, loss sum, backward, optimiser step. Images/targets must already be on device.

    Returns the loss components and ``loss`` as floats. Raises :class:`NonFiniteLossError`
    (on every DDP rank) when the loss is NaN or infinite.
    """
    device_type = images[0].device.type if images else "cpu"
    with torch.autocast(device_type, enabled=amp):
        loss_dict = model(images, targets)
    loss = sum(loss_dict.values())
    if not _all_finite(loss, dist_info):
        parts = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
        raise NonFiniteLossError(
            f"non-finite training loss at step {step + 1} ({parts}); stopping. Lower the learning rate, "
            "disable AMP, or check the data for degenerate boxes; resume from the last checkpoint."
        )
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if max_grad_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    out = {k: float(v.detach()) for k, v in loss_dict.items()}
    out["loss"] = float(loss.detach())
    return out


def _to_device(batch: Batch, device: torch.device) -> Batch:
    images, targets = batch
    nb = device.type == "cuda"
    # uint8 images (e.g. SynthStream(uint8_images=True)) are scaled to [0, 1] on the device
    images = [im.to(device, non_blocking=nb) for im in images]
    images = [im.float().div_(255) if im.dtype == torch.uint8 else im for im in images]
    targets = [{k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (paper: lr 1e-4, betas 0.9/0.999) over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


# ----------------------------------------------------------------------------- the loop


ValFn = Callable[[nn.Module], float]


def run_training(
    model: nn.Module,
    batches: Callable[[int, DistInfo], Iterator[Batch]],
    cfg: TrainConfig,
    out_dir: str | Path,
    val_fn: Optional[ValFn] = None,
    resume: bool = True,
    stage: str = "train",
    extra_config: Optional[dict[str, Any]] = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.iterations`` steps on ``batches(start_step, dist_info)``.

    Writes into ``out_dir``: ``config.yaml`` (resolved), ``last.pt`` (every
    ``checkpoint_every`` steps, at validation steps and at the end), and with ``val_fn``:
    ``best.pt``, ``curve.csv``, ``curve.json``, ``curve.png``; ``losses.csv``. With
    ``val_fn`` the best checkpoint is loaded into ``model`` at the end. ``resume``: continue
    from ``out_dir/last.pt`` when present (identical result to an uninterrupted run).
    """
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    info = setup_distributed(device)
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    amp = bool(cfg.amp and device.type == "cuda")
    net = model.to(device)
    optimizer = make_optimizer(net, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    resolved = {"stage": stage, "train": to_dict(cfg), "device": str(device), "world_size": info.world,
                "amp": amp, "detector": getattr(model, "synthdet_meta", None), **(extra_config or {})}

    step, best_ap, best_step = 0, None, None
    curve: list[dict[str, Any]] = []
    losses: list[dict[str, float]] = []
    window: list[dict[str, float]] = []  # losses since the last logged step
    resume_rng: Optional[dict[str, Any]] = None
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        step, best_ap, best_step = int(ck["step"]), ck.get("best_ap"), ck.get("best_step")
        curve, losses = list(ck.get("curve", [])), list(ck.get("losses", []))
        window = list(ck.get("loss_window", []))
        resume_rng = ck["rng"]  # restored once the batch iterator exists (creating it draws a seed)
        old = ck.get("config", {}).get("train", {})
        changed = sorted(k for k in old if k != "iterations" and old.get(k) != resolved["train"].get(k))
        if changed:
            logger.warning("resuming %s with changed settings: %s", last_path, ", ".join(changed))
        logger.info("resumed %s at step %d/%d", last_path, step, cfg.iterations)
    elif info.main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("last.pt", "best.pt", "curve.json", "curve.csv", "curve.png", "losses.csv"):
            (out / stale).unlink(missing_ok=True)  # a fresh start must not inherit an old run's best
    if resume_rng is None:  # fresh start: the run's own randomness (dropout, ...) follows cfg.seed
        torch.manual_seed(cfg.seed + info.rank)
    if info.main:
        dump_yaml(resolved, out / "config.yaml")

    train_net: nn.Module = net
    if info.world > 1:
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    def state() -> dict[str, Any]:
        return {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "step": step, "rng": rng_state(), "config": resolved, "best_ap": best_ap, "best_step": best_step,
                "curve": curve, "losses": losses, "loss_window": window}

    def validate() -> None:
        nonlocal best_ap, best_step
        assert val_fn is not None
        if info.main:
            t = time.perf_counter()
            ap = float(val_fn(net))
            net.train()
            entry = {"step": step, "ap50": ap, "seconds": round(time.perf_counter() - t, 3)}
            if losses:
                entry["loss"] = losses[-1]["loss"]
            curve.append(entry)
            improved = best_ap is None or (not math.isnan(ap) and (math.isnan(best_ap) or ap > best_ap))
            if improved:
                best_ap, best_step = ap, step
                save_checkpoint(best_path, {"model": net.state_dict(), "step": step, "config": resolved,
                                            "best_ap": ap, "best_step": step})
            logger.info("%s step %d: val AP50 %.4f (best %.4f at step %s)", stage, step, ap, best_ap, best_step)
            _write_curve(out, curve, stage)
        _barrier(info)

    t0 = time.perf_counter()
    net.train()
    if val_fn is not None and cfg.val_at_start and step == 0 and not curve:
        validate()
    pbar = None
    if cfg.progress and info.main and step < cfg.iterations:
        from tqdm import tqdm

        pbar = tqdm(total=cfg.iterations, initial=step, desc=stage, unit="it", leave=False)
    try:
        it = batches(step, info) if step < cfg.iterations else iter(())
        if resume_rng is not None:
            set_rng_state(resume_rng)
        while step < cfg.iterations:
            images, targets = _to_device(next(it), device)
            parts = train_one_step(train_net, images, targets, optimizer, scaler, amp, cfg.max_grad_norm, info, step)
            step += 1
            window.append(parts)
            if step % cfg.log_every == 0 or step == cfg.iterations:
                mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                losses.append({"step": step, **mean})
                window = []
                if pbar is not None:
                    pbar.set_postfix(loss=f"{mean['loss']:.3f}")
                logger.debug("%s step %d: %s", stage, step, mean)
            if pbar is not None:
                pbar.update(1)
            validated = val_fn is not None and (step % cfg.val_every == 0 or step == cfg.iterations)
            if validated:
                validate()
            if info.main and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or validated
                              or step == cfg.iterations):
                save_checkpoint(last_path, state())
    finally:
        if pbar is not None:
            pbar.close()
    seconds = time.perf_counter() - t0
    if info.main:
        if not last_path.is_file():
            save_checkpoint(last_path, state())
        _write_losses(out, losses)
    _barrier(info)
    result_path = last_path
    if val_fn is not None and best_path.is_file():
        net.load_state_dict(load_checkpoint(best_path)["model"])
        result_path = best_path
    return TrainResult(best_ap=best_ap, best_step=best_step, curve=curve, checkpoint=result_path, steps=step,
                       seconds=seconds, last_checkpoint=last_path, losses=losses)


def _write_curve(out: Path, curve: list[dict[str, Any]], stage: str) -> None:
    atomic_write_json(out / "curve.json", curve)
    keys = ["step", "ap50", "loss", "seconds"]
    lines = [",".join(keys)] + [",".join("" if c.get(k) is None else str(c.get(k)) for k in keys) for c in curve]
    atomic_write_text(out / "curve.csv", "\n".join(lines) + "\n")
    try:
        plot_curve(curve, out / "curve.png", title=f"{stage}: validation AP@0.5")
    except Exception as e:  # noqa: BLE001 - a plot must never kill a training run
        logger.warning("could not plot the validation curve: %s", e)


def _write_losses(out: Path, losses: list[dict[str, float]]) -> None:
    if not losses:
        return
    keys = list(losses[0])
    lines = [",".join(keys)] + [",".join(f"{r.get(k, '')}" for k in keys) for r in losses]
    atomic_write_text(out / "losses.csv", "\n".join(lines) + "\n")


def plot_curve(curve: list[dict[str, Any]], path: str | Path, title: str = "validation AP@0.5") -> None:
    """Plot validation AP@0.5 against the training step (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.files import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    steps = [c["step"] for c in curve]
    aps = [c["ap50"] * 100 for c in curve]
    ax.plot(steps, aps, marker="o", ms=3)
    if aps:
        best = int(np.nanargmax(aps)) if not all(math.isnan(a) for a in aps) else 0
        ax.plot([steps[best]], [aps[best]], "r*", ms=10, label=f"best {aps[best]:.1f} @ {steps[best]}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP@0.5 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
