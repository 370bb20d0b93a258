"""Training settings: one frozen dataclass, defaults = the paper's protocol (section IV-B), and
named recipes that fill it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

# Named recipes: settings applied under the user's own. ``paper``: the paper's Adam 1e-4, constant.
# ``short``: for budgets of a few hundred iterations (chosen by measurement, docs/detectors.md):
# AdamW, linear warmup then cosine decay, an EMA of the weights (validated and checkpointed),
# gradient clipping, validation of the starting weights, augmentation of real images.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "short": {
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_iters": 50,
        "min_lr_ratio": 0.05, "ema_decay": 0.99, "max_grad_norm": 10.0, "val_at_start": True, "augment": True,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (pretrain, finetune or mixed).

    ``batch_size`` is the *global* batch: under DDP each of the ``W`` processes takes
    ``batch_size / W`` samples, so a run sees the same samples for any process count.
    ``amp`` applies on CUDA only. ``val_every``: validation AP@0.5 period in iterations
    (finetune / mixed with a validation set); ``checkpoint_every``: period of ``last.pt``
    (0 = only at validation steps and the end).
    """

    iterations: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    val_every: int = 25
    val_at_start: bool = False
    checkpoint_every: int = 25
    num_workers: int = 0
    # CPU: cut each batch into this many parts trained in parallel threads, one intra-op thread
    # each (synthdet.training.shards; same gradient up to rounding). 0 = one per core, 1 = off
    cpu_shards: int = 0
    # backbone blocks kept fixed during this run (fcos_efficientnet_lite0: 0..16, the stem always);
    # None = as the model was built (its ``frozen_blocks``)
    frozen_blocks: Optional[int] = None
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    log_every: int = 10
    # Detector input side, used where the model is built from this config (CLI, experiments).
    image_size: int = 300
    eval_batch_size: int = 8
    max_grad_norm: Optional[float] = None
    progress: bool = True
    # which named recipe filled the fields below (see RECIPES); informational once built
    recipe: str = "paper"
    optimizer: str = "adam"  # adam | adamw
    schedule: str = "constant"  # constant | cosine (after the warmup)
    warmup_iters: int = 0  # linear warmup from lr * warmup_start
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    ema_decay: float = 0.0  # 0: no EMA; else the EMA weights are validated, checkpointed and returned
    augment: bool = False  # real-image augmentation (finetune / mixed): crop/zoom, flip, colour
    mosaic_p: float = 0.0  # with augment: probability of a 2 x 2 mosaic
    tensorboard: bool = True  # log losses, lr, validation AP and sample images to <run>/tensorboard
    # finetune: at least this many passes over the N real images, i.e. the run lasts
    # max(iterations, ceil(min_epochs * N / batch_size)) iterations (0 = exactly ``iterations``)
    min_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        if self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {self.val_every}")
        if self.checkpoint_every < 0 or self.log_every < 1:
            raise ValueError("checkpoint_every must be >= 0 and log_every >= 1")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.cpu_shards < 0:
            raise ValueError(f"cpu_shards must be >= 0 (0: one per core, 1: off), got {self.cpu_shards}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {sorted(RECIPES)}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.warmup_iters < 0 or not 0 < self.warmup_start <= 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup_iters must be >= 0, warmup_start in (0, 1], min_lr_ratio in [0, 1]")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.mosaic_p <= 1:
            raise ValueError("ema_decay must be in [0, 1) and mosaic_p in [0, 1]")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {self.min_epochs}")

    def for_dataset(self, num_images: int) -> "TrainConfig":
        """This config with ``iterations`` raised to ``ceil(min_epochs * num_images / batch_size)``
        when that is more (the finetuning budget grows with the number of real images)."""
        need = math.ceil(self.min_epochs * num_images / self.batch_size - 1e-9)
        return self if need <= self.iterations else replace(self, iterations=need)


def train_config(data: Mapping[str, Any] | None = None, where: str = "train", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping (YAML) and keyword overrides: ``recipe`` (default
    ``paper``) supplies the defaults, every other given key wins over it."""
    from ..utils.config import from_dict

    raw = {**(data or {}), **overrides}
    recipe = raw.get("recipe", "paper")
    if recipe not in RECIPES:
        raise ValueError(f"{where}: unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    return from_dict(TrainConfig, {**RECIPES[recipe], **raw}, where=where)
