"""training stage: the pretrain / finetune / mixed protocol over a plain train loop, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .engine import (
    EndlessSampler,
    NonFiniteLossError,
    TrainResult,
    batch_iterator,
    mixed_batch_iterator,
    run_training,
    train_one_step,
)
from .protocol import finetune, mixed, pretrain

__all__ = [
    "EndlessSampler",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "batch_iterator",
    "finetune",
    "load_checkpoint",
    "mixed",
    "mixed_batch_iterator",
    "pretrain",
    "run_training",
    "save_checkpoint",
    "train_one_step",
]
