"""``synthdet demo``: the whole method on the built-in offline birds benchmark, on a CPU.

Steps: build (or reuse) the benchmark -> segment the classification images (GrabCut, cached)
-> pretrain the default FCOS detector on the synthesis stream -> finetune on N real images with and without
pretraining -> AP@0.5 on the test split -> a terminal table and a report folder
(``report.md`` with the table, the Figure-3-style plot, synthetic samples, segmentation IoU
and predictions on test images).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..utils.files import atomic_write_text
from ..utils.image import read_image, write_image
from ..utils.viz import draw_boxes, make_grid
from .config import DataSpec, ExperimentConfig, SegmenterSpec, StudySpec
from .report import aggregate, build_report, fmt_ap, labels_saved, results_tables
from .runner import ExperimentRunner, read_results

log = logging.getLogger(__name__)

DEMO_DETECTOR = "fcos_efficientnet_lite0"  # FCOS + FPN over the only ImageNet backbone obtainable offline


def demo_config(quick: bool = False, data_root: Optional[str] = None, device: str = "auto",
                repeats: int = 1) -> ExperimentConfig:
    """The demo's experiment: sizes chosen so it runs on 2 CPU cores (timings: README).

    Both variants train with the same ``short`` recipe (AdamW, warmup + cosine, EMA, real-image
    augmentation, validation of the starting weights) and the same finetuning budget; the
    pretrained one has had the synthetic pretraining before. ``repeats > 1``: the whole demo
    repeated with seeds 0..repeats-1 (repeat 0 is the demo's run).
    """
    # train on `size` px inputs, detect at `detect` px (the full demo: 192 px crops, 320 px detection)
    if quick:
        size, detect, pre_it, ft_it, epochs, sizes, batch = 128, 128, 200, 40, 0, (0, 10, -1), 8
    else:  # finetuning: 125 iterations, and at least 12 passes over the real images (225 at 300)
        size, detect, pre_it, ft_it, epochs, sizes, batch = 192, 320, 500, 125, 12, (0, 10, 50, -1), 16
    if repeats < 1 or (quick and repeats > 1):
        raise ValueError(f"repeats must be >= 1 (and 1 with quick), got {repeats}")
    return ExperimentConfig(
        name="birds-demo-quick" if quick else "birds-demo",
        seed=0,
        data=DataSpec(benchmark="birds", benchmark_root=data_root),
        segmenter=SegmenterSpec(name="grabcut"),
        # generic geometry, not fitted to the real boxes: 1-4 objects, sides 10-70 % of the canvas
        synthesis={"canvas_size": size, "num_objects": [1, 4], "box_side": [0.1, 0.7]},
        detectors=(DEMO_DETECTOR,),
        # a 96-channel FPN and a 2-conv head: at 192 px as fast per step as 128 channels and 3 convs
        # at 160 px, and better; training on 192 px crops at the 320 px detection scale gives small
        # birds more pixels for inference time only (docs/detectors.md)
        detector_options={DEMO_DETECTOR: {"fpn_channels": 96, "head_convs": 2,
                                          **({"train_size": size} if detect != size else {})}},
        image_size=detect,
        weights="imagenet",
        pretrain={"recipe": "short", "iterations": pre_it, "batch_size": batch},
        finetune={"recipe": "short", "iterations": ft_it, "min_epochs": epochs, "batch_size": batch, "val_every": 25},
        study=StudySpec(kind="data_efficiency", real_sizes=sizes, repeats=repeats),
        device=device,
        eval_batch_size=8,  # faster per image than 16 at 320 px on 2 cores (docs/detectors.md)
    )


def _segmentation_iou(runner: ExperimentRunner, limit: int | None = None) -> dict[str, float]:
    """Mean foreground IoU (mask > 0.5) of the demo's segmenter and a centred-ellipse baseline."""
    from ..segmentation import MaskCache, get_segmenter
    from ..utils.files import list_images

    data = runner.data
    if data.true_masks is None or data.objects is None:
        return {}
    paths = list_images(data.objects)[:limit]
    name, kwargs = runner.segmenter_settings()
    results = {}
    for label, seg in ((name, get_segmenter(name, **kwargs)), ("ellipse (baseline)", get_segmenter("ellipse"))):
        cache = MaskCache(runner.out / "mask_cache", seg)
        cache.fit(list_images(data.objects))  # segmenters that fit to the class's images (cosegment)
        ious = []
        for p in paths:
            true = read_image(data.true_masks / f"{p.stem}.png")[:, :, 0] > 127
            pred = cache.get(p) > 0.5
            union = np.logical_or(true, pred).sum()
            ious.append(np.logical_and(true, pred).sum() / union if union else 1.0)
        results[label] = float(np.mean(ious))
    return results


def _synthetic_grid(runner: ExperimentRunner, path: Path, count: int = 16) -> None:
    from .plan import PretrainSpec

    stream = runner.make_stream(PretrainSpec(runner.cfg.detectors[0], 0), seed=runner.cfg.seed)
    tiles = []
    for i in range(count):
        s = stream.render(i)
        tiles.append(draw_boxes(s.image, s.boxes, s.labels))
    write_image(path, make_grid(tiles, ncols=8))


def _prediction_grid(runner: ExperimentRunner, rows: list[dict], path: Path, count: int = 8) -> list[str]:
    """Test images with ground truth (green) and detections >= 0.3 of the best run per variant."""
    import json

    import torch

    from ..datasets.records import DetectionDataset

    data = runner.data
    ds = DetectionDataset(data.test[:count])
    tiles, captions = [], []
    for variant in ("no_pretraining", "pretrained"):
        cands = [r for r in rows if r["variant"] == variant]
        if not cands:
            continue
        best = max(cands, key=lambda r: int(r["n_real"]))
        metrics = json.loads((runner.out / "runs" / best["run_id"] / "metrics.json").read_text())
        model = runner.build_model(best["detector"], metrics["checkpoint"]).eval()
        captions.append(f"row {len(captions) + 1}: {variant}, {best['n_real']} real images")
        with torch.inference_mode():
            for i in range(len(ds)):
                image, target = ds[i]
                pred = model([image])[0]
                keep = pred["scores"] >= 0.3
                img = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                img = draw_boxes(img, target["boxes"].numpy(), [1] * len(target["boxes"]))
                img = draw_boxes(img, pred["boxes"][keep].numpy(), [3] * int(keep.sum()),
                                 scores=pred["scores"][keep].numpy())
                tiles.append(img)
    if tiles:
        write_image(path, make_grid(tiles, ncols=len(ds)))
    return captions


def _expected(runner: ExperimentRunner):
    """Print how long the runs left will take on this machine, from timed probe steps
    (:mod:`synthdet.experiments.estimate`); None (and nothing printed) when nothing is left."""
    from .estimate import estimate

    if all(runner.is_done(r) for r in runner.runs):
        return None
    est = estimate(runner)
    print(est.line(), flush=True)
    return est


def terminal_table(rows: list[dict]) -> str:
    """Short plain-text table: AP@0.5 per variant and number of real images (first study/detector)."""
    groups = aggregate(rows)
    if not groups:
        return "no finished runs"
    study, det = next(iter(groups))[:2]
    ns = sorted({k[3] for k in groups if k[3] > 0}) + ([-1] if any(k[3] < 0 for k in groups) else [])
    n_all = max(int(r["n_real"]) for r in rows)
    head = ["variant"] + [f"all {n_all}" if n < 0 else str(n) for n in ns]
    lines = [f"AP@0.5 (%) on the test split ({det}), by number of real training images",
             "  ".join(f"{h:>16}" for h in head)]
    for variant in ("no_pretraining", "pretrained"):
        cells = [fmt_ap(groups.get((study, det, variant, n), [])) for n in ns]
        lines.append("  ".join(f"{c:>16}" for c in [variant, *cells]))
    only = groups.get((study, det, "pretrain_only", 0))
    if only:
        lines.append(f"{'pretrain only':>16}  {fmt_ap(only):>16}  (0 real images)")
    saved = labels_saved(rows, study, det)
    if saved:
        lines.append(saved.replace("**", ""))
    return "\n".join(lines)


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, data_root: Optional[str] = None,
             device: str = "auto", repeats: int = 1) -> Path:
    """Run the demo (resumable) and write ``OUT/report.md``; returns its path."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    cfg = demo_config(quick=quick, data_root=data_root, device=device, repeats=repeats)
    runner = ExperimentRunner(cfg, out)
    expected = _expected(runner)
    runner.run()
    rows = read_results(out)
    build_report(out)
    rep = out / "report"
    _synthetic_grid(runner, rep / "synthetic_samples.png")
    seg = _segmentation_iou(runner)
    captions = _prediction_grid(runner, rows, rep / "predictions.png")
    minutes = (time.perf_counter() - t0) / 60
    seg_lines = "\n".join(f"| {k} | {100 * v:.1f} |" for k, v in seg.items())
    n_train = len(runner.data.train)
    epochs = cfg.finetune.get("min_epochs", 0)
    budget = f" (at least {epochs:g} passes over the real images)" if epochs else ""
    train_size = cfg.detector_options.get(cfg.detectors[0], {}).get("train_size")
    trains_at = f" trained on {train_size} px inputs (crops of the real scenes at the detection scale)," \
        if train_size else ""
    md = f"""# synthdet demo: birds (offline benchmark)

