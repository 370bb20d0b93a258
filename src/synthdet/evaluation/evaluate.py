"""Run a detector over a dataset and score it with AP@0.5; a small PR-curve plot."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from collections import deque
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..utils.device import resolve_device
from ..utils.threads import cpu_pool, cpu_workers
from .ap import average_precision

logger = logging.getLogger(__name__)


def _name_of(label: int, class_names: Mapping[int, str] | Sequence[str] | None) -> int | str:
    if class_names is None:
        return label
    if isinstance(class_names, Mapping):
        return class_names.get(label, label)
    return class_names[label - 1] if 0 < label <= len(class_names) else label


@torch.inference_mode()
def predict(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Predictions and ground truth per image, as numpy dicts.

    ``dataset`` yields ``(FloatTensor[3, H, W] in [0, 1], {"boxes", "labels", optional
    "difficult"})``. Returns ``(predictions, targets)``: predictions ``{"boxes" [D, 4] XYXY
    pixels of the dataset image, "scores" [D], "labels" [D]}``, targets ``{"boxes", "labels",
    "difficult"}``.
    """
    from ..datasets.records import collate_detection

    dev = resolve_device(device) if isinstance(device, str) else device
    net = model.module if hasattr(model, "module") else model
    was_training = net.training
    net.eval()
    net.to(dev)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_detection)
    preds: list[dict[str, np.ndarray]] = []
    gts: list[dict[str, np.ndarray]] = []
    it: Any = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", unit="batch", leave=False)
    try:
        for out, targets in _forward_batches(net, it, dev):
            for o, t in zip(out, targets):
                preds.append({k: o[k].float().cpu().numpy() if k != "labels" else o[k].cpu().numpy()
                              for k in ("boxes", "scores", "labels")})
                n = len(t["labels"])
                diff = t.get("difficult")
                gts.append({
                    "boxes": t["boxes"].cpu().numpy().reshape(-1, 4),
                    "labels": t["labels"].cpu().numpy().reshape(-1),
                    "difficult": (np.zeros(n, bool) if diff is None else np.asarray(diff, bool).reshape(-1)),
                })
    finally:
        net.train(was_training)
    return preds, gts


def _forward_batches(net: nn.Module, batches: Iterable[Any], dev: torch.device) -> Iterator[tuple[list, Any]]:
    """``(outputs, targets)`` per batch, in order. On a CPU with several cores the batches run
    side by side in threads with one intra-op thread each (:mod:`synthdet.utils.threads`: 1.2x
    faster on 2 cores for the demo's 320 px validation), at most two per thread in flight."""
    workers, threads = cpu_workers(1 << 30) if dev.type == "cpu" else (1, 1)

    def run(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        with torch.inference_mode(), torch.autocast(dev.type, enabled=dev.type == "cuda"):
            return net([im.to(dev, non_blocking=True) for im in images])

    if workers < 2:
        for images, targets in batches:
            yield run(images), targets
        return
    with cpu_pool(workers, threads, name="synthdet-eval") as pool:
        pending: deque = deque()
        for images, targets in batches:
            pending.append((pool.submit(run, images), targets))
            if len(pending) >= 2 * workers:
                job, t = pending.popleft()
                yield job.result(), t
        while pending:
            job, t = pending.popleft()
            yield job.result(), t


def evaluate_detector(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """AP@0.5 (VOC all-point) of ``model`` on ``dataset``.

    Returns ``{"ap50": mean over classes with ground truth (in [0, 1], nan if none),
    "per_class": {name_or_id: ap}, "num_images": int, "predictions": list of per-image
    numpy dicts {"boxes", "scores", "labels"}, "curves": {name_or_id: {"recall",
    "precision", "scores"}}}``. ``class_names``: ``{label: name}`` or a list for labels 1..K.
    """
    preds, gts = predict(model, dataset, device=device, batch_size=batch_size, num_workers=num_workers,
                         progress=progress)
    res = average_precision(
        [p["boxes"] for p in preds], [p["scores"] for p in preds], [p["labels"] for p in preds],
        [g["boxes"] for g in gts], [g["labels"] for g in gts], iou=0.5, difficult=[g["difficult"] for g in gts],
    )
    per_class = {_name_of(c, class_names): ap for c, ap in res["per_class"].items()}
    curves = {_name_of(c, class_names): cv for c, cv in res["curves"].items()}
    return {"ap50": res["mean"], "per_class": per_class, "num_images": len(gts), "predictions": preds,
            "curves": curves, "num_gt": {_name_of(c, class_names): n for c, n in res["num_gt"].items()}}


def plot_pr_curves(result: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Save the precision-recall curves of an :func:`evaluate_detector` result as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.files import atomic_path

    path = Path(path)
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    for name, cv in result.get("curves", {}).items():
        ap = result["per_class"].get(name, float("nan"))
        rec, prec = np.asarray(cv["recall"]), np.asarray(cv["precision"])
        env = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        ax.step(np.concatenate([[0], rec]), np.concatenate([[env[0] if len(env) else 0], env]), where="pre",
                label=f"{name}: AP50 {ap * 100:.1f}" if not math.isnan(ap) else str(name))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"AP@0.5 = {result.get('ap50', float('nan')) * 100:.1f}")
    ax.grid(alpha=0.3)
    if result.get("curves"):
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path.with_suffix(".png")
