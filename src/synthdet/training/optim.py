"""Optimiser, learning-rate schedule and weight EMA of a training run (see :class:`TrainConfig`)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper: lr 1e-4, betas 0.9 / 0.999) or AdamW over the trainable parameters.

    AdamW decays only weights of rank >= 2 (convolutions, linear layers): norms and biases are
    left alone, as in torchvision's references (``norm_weight_decay=0``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for optimiser step ``step`` (0-based).

    Warmup: linear from ``warmup_start`` at step 0 to 1 at step ``warmup_iters``. Then
    ``constant`` (1) or ``cosine``: ``m + (1 - m) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup_iters) / (iterations - warmup_iters)`` and ``m = min_lr_ratio``.
    """
    w = cfg.warmup_iters
    if step < w:
        return cfg.warmup_start + (1 - cfg.warmup_start) * step / w
    if cfg.schedule == "constant":
        return 1.0
    t = min(1.0, (step - w) / max(1, cfg.iterations - w))
    m = cfg.min_lr_ratio
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * t))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor`; step it once after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    After optimiser step ``t`` (1-based): ``ema = d * ema + (1 - d) * weights`` with
    ``d = min(decay, (1 + t) / (10 + t))``, so the average is not dominated by the
    initial weights in short runs; integer buffers are copied. ``module`` is the averaged model
    (eval mode, no gradients).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
