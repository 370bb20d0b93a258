"""COCO JSON reading and writing (``pycocotools`` reads what we write).

COCO boxes are ``[x, y, w, h]`` in pixels; our XYXY-exclusive boxes map to them exactly:
``[x0, y0, x1 - x0, y1 - y0]``. Category ids are kept as our 1-based labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils.files import atomic_write_json
from .records import DetectionRecord


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
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    ann_id = 1
    ids = [int(r.image_id) for r in records]
    keep_ids = all(k > 0 for k in ids) and len(set(ids)) == len(ids)  # else renumber 1..N
    for i, rec in enumerate(records):
        file_name = rec.image_path
        if image_root is not None:
            file_name = os.path.relpath(rec.image_path, image_root)
        image_id = ids[i] if keep_ids else i + 1
        images.append({"id": int(image_id), "file_name": file_name, "width": int(rec.width), "height": int(rec.height)})
        for j, (box, lab) in enumerate(zip(rec.boxes, rec.labels)):
            x0, y0, x1, y1 = (float(v) for v in box)
            ann = {
                "id": ann_id,
                "image_id": int(image_id),
                "category_id": int(lab),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float((x1 - x0) * (y1 - y0)),
                "iscrowd": 0,
            }
            if masks is not None and masks[i] is not None:
                rle = mask_utils.encode(np.asfortranarray(np.asarray(masks[i][j], dtype=np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                ann["segmentation"] = rle
                ann["area"] = float(mask_utils.area(mask_utils.encode(np.asfortranarray(np.asarray(masks[i][j], np.uint8)))))
            annotations.append(ann)
            ann_id += 1
    cats = [{"id": int(k), "name": v, "supercategory": "object"} for k, v in sorted(categories.items())]
    return {"images": images, "annotations": annotations, "categories": cats}


def write_coco(path: str | os.PathLike, records: Sequence[DetectionRecord], categories: dict[int, str],
               image_root: str | os.PathLike | None = None,
               masks: Sequence[Sequence[np.ndarray] | None] | None = None) -> None:
    """Write records as a COCO JSON file (atomically)."""
    atomic_write_json(path, records_to_coco(records, categories, image_root, masks))


def read_coco(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
              include_crowd: bool = False) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read a COCO JSON file into records (one per image, images without boxes included).

    ``image_root`` defaults to the JSON file's folder. Category ids are remapped to 1..K in
    sorted id order; the returned dict maps the new ids to names.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing '{key}' (not a COCO detection file)")
    root = Path(image_root) if image_root is not None else path.parent
    cat_ids = sorted(c["id"] for c in data["categories"])
    remap = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    names = {remap[c["id"]]: c["name"] for c in data["categories"]}
    per_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        per_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for im in data["images"]:
        anns = per_image.get(im["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([remap[a["category_id"]] for a in anns], np.int64)
        records.append(DetectionRecord(
            image_path=str(root / im["file_name"]), width=int(im["width"]), height=int(im["height"]),
            boxes=boxes, labels=labels, image_id=int(im["id"]),
        ))
    return records, names
