"""training stage: the pretrain / finetune / mixed protocol over a plain train loop, checkpoints.

Exports are lazy (PEP 562) so that ``synthdet --help`` does not import torch.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports
from .config import TrainConfig

_EXPORTS = {
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "EndlessSampler": ".engine",
    "NonFiniteLossError": ".engine",
    "TrainResult": ".engine",
    "batch_iterator": ".engine",
    "mixed_batch_iterator": ".engine",
    "run_training": ".engine",
    "train_one_step": ".engine",
    "finetune": ".protocol",
    "mixed": ".protocol",
    "pretrain": ".protocol",
}

__all__ = sorted([*_EXPORTS, "TrainConfig"])


__getattr__ = lazy_exports(__name__, _EXPORTS)
