"""The paper's protocol (section III-B / IV-B): pretrain on the artificial stream, finetune on
N real images with validation AP every 25 iterations (best checkpoint kept), and the mixed
real + artificial ablation baseline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from .config import TrainConfig
from .engine import DistInfo, TrainResult, ValFn, batch_iterator, mixed_batch_iterator, run_training

logger = logging.getLogger(__name__)


def augmented(dataset: torch.utils.data.Dataset, cfg: TrainConfig,
              model: Optional[nn.Module] = None) -> torch.utils.data.Dataset:
    """``dataset`` with the real-image augmentation when ``cfg.augment`` (a
    :class:`DetectionDataset` without a transform of its own); anything else unchanged. A
    ``model`` that trains at a smaller size than it detects at (``transform.train_size``) gets
    crops of its training size at its inference scale (:class:`RealAugment` ``crop_size``)."""
    from ..datasets.records import DetectionDataset
    from ..datasets.transforms import RealAugment

    if not cfg.augment or not isinstance(dataset, DetectionDataset) or dataset.transform is not None:
        return dataset
    transform = getattr(model, "transform", None)
    crop = {}
    if getattr(transform, "train_size", None):
        crop = {"crop_size": int(transform.train_size), "image_size": int(transform.max_size)}
    return DetectionDataset(dataset.records, resize=dataset.resize,
                            transform=RealAugment(mosaic_p=cfg.mosaic_p, **crop), seed=cfg.seed,
                            skip_unreadable=dataset.skip_unreadable)


def _val_fn(
    val_dataset: torch.utils.data.Dataset, cfg: TrainConfig, class_names: Mapping[int, str] | Sequence[str] | None
) -> ValFn:
    from ..evaluation import evaluate_detector

    def fn(model: nn.Module) -> float:
        dev = next(model.parameters()).device
        res = evaluate_detector(model, val_dataset, device=dev, batch_size=cfg.eval_batch_size,
                                class_names=class_names, num_workers=cfg.num_workers)
        return float(res["ap50"])

    return fn


def _names_entry(class_names: Mapping[int, str] | Sequence[str] | None) -> dict[str, Any]:
    """``{"class_names": {label: name}}`` for the run's config (checkpoints carry it, so ``synthdet
    predict`` can name its boxes); empty without names."""
    if not class_names:
        return {}
    items = class_names.items() if isinstance(class_names, Mapping) else enumerate(class_names, 1)
    return {"class_names": {int(k): str(v) for k, v in items}}


def pretrain(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    trust_checkpoint: bool = False,
) -> TrainResult:
    """Train ``model`` for ``cfg.iterations`` on ``dataset`` (usually the endless ``SynthStream``;
    any detection dataset works). Result checkpoint: ``out_dir/last.pt`` (final weights)."""
    def batches(start: int, info: DistInfo):
        return batch_iterator(dataset, cfg.batch_size, start, cfg.seed, cfg.num_workers, info)

    return run_training(model, batches, cfg, out_dir, val_fn=None, resume=resume, stage="pretrain",
                        trust_checkpoint=trust_checkpoint)


def finetune(
    model: nn.Module,
    train_dataset: torch.utils.data.Dataset,
    val_dataset: Optional[torch.utils.data.Dataset],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    val_fn: Optional[ValFn] = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    trust_checkpoint: bool = False,
) -> TrainResult:
    """Finetune on real images: validation AP@0.5 on ``val_dataset`` every ``cfg.val_every``
    iterations (and at the end); the best checkpoint (``best.pt``) is loaded into ``model``
    and is the result; the curve goes to ``curve.csv`` / ``curve.json`` / ``curve.png``.
    The run lasts ``cfg.for_dataset(len(train_dataset)).iterations`` (``cfg.min_epochs``).

    ``val_fn(model) -> float`` replaces the AP evaluation (e.g. another metric). With neither a
    validation set nor ``val_fn`` the final weights are the result.
    """
    if val_fn is None and val_dataset is not None:
        val_fn = _val_fn(val_dataset, cfg, class_names)
    cfg = cfg.for_dataset(len(train_dataset))
    train_dataset = augmented(train_dataset, cfg, model)

    def batches(start: int, info: DistInfo):
        return batch_iterator(train_dataset, cfg.batch_size, start, cfg.seed, cfg.num_workers, info)

    return run_training(model, batches, cfg, out_dir, val_fn=val_fn, resume=resume, stage="finetune",
                        extra_config=_names_entry(class_names), trust_checkpoint=trust_checkpoint)


def mixed(
    model: nn.Module,
    real_dataset: torch.utils.data.Dataset,
    synth_dataset: torch.utils.data.Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    real_fraction: float = 0.5,
    val_dataset: Optional[torch.utils.data.Dataset] = None,
    resume: bool = True,
    val_fn: Optional[ValFn] = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    trust_checkpoint: bool = False,
) -> TrainResult:
    """One run on real + artificial data (the ablation baseline): every batch holds exactly
    ``round(batch_size * real_fraction)`` real samples and the rest from ``synth_dataset``
    (a fixed ``SynthPool`` or the endless stream). Validation as in :func:`finetune` when a
    validation set or ``val_fn`` is given."""
    if val_fn is None and val_dataset is not None:
        val_fn = _val_fn(val_dataset, cfg, class_names)
    extra: dict[str, Any] = {"real_fraction": real_fraction,
                             "real_per_batch": int(round(cfg.batch_size * real_fraction)), **_names_entry(class_names)}

    real_dataset = augmented(real_dataset, cfg, model)

    def batches(start: int, info: DistInfo):
        return mixed_batch_iterator(real_dataset, synth_dataset, cfg.batch_size, real_fraction, start, cfg.seed,
                                    cfg.num_workers, info)

    return run_training(model, batches, cfg, out_dir, val_fn=val_fn, resume=resume, stage="mixed",
                        extra_config=extra, trust_checkpoint=trust_checkpoint)
