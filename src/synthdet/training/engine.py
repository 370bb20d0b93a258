"""The plain training loop: batches in, one optimiser step each, periodic validation and
checkpoints, exact resumption, non-finite-loss guard, AMP on CUDA and DDP under ``torchrun``.

Three parts, each on one screen: :func:`train_one_step` (forward, loss, backward, step),
:class:`_Run` (the state of one run: model, optimiser, schedule, EMA, curve; resuming from and
writing checkpoints; validation) and :func:`run_training` (the loop). Batches come from
:mod:`synthdet.training.batches`, in an order that is a pure function of (seed, step).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..utils.config import dump_yaml, to_dict
from ..utils.device import resolve_device
from ..utils.files import atomic_write_json, atomic_write_text
from .batches import (  # noqa: F401  (re-exported: the loop's public names live here)
    Batch,
    DistInfo,
    EndlessSampler,
    _all_finite,
    _barrier,
    batch_iterator,
    mixed_batch_iterator,
    setup_distributed,
)
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .optim import ModelEMA, make_optimizer, make_scheduler
from ..utils.threads import cpu_workers
from .shards import ShardedStep, shardable
from .tblog import SAMPLE_IMAGES, TBLogger, remove_old_events

logger = logging.getLogger(__name__)


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
    shards: Optional[ShardedStep] = None,
) -> dict[str, float]:
    """Forward, loss sum, backward, optimiser step. Images/targets must already be on device.

    ``shards``: run forward and backward as parts of the batch in parallel threads (CPU,
    :mod:`synthdet.training.shards`; the same gradient up to rounding). Returns the loss
    components and ``loss`` as floats. Raises :class:`NonFiniteLossError` (on every DDP rank)
    when the loss is NaN or infinite.
    """
    device_type = images[0].device.type if images else "cpu"
    backward = None
    if shards is not None:
        loss_dict, backward = shards.forward(images, targets)
    else:
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
    if backward is not None:  # sharded: the scaler is off (CPU)
        backward()
        if max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    elif scaler is not None and scaler.is_enabled():
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


# ----------------------------------------------------------------------------- one run's state


ValFn = Callable[[nn.Module], float]
_OUTPUTS = ("last.pt", "best.pt", "curve.json", "curve.csv", "curve.png", "losses.csv")


class _Run:
    """Everything one training run carries from step to step, and its checkpoints.

    ``net`` is trained; ``eval_model`` (the EMA when ``cfg.ema_decay > 0``, else ``net``) is the
    model that is validated, saved as ``model`` in checkpoints and returned.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, out: Path, val_fn: Optional[ValFn], stage: str,
                 extra_config: Optional[dict[str, Any]]) -> None:
        self.cfg, self.out, self.val_fn, self.stage = cfg, out, val_fn, stage
        device = resolve_device(cfg.device)
        self.info = setup_distributed(device)
        if device.type == "cuda" and self.info.world > 1:
            device = torch.device("cuda", self.info.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.amp = bool(cfg.amp and device.type == "cuda")
        self.net = model.to(device)
        if cfg.frozen_blocks is not None:
            _freeze_blocks(self.net, cfg.frozen_blocks)
        self.optimizer = make_optimizer(self.net, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.ema = ModelEMA(self.net, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.shards = _make_shards(self.net, cfg, device, self.info)
        self.meta = getattr(model, "synthdet_meta", None)
        self.resolved = {"stage": stage, "train": to_dict(cfg), "device": str(device), "world_size": self.info.world,
                         "amp": self.amp, "cpu_shards": self.shards.shards if self.shards else 1,
                         "detector": self.meta, **(extra_config or {})}
        self.step, self.best_ap, self.best_step = 0, None, None
        self.curve: list[dict[str, Any]] = []
        self.losses: list[dict[str, float]] = []
        self.window: list[dict[str, float]] = []  # losses since the last logged step
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        self.tb = TBLogger(out / "tensorboard", enabled=False)  # opened by open_tensorboard()
        self.last_batch: Optional[Batch] = None  # the first samples of the current batch, for TensorBoard

    def open_tensorboard(self, resumed: bool) -> None:
        """Start TensorBoard logging (main process, ``cfg.tensorboard``); a resumed run drops the
        killed run's events from its step on."""
        self.tb = TBLogger(self.out / "tensorboard", enabled=self.cfg.tensorboard and self.info.main,
                           purge_step=self.step if resumed else None)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def state(self) -> dict[str, Any]:
        s = {"model": self.eval_model.state_dict(), "detector": self.meta, "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
             "rng": rng_state(), "config": self.resolved, "best_ap": self.best_ap, "best_step": self.best_step,
             "curve": self.curve, "losses": self.losses, "loss_window": self.window}
        if self.ema is not None:
            s["train_model"], s["ema_updates"] = self.net.state_dict(), self.ema.updates
        return s

    def resume(self, trust: bool = False) -> dict[str, Any]:
        """Load ``last.pt``; returns its RNG state (restored once the batch iterator exists)."""
        ck = load_checkpoint(self.last_path, trust)
        self.net.load_state_dict(ck.get("train_model", ck["model"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(ck["model"])
            self.ema.updates = int(ck.get("ema_updates", ck["step"]))
        self.optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scheduler"):
            self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step, self.best_ap, self.best_step = int(ck["step"]), ck.get("best_ap"), ck.get("best_step")
        self.curve, self.losses = list(ck.get("curve", [])), list(ck.get("losses", []))
        self.window = list(ck.get("loss_window", []))
        old = ck.get("config", {}).get("train", {})
        changed = sorted(k for k in old if k != "iterations" and old.get(k) != self.resolved["train"].get(k))
        if changed:
            logger.warning("resuming %s with changed settings: %s", self.last_path, ", ".join(changed))
        logger.info("resumed %s at step %d/%d", self.last_path, self.step, self.cfg.iterations)
        return ck["rng"]

    def fresh_start(self) -> None:
        """A fresh start must not inherit an old run's best: synthdet's own outputs of an earlier run
        are removed, and only in a folder synthdet wrote (else a one-line refusal)."""
        if self.info.main:
            from ..utils.outdir import check_ours, write_marker

            check_ours(self.out, legacy=("config.yaml",), hint="choose another --out")
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in _OUTPUTS:
                (self.out / stale).unlink(missing_ok=True)
            remove_old_events(self.out / "tensorboard")
            write_marker(self.out, self.stage)
        torch.manual_seed(self.cfg.seed + self.info.rank)  # the run's own randomness follows cfg.seed

    def validate(self) -> None:
        """Validation AP of ``eval_model``; a new best is written to ``best.pt``."""
        assert self.val_fn is not None
        if self.info.main:
            t = time.perf_counter()
            ap = float(self.val_fn(self.eval_model))
            self.net.train()
            entry = {"step": self.step, "ap50": ap, "seconds": round(time.perf_counter() - t, 3)}
            if self.losses:
                entry["loss"] = self.losses[-1]["loss"]
            self.curve.append(entry)
            self.tb.scalars(self.step, {"ap50": ap}, "val/")
            if self.last_batch is not None:
                self.tb.samples(self.step, self.eval_model, *self.last_batch)
            best = self.best_ap
            if best is None or (not math.isnan(ap) and (math.isnan(best) or ap > best)):
                self.best_ap, self.best_step = ap, self.step
                save_checkpoint(self.best_path, {"model": self.eval_model.state_dict(), "detector": self.meta,
                                                 "step": self.step, "config": self.resolved, "best_ap": ap,
                                                 "best_step": self.step})
            logger.info("%s step %d: val AP50 %.4f (best %.4f at step %s)", self.stage, self.step, ap,
                        self.best_ap, self.best_step)
            _write_curve(self.out, self.curve, self.stage)
        _barrier(self.info)

    def record(self, parts: dict[str, float]) -> Optional[dict[str, float]]:
        """Add one step's losses; every ``log_every`` steps returns their mean (also kept)."""
        self.window.append(parts)
        self.tb.scalars(self.step, {("total" if k == "loss" else k): v for k, v in parts.items()}, "loss/")
        self.tb.scalars(self.step, {"lr": self.optimizer.param_groups[0]["lr"]})
        if self.step % self.cfg.log_every and self.step != self.cfg.iterations:
            return None
        mean = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
        mean["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self.losses.append({"step": self.step, **mean})
        self.window = []
        return mean


def _freeze_blocks(net: nn.Module, n: int) -> None:
    """``cfg.frozen_blocks``: keep the first ``n`` backbone blocks fixed in this run."""
    backbone = getattr(net, "backbone", None)
    if not hasattr(backbone, "freeze_blocks"):
        raise ValueError(f"frozen_blocks is a setting of fcos_efficientnet_lite0's backbone; "
                         f"{type(net).__name__} has no such blocks")
    backbone.freeze_blocks(n)


def _make_shards(net: nn.Module, cfg: TrainConfig, device: torch.device, info: DistInfo) -> Optional[ShardedStep]:
    """The CPU step's shards (``cfg.cpu_shards``: 0 = one per core, 1 = off); None on CUDA,
    under DDP (each process is a shard already) and for models with batch statistics."""
    if device.type != "cpu" or info.world > 1 or cfg.cpu_shards == 1 or not shardable(net):
        return None
    if cfg.cpu_shards == 0:
        shards, threads = cpu_workers(cfg.batch_size)
    else:
        shards, threads = cfg.cpu_shards, max(1, torch.get_num_threads() // cfg.cpu_shards)
    return ShardedStep(net, shards, threads) if shards > 1 else None


# ----------------------------------------------------------------------------- the loop


def run_training(
    model: nn.Module,
    batches: Callable[[int, DistInfo], Iterator[Batch]],
    cfg: TrainConfig,
    out_dir: str | Path,
    val_fn: Optional[ValFn] = None,
    resume: bool = True,
    stage: str = "train",
    extra_config: Optional[dict[str, Any]] = None,
    trust_checkpoint: bool = False,
) -> TrainResult:
    """Train ``model`` for ``cfg.iterations`` steps on ``batches(start_step, dist_info)``.

    Writes into ``out_dir``: ``config.yaml`` (resolved), ``last.pt`` (every
    ``checkpoint_every`` steps, at validation steps and at the end), and with ``val_fn``:
    ``best.pt``, ``curve.csv``, ``curve.json``, ``curve.png``; ``losses.csv``; with ``cfg.tensorboard``
    (the default) ``tensorboard/`` (losses, lr, validation AP, sample images). At the end
    ``model`` holds the result: the best validated weights, else the final ones (the EMA's when
    ``cfg.ema_decay > 0``). ``resume``: continue from ``out_dir/last.pt`` when present (identical
    result to an uninterrupted run).
    """
    run = _Run(model, cfg, Path(out_dir), val_fn, stage, extra_config)
    resume_rng = run.resume(trust_checkpoint) if resume and run.last_path.is_file() else None
    if resume_rng is None:
        run.fresh_start()
    run.open_tensorboard(resumed=resume_rng is not None)
    if run.info.main:
        dump_yaml(run.resolved, run.out / "config.yaml")
    train_net: nn.Module = run.net
    if run.info.world > 1:
        train_net = nn.parallel.DistributedDataParallel(
            run.net, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    t0 = time.perf_counter()
    run.net.train()
    if val_fn is not None and cfg.val_at_start and run.step == 0 and not run.curve:
        run.validate()
    pbar = None
    if cfg.progress and run.info.main and run.step < cfg.iterations:
        from tqdm import tqdm

        pbar = tqdm(total=cfg.iterations, initial=run.step, desc=stage, unit="it", leave=False)
    try:
        it = batches(run.step, run.info) if run.step < cfg.iterations else iter(())
        if resume_rng is not None:
            set_rng_state(resume_rng)
        while run.step < cfg.iterations:
            images, targets = _to_device(next(it), run.device)
            if run.tb.writer is not None:  # keep only the few samples TensorBoard draws
                run.last_batch = (images[:SAMPLE_IMAGES], targets[:SAMPLE_IMAGES])
            parts = train_one_step(train_net, images, targets, run.optimizer, run.scaler, run.amp,
                                   cfg.max_grad_norm, run.info, run.step, run.shards)
            run.scheduler.step()
            if run.ema is not None:
                run.ema.update(run.net)
            run.step += 1
            mean = run.record(parts)
            if pbar is not None:
                if mean is not None:
                    pbar.set_postfix(loss=f"{mean['loss']:.3f}")
                pbar.update(1)
            validated = val_fn is not None and (run.step % cfg.val_every == 0 or run.step == cfg.iterations)
            if validated:
                run.validate()
            if run.info.main and ((cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0) or validated
                                  or run.step == cfg.iterations):
                save_checkpoint(run.last_path, run.state())
    finally:
        if pbar is not None:
            pbar.close()
        if run.shards is not None:
            run.shards.close()
        run.tb.close()
    return _finish(run, time.perf_counter() - t0)


def _finish(run: _Run, seconds: float) -> TrainResult:
    """Write what is left, put the result weights into the model, and describe the run."""
    if run.info.main:
        if not run.last_path.is_file():
            save_checkpoint(run.last_path, run.state())
        _write_losses(run.out, run.losses)
    _barrier(run.info)
    result_path = run.last_path
    if run.val_fn is not None and run.best_path.is_file():
        run.net.load_state_dict(load_checkpoint(run.best_path)["model"])
        result_path = run.best_path
    elif run.ema is not None:
        run.net.load_state_dict(run.ema.module.state_dict())
    return TrainResult(best_ap=run.best_ap, best_step=run.best_step, curve=run.curve, checkpoint=result_path,
                       steps=run.step, seconds=seconds, last_checkpoint=run.last_path, losses=run.losses)


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