Detector `{cfg.detectors[0]}`{trains_at} detecting at {cfg.image_size} px, ImageNet backbone; pretraining
{cfg.pretrain['iterations']} iterations on the synthesis stream (GrabCut masks), finetuning
{cfg.finetune['iterations']} iterations{budget} with validation every {cfg.finetune['val_every']} (best kept).
Real training pool: {n_train} scenes; test: {len(runner.data.test)} scenes with bird identities never
seen in the classification images. This run took {minutes:.1f} min (including any steps resumed from
an earlier run).

## Results

{results_tables(rows)}

![AP vs real images](report/ap_vs_n.png)

Validation curves: ![validation curves](report/val_curves.png)

## Segmentation of the classification images (mean IoU vs the true masks, %)

| segmenter | IoU |
|---|---|
{seg_lines}

## Synthetic training samples (boxes drawn)

![synthetic samples](report/synthetic_samples.png)

## Predictions on test images (ground truth in green, detections with score >= 0.3 in blue)

{'; '.join(captions)}

![predictions](report/predictions.png)
"""
    atomic_write_text(out / "report.md", md)
    print(terminal_table(rows))
    took = f"{minutes:.1f} min" + (f"; expected {expected.seconds / 60:.1f} min" if expected else "")
    print(f"\nreport: {out / 'report.md'}  ({took})")
    return out / "report.md"
