"""``OUT/report.md`` of ``synthdet train``: what was done and what came out, with its figures in
``OUT/report/`` (synthetic samples, validation curve, predictions on validation images)."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..utils.files import atomic_write_text
from ..utils.image import write_image
from ..utils.viz import draw_boxes, make_grid
from .report import fmt_ap, labels_saved, mask_counts_table, plot_val_curves, results_tables
from .runner import read_results
from .train_settings import FIT_MIN_BOXES, Choices

if TYPE_CHECKING:
    from .train_inputs import TrainInputs
    from .train_runner import TrainRunner


def next_commands(out: Path) -> str:
    """The ``synthdet predict`` / ``export`` commands for ``OUT/best.pt``."""
    ckpt, pred = shlex.quote(str(out / "best.pt")), shlex.quote(str(out / "predictions"))
    return (f"synthdet predict --checkpoint {ckpt} --images YOUR_IMAGES/ --out {pred}\n"
            f"synthdet export --checkpoint {ckpt} --format onnx --out {shlex.quote(str(out / 'model.onnx'))}"
            "   # ONNX needs: pip install 'synthdet[export]'; or --format torchscript")


def synthetic_grid(stream, path: Path, count: int = 16) -> None:
    """The first ``count`` samples of a synthesis ``stream`` with their label boxes drawn."""
    tiles = []
    for i in range(count):
        s = stream.render(i)
        tiles.append(draw_boxes(s.image, s.boxes, s.labels))
    write_image(path, make_grid(tiles, ncols=8))


def prediction_grid(checkpoint: Path, records, path: Path, count: int = 8,
                    threshold: float = 0.5) -> int:
    """``records``' first ``count`` images with their labelled boxes (class colours) and the
    detections of ``checkpoint`` scoring >= ``threshold`` (blue, with scores); returns the count."""
    import torch

    from ..datasets.records import DetectionDataset
    from ..models import load_detector

    model = load_detector(checkpoint).eval()
    ds = DetectionDataset(list(records)[:count])
    tiles = []
    with torch.inference_mode():
        for i in range(len(ds)):
            image, target = ds[i]
            pred = model([image])[0]
            keep = pred["scores"] >= threshold
            img = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            img = draw_boxes(img, target["boxes"].numpy(), target["labels"].tolist())
            img = draw_boxes(img, pred["boxes"][keep].numpy(), [3] * int(keep.sum()),
                             scores=pred["scores"][keep].numpy())
            tiles.append(img)
    if tiles:
        write_image(path, make_grid(tiles, ncols=min(4, len(tiles))))
    return len(tiles)


def gate_diagnosis(cache_dir: Path) -> str:
    """How the cached masks fare against the default quality gates (a diagnosis: with the demo's
    settings no gate rejects a mask); ``""`` without masks."""
    from ..segmentation.gates import MaskGates
    from ..utils.image import read_image

    masks = sorted(Path(cache_dir).glob("*/*.png"))
    if not masks:
        return ""
    gates, reasons = MaskGates(), Counter()
    for p in masks:
        reasons[gates.check(read_image(p)[:, :, 0].astype(np.float32) / 255.0) or "pass"] += 1
    passed = reasons.pop("pass", 0)
    why = ", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "none"
    return (f"Against the default quality gates (`MaskGates`: foreground 2-50 % of the image, at most 20 % of "
            f"the border, at most 3 blobs), {passed} of {len(masks)} masks pass; failing: {why}. Masks that "
            "fail are often bad ones: they give no own-image background, and `--set segmenter.kwargs.gates=true` drops "
            "those images from the synthesis stream too.\n")


def _rows(runner: "TrainRunner") -> dict[str, dict[str, str]]:
    return {r["run_id"]: r for r in read_results(runner.out)}


def _summary(runner: "TrainRunner", inputs: "TrainInputs") -> tuple[str, str]:
    """(printed summary, label-savings sentence or "")."""
    rows = _rows(runner)
    main = rows[runner.main_run.run_id]
    on = "test" if inputs.test else "validation (no test data: the images that chose the checkpoint, optimistic)"
    lines = [f"AP@0.5 on the {on} images: {100 * float(main['ap50']):.1f} (pretrained on the synthesis "
             f"stream, finetuned on {main['n_real']} real images)"]
    base = [r for r in rows.values() if r["variant"] == "no_pretraining"]
    if base:
        lines.append(f"without pretraining (the same detector, images and finetuning budget): "
                     f"{100 * float(base[0]['ap50']):.1f}")
    saved = labels_saved(list(rows.values()), "data_efficiency", runner.cfg.detectors[0]) if base else None
    if saved:
        lines.append(saved.replace("**", ""))
    return "\n".join(lines), saved or ""


def _what(runner: "TrainRunner", inputs: "TrainInputs", ch: Choices, bg: dict[str, int]) -> str:
    cfg = runner.cfg
    det = cfg.detectors[0]
    opts = ", ".join(f"{k} {v}" for k, v in cfg.detector_options.get(det, {}).items()) or "builder defaults"
    if inputs.held_out:
        val = (f"{len(inputs.val.records)} of the labelled images held out (seed {cfg.seed}, images with boxes "
               "only; listed in `data/val.json`)")
    else:
        val = f"`{inputs.val.source}`, {len(inputs.val.records)} images"
    test = f"`{inputs.test.source}`, {len(inputs.test.records)} images" if inputs.test else "none given"
    sizes = ("set in the settings" if ch.sizes_given else
             f"from the training images: median longer side {ch.median_side:.0f} px x the demo's 1.25 -> "
             f"detection {ch.image_size} px, training {ch.train_size} px")
    if ch.geometry_given:
        geometry = "set in the settings"
    elif ch.fitted:
        geometry = f"fitted to the {ch.boxes} training boxes (at least {FIT_MIN_BOXES}), objects may overlap"
    else:
        geometry = f"the demo's generic geometry ({ch.boxes} training boxes; fitted from {FIT_MIN_BOXES} on)"
    kinds = {"photos": "background photos given",
             "scenes": "training images with their boxes inpainted / box-free crops",
             "objects": "object images with their masks (those passing the default quality gates) inpainted"}
    bgs = "; ".join(f"{n} {kinds[k]}" for k, n in bg.items())
    bgs += " (each kind drawn equally often)" if len(bg) > 1 else ""
    skipped = sum(len(p.skipped) for p in (inputs.train, inputs.val, inputs.test) if p is not None)
    return f"""- Objects: `{inputs.objects}`, classes {inputs.class_names}; segmenter `{cfg.segmenter.name}`.
