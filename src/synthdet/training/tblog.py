"""TensorBoard logging of a training run (``<run>/tensorboard/``, ``tensorboard --logdir <run>``).

Per step: every loss component (``loss/<name>``) and the learning rate (``lr``); at each
validation: ``val/ap50`` and one image of a few training samples of the current batch with the
model's predictions (red, score >= 0.3) over their target boxes (green). Scalars cost microseconds
and images one forward pass of 4 images per validation, so the overhead is negligible.

Needs the ``tensorboard`` package (a synthdet dependency); without it logging is off, with one
warning. ``TrainConfig.tensorboard = False`` (CLI ``--no-tensorboard``) turns it off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

SAMPLE_IMAGES = 4
SCORE_TO_DRAW = 0.3


class TBLogger:
    """A ``SummaryWriter`` into ``folder`` (None when off: every method is then a no-op).

    ``purge_step``: on resume, events at or after this step from the killed run are discarded.
    """

    def __init__(self, folder: Path, enabled: bool = True, purge_step: Optional[int] = None) -> None:
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError when the tensorboard package is missing
            logger.warning("TensorBoard logging is off: the tensorboard package is not installed "
                           "(pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """``values`` as scalars ``<prefix><key>`` at ``step``."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def samples(self, step: int, model: nn.Module, images: Sequence[torch.Tensor],
                targets: Sequence[dict[str, torch.Tensor]]) -> None:
        """One grid image ``samples``: the first images of a batch (float [3, H, W] in [0, 1] or
        uint8), the model's predictions (eval mode, restored after) over the targets. A failure
        (e.g. a model outside the detector contract) is a warning: logging never stops a run."""
        if self.writer is None or not images:
            return
        try:
            self.writer.add_image("samples", _sample_grid(model, images, targets), step, dataformats="HWC")
        except Exception as e:  # noqa: BLE001 - a picture must never kill a training run
            logger.warning("TensorBoard: no sample image at step %d (%s: %s)", step, type(e).__name__, e)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _sample_grid(model: nn.Module, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]
                 ) -> np.ndarray:
    """uint8 RGB grid of the first :data:`SAMPLE_IMAGES` images: targets green, predictions red."""
    from ..utils.viz import draw_boxes, make_grid

    images, targets = list(images[:SAMPLE_IMAGES]), list(targets[:SAMPLE_IMAGES])
    floats = [im.float().div(255) if im.dtype == torch.uint8 else im.float() for im in images]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            preds = model(floats)
    finally:
        model.train(was_training)
    tiles = []
    for im, t, p in zip(floats, targets, preds):
        rgb = (im.detach().clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
        rgb = draw_boxes(rgb, t["boxes"].cpu().numpy(), labels=np.full(len(t["boxes"]), 1))
        keep = p["scores"] >= SCORE_TO_DRAW
        tiles.append(draw_boxes(rgb, p["boxes"][keep].cpu().numpy(), labels=np.zeros(int(keep.sum()), int),
                                scores=p["scores"][keep].cpu().numpy()))
    return make_grid(tiles, ncols=len(tiles))


def remove_old_events(folder: Path) -> None:
    """Delete TensorBoard event files of an earlier run in ``folder`` (only ``events.out.tfevents.*``)."""
    if folder.is_dir():
        for f in folder.glob("events.out.tfevents.*"):
            f.unlink(missing_ok=True)
