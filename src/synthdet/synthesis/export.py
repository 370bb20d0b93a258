"""Write N synthetic samples to disk as a COCO, YOLO or VOC dataset, and a preview grid.

Layouts (images are JPEG, quality 95):

- ``coco``: ``images/000001.jpg`` ... and ``annotations.json`` (boxes + instance masks as RLE;
  each annotation also has ``amodal_bbox``, the XYWH box of the whole object, covered parts
  included, and ``visible_fraction``; ``bbox`` is the visible box).
- ``yolo``: ``images/*.jpg``, ``labels/*.txt`` and ``data.yaml`` (Ultralytics layout).
- ``voc``: ``JPEGImages/*.jpg``, ``Annotations/*.xml``, ``ImageSets/Main/train.txt``.

``synth_config.yaml`` next to them records the resolved config, seed and count.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets.records import DetectionRecord
from ..utils.config import dump_yaml, to_dict
from ..utils.image import write_image
from ..utils.outdir import build_then_rename
from .stats import SampleStats
from .stream import SynthSample, SynthStream

log = logging.getLogger(__name__)

FORMATS = ("coco", "yolo", "voc")
_IMAGE_DIR = {"coco": "images", "yolo": "images", "voc": "JPEGImages"}


def preview_grid(samples: Sequence[SynthSample], class_names: Sequence[str] | None = None,
                 ncols: int = 4) -> np.ndarray:
    """A uint8 RGB grid of ``samples`` with their label boxes (and class names) drawn."""
    from ..utils.viz import draw_boxes, make_grid

    names = {k + 1: n for k, n in enumerate(class_names)} if class_names and len(class_names) > 1 else None
    return make_grid([draw_boxes(s.image, s.boxes, s.labels, names=names) for s in samples], ncols=ncols)


def write_preview(stream: SynthStream, path: str | os.PathLike, count: int = 16, ncols: int = 4) -> Path:
    """Render samples ``start .. start + count - 1`` and write their preview grid to ``path``."""
    samples = [stream.render(stream.start + i) for i in range(count)]
    path = Path(path)
    write_image(path, preview_grid(samples, stream.class_names, ncols))
    return path


def export_dataset(stream: SynthStream, out_dir: str | os.PathLike, count: int, fmt: str = "coco",
                   preview: bool = False, progress: bool = True, quality: int = 95,
                   force: bool = False, stats: SampleStats | None = None) -> list[DetectionRecord]:
    """Render samples ``stream.start .. + count - 1`` into ``out_dir`` in format ``fmt``.

    Returns the written records (XYXY exclusive-end boxes, 1-based labels). COCO files carry
    the instance masks (``mask > binarize_threshold``) as RLE, encoded once per sample and
    spooled to disk, so memory does not grow with ``count``.

    The dataset is built in a temporary sibling folder and renamed onto ``out_dir`` when
    complete (replacing an earlier synthdet output). A folder synthdet did not write is refused
    unless ``force``; a second export into the same folder at the same time is refused.
    ``stats``: a :class:`~synthdet.synthesis.stats.SampleStats` that every written sample is added to.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if count < 1:
        raise ValueError(f"--count must be >= 1, got {count}")
    out = Path(out_dir).absolute()
    with build_then_rename(out, "synth", force=force, legacy=("synth_config.yaml",)) as tmp:
        records = _export_into(tmp, stream, count, fmt, preview, progress, quality, stats)
    records = [r.replace(image_path=str(out / Path(r.image_path).relative_to(tmp))) for r in records]
    log.info("wrote %d %s samples (%d objects) to %s", count, fmt, sum(len(r.boxes) for r in records), out)
    stream.log_stats()
    return records


def _export_into(out: Path, stream: SynthStream, count: int, fmt: str, preview: bool, progress: bool,
                 quality: int, stats: SampleStats | None = None) -> list[DetectionRecord]:
    from tqdm import tqdm

    img_dir = out / _IMAGE_DIR[fmt]
    img_dir.mkdir(parents=True, exist_ok=True)
    names = stream.class_names
    records: list[DetectionRecord] = []
    coco = _CocoSpool(out) if fmt == "coco" else None
    first: list[SynthSample] = []
    width = len(str(count))
    for k in tqdm(range(count), desc=f"synth -> {fmt}", disable=not progress, unit="img"):
        s = stream.render(stream.start + k)
        path = img_dir / f"{k + 1:0{max(6, width)}d}.jpg"
        write_image(path, s.image, quality=quality)
        size = s.image.shape[0]
        rec = DetectionRecord(image_path=str(path), width=size, height=size, boxes=s.boxes, labels=s.labels,
                              image_id=k + 1)
        records.append(rec)
        if stats is not None:
            stats.add(s)
        if coco is not None:
            coco.add(rec, s.full_masks(stream.config.binarize_threshold), _occlusion_fields(s))
        if preview and len(first) < 16:
            first.append(s)
    categories = {k + 1: n for k, n in enumerate(names)}
    if coco is not None:
        coco.finish(out / "annotations.json", categories)
    elif fmt == "yolo":
        from ..datasets.yolo import write_yolo

        write_yolo(out, records, list(names))
    else:
        from ..datasets.voc import write_voc

        write_voc(out, records, list(names), image_set="train")
    dump_yaml({"format": fmt, "count": count, "seed": stream.seed, "start": stream.start,
               "class_names": list(names), "synthesis": to_dict(stream.config)}, out / "synth_config.yaml")
    if preview and first:
        write_image(out / "preview.png", preview_grid(first, names))
    return records


def _occlusion_fields(s: SynthSample) -> list[dict]:
    """Per object: ``amodal_bbox`` (XYWH of the whole mask) and ``visible_fraction``."""
    return [{"amodal_bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "visible_fraction": float(v)}
            for (x0, y0, x1, y1), v in zip(s.amodal, s.visible)]


class _CocoSpool:
    """COCO annotations written to a spool file sample by sample (masks RLE-encoded once, then
    dropped), assembled into ``annotations.json`` at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool_path = root / ".annotations.jsonl"
        self.spool = open(self.spool_path, "w")
        self.images: list[dict] = []
        self.next_id = 1

    def add(self, rec: DetectionRecord, masks: np.ndarray, extra: list[dict] | None = None) -> None:
        from ..datasets.coco import coco_annotations, coco_image

        self.images.append(coco_image(rec, rec.image_id, self.root))
        anns = coco_annotations(rec, rec.image_id, self.next_id, list(masks))
        self.next_id += len(anns)
        for ann, more in zip(anns, extra or [{}] * len(anns)):
            ann.update(more)
            self.spool.write(json.dumps(ann) + "\n")

    def finish(self, path: Path, categories: dict[int, str]) -> None:
        from ..datasets.coco import write_coco_streamed

        self.spool.close()
        with open(self.spool_path) as lines:
            write_coco_streamed(path, self.images, lines, categories)
        self.spool_path.unlink()
