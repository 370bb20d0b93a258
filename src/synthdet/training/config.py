"""Training settings: one frozen dataclass, defaults = the paper's protocol (section IV-B)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    log_every: int = 10
    # Detector input side, used where the model is built from this config (CLI, experiments).
    image_size: int = 300
    eval_batch_size: int = 8
    max_grad_norm: Optional[float] = None
    progress: bool = True

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