- Training images: `{inputs.train.source}` ({inputs.train.fmt}), {len(inputs.train.records)} images,
  {ch.boxes} boxes{f'; {skipped} unusable images skipped (see the log)' if skipped else ''}.
- Validation: {val}. Test: {test}.
- Backgrounds: {bgs}.
- Detector `{det}` ({opts}), {'ImageNet backbone' if cfg.weights == 'imagenet' else f'weights {cfg.weights}'}:
  sizes {sizes}.
- Synthesis geometry: {geometry}; canvas {cfg.synthesis.get('canvas_size')} px.
- Recipe `{cfg.pretrain.get('recipe')}`: pretraining {ch.pretrain_iterations} iterations of
  {cfg.pretrain.get('batch_size')} synthetic samples; finetuning {runner.finetune_iterations()} iterations
  ({ch.finetune_iterations}, or {cfg.finetune.get('min_epochs', 0):g} passes over the real images if more) of
  {cfg.finetune.get('batch_size')} real images with validation every
  {cfg.finetune.get('val_every')} iterations and of the starting weights, best checkpoint kept (`best.pt`)."""


def write_report(out: Path, runner: "TrainRunner", inputs: "TrainInputs", choices: Choices,
                 bg_counts: dict[str, int], seconds: float) -> tuple[Path, str]:
    """Write ``OUT/report.md`` and its figures; returns its path and the summary to print."""
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    rows = list(_rows(runner).values())
    synthetic_grid(runner.make_stream(runner.main_run.pretrain, seed=runner.cfg.seed), rep / "synthetic_samples.png")
    curve = plot_val_curves(runner.out, rows, rep / "val_curves.png")
    names = dict(enumerate(inputs.class_names, 1))
    shown = prediction_grid(out / "best.pt", inputs.val.records, rep / "predictions.png")
    main = json.loads((runner.out / "runs" / runner.main_run.run_id / "metrics.json").read_text())
    summary, _ = _summary(runner, inputs)
    per_class = ", ".join(f"{names.get(int(k), k)} {fmt_ap([v])}" for k, v in (main.get("per_class") or {}).items())
    masks = mask_counts_table(runner.out / "mask_cache").replace("## Object masks", "## Object masks and quality gates")
    md = f"""# synthdet train: {out.name}

{summary.replace(chr(10), chr(10) + chr(10))}

Best validation AP@0.5 {100 * float(main['best_val_ap'] or 'nan'):.1f} at finetuning step {main['best_step']};
this command took {seconds / 60:.1f} min (steps resumed from an earlier run included).

## What was done

{_what(runner, inputs, choices, bg_counts)}
{masks}
{gate_diagnosis(runner.out / 'mask_cache')}
## Results

{results_tables(rows)}
Per class (AP@0.5 x 100): {per_class or '-'}

## Synthetic training samples (label boxes drawn)

![synthetic samples](report/synthetic_samples.png)

## Validation curve

{'![validation curve](report/val_curves.png)' if curve else 'no validation curve was saved'}

## Predictions on validation images (labelled boxes in class colours, detections >= 0.5 in blue)

{'![predictions](report/predictions.png)' if shown else 'no validation images'}

## Next

```bash
{next_commands(out)}
```
"""
    atomic_write_text(out / "report.md", md)
    return out / "report.md", summary
