"""COCO JSON reading and writing (``pycocotools`` reads what we write).

COCO boxes are ``[x, y, w, h]`` in pixels; our XYXY-exclusive boxes map to them exactly:
``[x0, y0, x1 - x0, y1 - y0]``. Category ids are kept as our 1-based labels.

The reader is strict: an entry it cannot interpret (missing key, undeclared ``category_id``,
malformed ``bbox``, duplicate image id) raises ValueError naming the file and the entry; boxes
it can interpret but not use (NaN, negative or zero size, entirely off the image) are dropped
and counted, boxes partly off the image are clipped and counted, and annotations of images the
file does not list are dropped and counted (see :class:`CocoStats`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..utils.files import atomic_path, atomic_write_json
from .records import DetectionRecord

logger = logging.getLogger(__name__)


def coco_image(rec: DetectionRecord, image_id: int, image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``images`` entry of one record (``file_name`` relative to ``image_root`` when given)."""
    file_name = rec.image_path if image_root is None else os.path.relpath(rec.image_path, image_root)
    return {"id": int(image_id), "file_name": file_name, "width": int(rec.width), "height": int(rec.height)}


def coco_annotations(rec: DetectionRecord, image_id: int, first_id: int,
                     masks: Sequence[np.ndarray] | None = None) -> list[dict[str, Any]]:
    """The ``annotations`` entries of one record, ids ``first_id, first_id + 1, ...``.

    ``masks`` (optional): one binary ``HxW`` mask per box, stored as compressed RLE (each mask is
    encoded once; ``area`` is the mask's pixel count).
    """
    out = []
    for j, (box, lab) in enumerate(zip(rec.boxes, rec.labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        ann = {"id": first_id + j, "image_id": int(image_id), "category_id": int(lab),
               "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
        if masks is not None:
            ann["segmentation"], ann["area"] = _rle(masks[j])
        out.append(ann)
    return out


def _rle(mask: np.ndarray) -> tuple[dict[str, Any], float]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    area = float(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area


def coco_categories(categories: dict[int, str]) -> list[dict[str, Any]]:
    return [{"id": int(k), "name": v, "supercategory": "object"} for k, v in sorted(categories.items())]


def records_to_coco(
    records: Sequence[DetectionRecord],
    categories: dict[int, str],
    image_root: str | os.PathLike | None = None,
    masks: Sequence[Sequence[np.ndarray] | None] | None = None,
) -> dict[str, Any]:
    """Build a COCO dict. ``file_name`` is made relative to ``image_root`` when given.

    ``masks[i]`` (optional) lists one binary ``HxW`` mask per box of record ``i``; they are stored
    as compressed RLE ``segmentation`` entries.
    """
    images, annotations = [], []
    ids = [int(r.image_id) for r in records]
    keep_ids = all(k > 0 for k in ids) and len(set(ids)) == len(ids)  # else renumber 1..N
    for i, rec in enumerate(records):
        image_id = ids[i] if keep_ids else i + 1
        images.append(coco_image(rec, image_id, image_root))
        annotations += coco_annotations(rec, image_id, len(annotations) + 1,
                                        None if masks is None else masks[i])
    return {"images": images, "annotations": annotations, "categories": coco_categories(categories)}


def write_coco(path: str | os.PathLike, records: Sequence[DetectionRecord], categories: dict[int, str],
               image_root: str | os.PathLike | None = None,
               masks: Sequence[Sequence[np.ndarray] | None] | None = None) -> None:
    """Write records as a COCO JSON file (atomically)."""
    atomic_write_json(path, records_to_coco(records, categories, image_root, masks))


def write_coco_streamed(path: str | os.PathLike, images: Sequence[dict[str, Any]],
                        annotation_lines: Iterable[str], categories: dict[int, str]) -> None:
    """Write a COCO file from ``images`` entries and annotations given as JSON strings (one per
    annotation, e.g. read back from a spool file), without holding the annotations in memory."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"images": ' + json.dumps(list(images)) + ', "annotations": [')
        for k, line in enumerate(annotation_lines):
            f.write(("," if k else "") + "\n" + line.strip())
        f.write('\n], "categories": ' + json.dumps(coco_categories(categories)) + "}\n")


# --------------------------------------------------------------------------- reading

@dataclass
class CocoStats:
    """What the reader dropped or changed: boxes that are NaN, of negative or zero size, or
    entirely off the image (``dropped``), boxes clipped to the image (``clipped``), annotations of
    images the file does not list (``unknown_image``), crowd annotations skipped (``crowd``)."""

    dropped: int = 0
    clipped: int = 0
    unknown_image: int = 0
    crowd: int = 0

    def summary(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.dropped, "unusable boxes dropped (NaN, empty or off-image)"),
                                               (self.clipped, "boxes clipped to the image"),
                                               (self.unknown_image, "annotations of unlisted images dropped"))
                 if n]
        return ", ".join(parts)


def _entry(kind: str, i: int, item: Any) -> str:
    if isinstance(item, dict) and "id" in item:
        return f"{kind}[{i}] (id {item['id']!r})"
    return f"{kind}[{i}]"


def _need(path: Path, where: str, item: Any, keys: Sequence[str]) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"{path}: {where}: expected a JSON object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(f"{path}: {where}: missing {', '.join(repr(k) for k in missing)}")


def _int(path: Path, where: str, key: str, value: Any, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
            or (positive and value <= 0):
        what = "a positive integer" if positive else "an integer"
        raise ValueError(f"{path}: {where}: '{key}' must be {what}, got {value!r}")
    return int(value)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a JSON object (not a COCO detection file)")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing '{key}' (not a COCO detection file)")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _categories(path: Path, cats: list) -> dict[int, str]:
    """``{category id: name}``; refuses a malformed entry or a duplicate id."""
    out: dict[int, str] = {}
    for i, c in enumerate(cats):
        where = _entry("categories", i, c)
        _need(path, where, c, ("id", "name"))
        cid = _int(path, where, "id", c["id"])
        if cid in out:
            raise ValueError(f"{path}: {where}: duplicate category id {cid}")
        out[cid] = str(c["name"])
    return out


def _images(path: Path, images: list) -> dict[int, dict]:
    """``{image id: entry}`` in file order; refuses a malformed entry or a duplicate id."""
    out: dict[int, dict] = {}
    for i, im in enumerate(images):
        where = _entry("images", i, im)
        _need(path, where, im, ("id", "file_name", "width", "height"))
        iid = _int(path, where, "id", im["id"])
        if iid in out:
            raise ValueError(f"{path}: {where}: duplicate image id {iid} (image ids must be unique)")
        _int(path, where, "width", im["width"], positive=True)
        _int(path, where, "height", im["height"], positive=True)
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise ValueError(f"{path}: {where}: 'file_name' must be a non-empty string")
        out[iid] = im
    return out


def _bbox(path: Path, where: str, ann: dict) -> list[float]:
    b = ann["bbox"]
    if not isinstance(b, list) or len(b) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in b):
        raise ValueError(f"{path}: {where}: 'bbox' must be 4 numbers [x, y, width, height], got {b!r}")
    return [float(v) for v in b]


def _clip_box(bbox: list[float], width: int, height: int) -> tuple[list[float] | None, bool]:
    """XYXY box of a COCO ``bbox`` clipped to the image, and whether it was clipped; None if unusable."""
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox) or w <= 0 or h <= 0:
        return None, False
    box = [x, y, x + w, y + h]
    clipped = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
               min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, False
    return clipped, clipped != box


def _annotations(path: Path, anns: list, images: dict[int, dict], cats: dict[int, str],
                 include_crowd: bool, stats: CocoStats) -> dict[int, list[tuple[list[float], int]]]:
    """``{image id: [(XYXY box, category id), ...]}``; bad entries raise, unusable boxes are counted."""
    per_image: dict[int, list[tuple[list[float], int]]] = {}
    for i, ann in enumerate(anns):
        where = _entry("annotations", i, ann)
        _need(path, where, ann, ("image_id", "category_id", "bbox"))
        cid = _int(path, where, "category_id", ann["category_id"])
        if cid not in cats:
            raise ValueError(f"{path}: {where}: category_id {cid} is not declared in 'categories' "
                             f"(declared: {sorted(cats)})")
        bbox = _bbox(path, where, ann)
        if ann.get("iscrowd", 0) and not include_crowd:
            stats.crowd += 1
            continue
        iid = _int(path, where, "image_id", ann["image_id"])
        if iid not in images:
            stats.unknown_image += 1
            continue
        im = images[iid]
        box, clipped = _clip_box(bbox, int(im["width"]), int(im["height"]))
        if box is None:
            stats.dropped += 1
            continue
        stats.clipped += clipped
        per_image.setdefault(iid, []).append((box, cid))
    return per_image


def read_coco(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
              include_crowd: bool = False) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read a COCO JSON file into records (one per image, images without boxes included).

    ``image_root`` defaults to the JSON file's folder. Category ids are remapped to 1..K in
    sorted id order; the returned dict maps the new ids to names. Boxes are XYXY exclusive-end,
    clipped to the image; what is dropped or clipped is logged (see the module docstring).
    """
    path = Path(path)
    records, names, stats = read_coco_with_stats(path, image_root, include_crowd)
    if stats.summary():
        logger.warning("%s: %s", path, stats.summary())
    return records, names


def read_coco_with_stats(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                         include_crowd: bool = False) -> tuple[list[DetectionRecord], dict[int, str], CocoStats]:
    """:func:`read_coco` that also returns the :class:`CocoStats` of what was dropped or clipped."""
    path = Path(path)
    data = _load(path)
    root = Path(image_root) if image_root is not None else path.parent
    cats = _categories(path, data["categories"])
    remap = {cid: k + 1 for k, cid in enumerate(sorted(cats))}
    images = _images(path, data["images"])
    stats = CocoStats()
    per_image = _annotations(path, data["annotations"], images, cats, include_crowd, stats)
    records = []
    for iid, im in images.items():
        anns = per_image.get(iid, [])
        records.append(DetectionRecord(
            image_path=str(root / im["file_name"]), width=int(im["width"]), height=int(im["height"]),
            boxes=np.array([b for b, _ in anns], np.float32).reshape(-1, 4),
            labels=np.array([remap[c] for _, c in anns], np.int64), image_id=iid,
        ))
    return records, {remap[c]: n for c, n in cats.items()}, stats
