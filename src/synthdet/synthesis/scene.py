"""Paste the objects of one sample onto its canvas: targets, distractors, blending and occlusion.

:func:`paste_scene` is the object loop of :meth:`~synthdet.synthesis.stream.SynthStream.render`.
With the defaults (no distractors, no overlap, ``blend: alpha``) it draws exactly what the paper's
loop draws from the generator: per object, the object, then its augmentation. Boxes are XYXY
integer pixels with an exclusive end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..sources.base import ObjectSource
from .augment import ObjectAugmenter
from .blending import draw_mode, paste
from .compose import label_box, overlaps, sample_boxes
from .config import SynthConfig
from .occlusion import Layers


@dataclass
class Scene:
    """The labelled objects of one sample (see :class:`~synthdet.synthesis.stream.SynthSample`)
    and what was left out: ``dropped`` (hidden under ``min_visibility``), ``retries`` (positions
    redrawn), ``rejected`` (objects not pasted: no position kept them visible enough, or no free
    spot for a distractor), ``distractors`` (pasted)."""

    boxes: list[np.ndarray] = field(default_factory=list)
    amodal: list[np.ndarray] = field(default_factory=list)
    visible: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    placed: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    empty: list[bool] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    layer: list[int] = field(default_factory=list)
    dropped: int = 0
    retries: int = 0
    rejected: int = 0
    distractors: int = 0


def distractor_boxes(placed: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Boxes (int64 ``[M, 4]``) for a count in ``num_distractors`` distractors, sized like the
    uniform placement; unless ``allow_overlap`` each must miss every box so far (``max_tries``
    draws, else it is left out). Returns (boxes, how many were left out)."""
    count = int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))
    if cfg.allow_overlap:
        return sample_boxes(count, cfg, rng), 0
    boxes = [b for b in np.asarray(placed, np.int64).reshape(-1, 4)]
    out, missed = [], 0
    for _ in range(count):
        tries = sample_boxes(cfg.max_tries, cfg, rng)
        ok = [t for t in tries if not overlaps(np.stack(boxes + [t]))]
        if ok:
            boxes.append(ok[0])
            out.append(ok[0])
        else:
            missed += 1
    return np.asarray(out, np.int64).reshape(-1, 4), missed


def paste_scene(canvas: np.ndarray, placed: np.ndarray, cfg: SynthConfig, augmenter: ObjectAugmenter,
                objects: ObjectSource, distractors: ObjectSource | None, rng: np.random.Generator,
                blend_rng: np.random.Generator | None = None) -> Scene:
    """Paste targets at ``placed`` (int64 ``[N, 4]``) and, with ``distractors``, unlabelled objects,
    into ``canvas`` (uint8 SxSx3, in place), in a random order when there are distractors.

    Blending draws from ``blend_rng`` (default ``rng``): a separate generator keeps the objects,
    their augmentation and positions, hence the labels, the same whatever the blending mode."""
    blend_rng = rng if blend_rng is None else blend_rng
    scene = Scene()
    targets = len(placed)
    boxes = np.asarray(placed, np.int64).reshape(-1, 4)
    order: range | np.ndarray = range(targets)
    if distractors is not None and cfg.num_distractors[1] > 0:
        extra, scene.rejected = distractor_boxes(boxes, cfg, rng)
        boxes = np.concatenate([boxes, extra])
        order = rng.permutation(len(boxes))
    layers = Layers(cfg.canvas_size) if cfg.allow_overlap else None
    for i in order:
        is_target = i < targets
        obj = (objects if is_target else distractors).draw(rng)
        box = boxes[i]
        x0, y0, x1, y1 = (int(v) for v in box)
        naive = obj.mask is None  # not segmented (segmenter `none`): the paper's naive pasting
        full = np.ones(obj.image.shape[:2], np.float32) if naive else obj.mask
        img, msk = augmenter(obj.image, full, x1 - x0, y1 - y0, rng)
        if naive:  # the whole augmented frame, pasted opaquely and labelled with the whole box
            msk = np.ones(msk.shape, np.float32)
        paints = msk > cfg.binarize_threshold if layers is not None else None
        if layers is not None:
            box = _position(layers, scene, paints, box, cfg, rng)
            if box is None:
                scene.rejected += 1
                continue
            x0, y0 = int(box[0]), int(box[1])
        if naive:
            canvas[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
        else:
            paste(canvas, img, msk, x0, y0, draw_mode(cfg, blend_rng), cfg, blend_rng)
        if not is_target:
            scene.distractors += 1
            if layers is not None:
                layers.add(paints, box, paints)
            continue
        amodal, empty = label_box(msk, box, cfg.binarize_threshold)
        if layers is not None:
            scene.layer.append(layers.add(paints if not empty else np.ones_like(paints), box, paints))
        _record(scene, amodal, empty, obj.label, box, msk, obj.key)
    if layers is not None:
        _occlude(scene, layers, cfg.min_visibility)
    return scene


def _record(scene: Scene, amodal: np.ndarray, empty: bool, label: int, box: np.ndarray, mask: np.ndarray,
            key: str) -> None:
    scene.boxes.append(amodal)
    scene.amodal.append(amodal)
    scene.visible.append(1.0)
    scene.labels.append(int(label))
    scene.placed.append(np.asarray(box, np.int64))
    scene.masks.append(mask)
    scene.empty.append(bool(empty))
    scene.keys.append(key)


def _position(layers: Layers, scene: Scene, paints: np.ndarray, box: np.ndarray, cfg: SynthConfig,
              rng: np.random.Generator) -> np.ndarray | None:
    """``box``, or with ``occluded: retry`` a new position of the same size (up to ``max_tries``
    draws) where the object hides no labelled object below ``min_visibility``; None if none."""
    if cfg.occluded != "retry":
        return box
    w, h = int(box[2] - box[0]), int(box[3] - box[1])
    s = cfg.canvas_size
    for t in range(cfg.max_tries + 1):
        if not layers.would_hide(paints, box, scene.layer, cfg.min_visibility):
            return box
        if t < cfg.max_tries:
            scene.retries += 1
            x0, y0 = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
            box = np.array([x0, y0, x0 + w, y0 + h], np.int64)
    return None


def _occlude(scene: Scene, layers: Layers, min_visibility: float) -> None:
    """Replace each target's box by its visible box and mask by its visible part; drop the hidden."""
    keep = []
    for j, k in enumerate(scene.layer):
        box, frac, vis = layers.label(k)
        scene.visible[j] = frac
        if box is None or frac < min_visibility:
            scene.dropped += 1
            continue
        scene.boxes[j] = box
        scene.masks[j] = scene.masks[j] * vis
        keep.append(j)
    for name in ("boxes", "amodal", "visible", "labels", "placed", "masks", "empty", "keys", "layer"):
        values = getattr(scene, name)
        setattr(scene, name, [values[j] for j in keep])
