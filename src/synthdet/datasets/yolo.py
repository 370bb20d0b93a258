"""YOLO txt labels in the Ultralytics layout: reader and writer.

Layout::

    data.yaml                 names (list or {id: name}), optional path/train/val/test
    images/<...>/<name>.jpg
    labels/<...>/<name>.txt   one "class cx cy w h" line per object, normalised to [0, 1],
                              0-based class; a missing label file = an image without objects

The label file of an image is found by replacing the last ``images`` folder of its path with
``labels`` and the suffix with ``.txt`` (as Ultralytics does). Polygon lines ("class x1 y1 x2 y2
...") are read as the polygon's bounding box.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils.files import atomic_write_text, list_images
from ._common import clean_boxes, image_sizes, log_summary, parse_numbers, read_lines, require_dir, require_file
from .records import DetectionRecord

logger = logging.getLogger(__name__)

_YAML_NAMES = ("data.yaml", "dataset.yaml")


def label_path(image_path: str | os.PathLike) -> Path:
    """The label file of an image: last ``images`` folder -> ``labels``, suffix -> ``.txt``."""
    parts = list(Path(image_path).parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    else:
        raise ValueError(f"{image_path}: no 'images' folder in the path (YOLO layout expected)")
    return Path(*parts).with_suffix(".txt")


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    require_file(path, "YOLO data.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def _names(data: dict[str, Any], path: Path) -> list[str] | None:
    names = data.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: 'names' keys must be integer class ids") from None
        if ids != list(range(len(ids))):
            raise ValueError(f"{path}: 'names' ids must be 0..{len(ids) - 1}, got {ids}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ValueError(f"{path}: 'names' must be a list or a mapping")


def _split_images(root: Path, entry: Any, yaml_path: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += list_images(p)
        elif p.is_file() and p.suffix == ".txt":
            for _, line in read_lines(p, "YOLO image list"):
                q = Path(line[2:] if line.startswith("./") else line)
                out.append(q if q.is_absolute() else p.parent / q)
        else:
            raise FileNotFoundError(f"{yaml_path}: split entry not found: {p}")
    return out


def read_yolo(path: str | os.PathLike, split: str | None = None,
              class_names: Sequence[str] | None = None) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read a YOLO dataset (a folder with ``images/`` and ``labels/``, or its ``data.yaml``).

    ``split``: a key of ``data.yaml`` (``train``/``val``/``test``) naming an image folder, an image
    list ``.txt`` or a list of those (relative to the yaml's ``path``, else its folder); None reads
    every image under ``images/``. ``class_names`` overrides the yaml's ``names``; without either,
    classes are named ``class0..`` up to the largest id seen. Labels are ``class + 1``; boxes are
    XYXY exclusive-end pixels from the normalised centre/size (image sizes read from headers).
    """
    path = Path(path)
    if path.is_file():
        yaml_path, data = path, _load_yaml(path)
    else:
        require_dir(path, "YOLO dataset folder")
        yaml_path = next((path / n for n in _YAML_NAMES if (path / n).is_file()), path / _YAML_NAMES[0])
        data = _load_yaml(yaml_path) if yaml_path.is_file() else {}
    root = yaml_path.parent
    if data.get("path"):
        p = Path(str(data["path"]))
        root = p if p.is_absolute() else (root / p)
    if split is None:
        images = list_images(root / "images")
    else:
        if split not in data:
            raise ValueError(f"{yaml_path}: no split {split!r} (keys: {sorted(data)})")
        images = _split_images(root, data[split], yaml_path)
    names = list(class_names) if class_names is not None else _names(data, yaml_path)

    sizes = image_sizes(images, desc="YOLO image sizes")
    records, dropped, max_cls = [], 0, -1
    for n, (img, (w, h)) in enumerate(zip(images, sizes), 1):
        lab_path = label_path(img)
        boxes, classes = [], []
        if lab_path.is_file():
            for lineno, line in read_lines(lab_path, "YOLO label file"):
                vals = parse_numbers(line.split(), lab_path, lineno, min_count=5)
                cls = vals[0]
                if cls < 0 or not cls.is_integer():
                    raise ValueError(f"{lab_path}:{lineno}: class id must be a non-negative integer, got {cls}")
                if names is not None and cls >= len(names):
                    raise ValueError(f"{lab_path}:{lineno}: class id {int(cls)} but only {len(names)} names")
                if len(vals) == 5:
                    cx, cy, bw, bh = vals[1:]
                    box = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]
                elif len(vals) % 2 == 1 and len(vals) >= 7:
                    xs, ys = vals[1::2], vals[2::2]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                else:
                    raise ValueError(f"{lab_path}:{lineno}: expected 'class cx cy w h' or a polygon "
                                     f"'class x1 y1 x2 y2 x3 y3 ...', got {len(vals)} values")
                boxes.append(np.array(box) * (w, h, w, h))
                classes.append(int(cls))
                max_cls = max(max_cls, int(cls))
        arr = np.array(boxes, np.float64).reshape(-1, 4)
        arr, keep, per_box = clean_boxes(arr, w, h, str(lab_path), {"labels": np.array(classes, np.int64) + 1})
        dropped += int((~keep).sum())
        records.append(DetectionRecord(image_path=str(img), width=w, height=h, boxes=arr,
                                       labels=per_box["labels"], image_id=n))
    if names is None:
        names = [f"class{k}" for k in range(max_cls + 1)]
    log_summary(f"YOLO {yaml_path.parent} ({split or 'all'})", records, dropped)
    return records, {k + 1: name for k, name in enumerate(names)}


def write_yolo(out_dir: str | os.PathLike, records: Sequence[DetectionRecord], class_names: Sequence[str]) -> None:
    """Write ``labels/<...>.txt`` and ``data.yaml`` (Ultralytics layout) for ``records``.

    Images must already be under ``out_dir/images``. Each box (XYXY exclusive end, pixels, label
    1..K) becomes ``"class cx cy w h"`` normalised by the record's width/height, class = label - 1.
    ``data.yaml`` lists ``names`` as ``{id: name}`` and points ``train``/``val`` at ``images`` (no
    ``path`` key, so tools resolve it against the yaml's folder). Files are written atomically.
    """
    import yaml

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    for rec in records:
        try:
            rel = Path(rec.image_path).resolve().relative_to(images_dir.resolve())
        except ValueError:
            raise ValueError(f"{rec.image_path}: not under {images_dir} (write_yolo expects the images there)") from None
        w, h = float(rec.width), float(rec.height)
        if w <= 0 or h <= 0:
            raise ValueError(f"{rec.image_path}: record has no image size ({rec.width}x{rec.height})")
        lines = []
        for box, lab in zip(rec.boxes.astype(np.float64), rec.labels):
            if not 1 <= int(lab) <= len(class_names):
                raise ValueError(f"{rec.image_path}: label {int(lab)} outside 1..{len(class_names)}")
            x0, y0, x1, y1 = box
            vals = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
            lines.append(f"{int(lab) - 1} " + " ".join(f"{v:.10g}" for v in vals) + "\n")
        atomic_write_text(out_dir / "labels" / rel.with_suffix(".txt"), "".join(lines))
    data = {"train": "images", "val": "images", "nc": len(class_names),
            "names": {k: str(n) for k, n in enumerate(class_names)}}
    atomic_write_text(out_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    logger.info("wrote YOLO labels for %d images to %s", len(records), out_dir)
