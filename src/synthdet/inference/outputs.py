"""``synthdet predict``'s outputs: drawn images, COCO-format detections, YOLO txt files.

The output folder holds ``images/<name>.jpg`` (boxes drawn), ``detections.json`` (a COCO results
list: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, what pycocotools'
``COCO.loadRes`` reads), ``images.json`` (a COCO dataset without annotations: the ``images`` the
ids refer to, with ``file_name``, ``width``, ``height``, and the ``categories``) and with
``save_txt`` ``labels/<name>.txt`` (YOLO: ``class cx cy w h score``, normalised, class = label - 1).
It is a folder synthdet owns (``.synthdet`` marker, writer lock): a folder holding files synthdet
did not write is refused, so nothing of the user's is ever overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..utils.files import atomic_write_json, atomic_write_text
from ..utils.image import write_image
from ..utils.viz import draw_boxes
from .predictor import Detections, Detector, Frame, _chunks

logger = logging.getLogger(__name__)


def coco_results(image_id: int, det: Detections) -> list[dict]:
    """COCO results entries of one image (XYXY boxes -> ``[x, y, w, h]``; category = label)."""
    out = []
    for (x0, y0, x1, y1), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        out.append({"image_id": int(image_id), "category_id": int(lab), "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(s)})
    return out


def yolo_lines(det: Detections, width: int, height: int) -> str:
    """YOLO txt of one image: ``class cx cy w h score`` per box, normalised, class = label - 1."""
    lines = []
    for (x0, y0, x1, y1), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        vals = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height, s)
        lines.append(f"{int(lab) - 1} " + " ".join(f"{v:.6g}" for v in vals) + "\n")
    return "".join(lines)


def predict_to_folder(detector: Detector, frames: Iterable[Frame], out: str | Path, batch_size: int = 8,
                      save_txt: bool = False, draw: bool = True, force: bool = False,
                      total: int | None = None, progress: bool = True) -> dict[str, int]:
    """Predict every frame and write the outputs described in the module docstring into ``out``.

    Returns ``{"images": n, "detections": d}``. Refuses an ``out`` synthdet's ``predict`` did not
    write (unless ``force``) and a second concurrent writer.
    """
    from ..utils.outdir import check_ours, locked, write_marker

    out = Path(out)
    check_ours(out, force, writer="predict", hint="choose another --out (it is never overwritten), or --force")
    with locked(out):
        check_ours(out, force, writer="predict")
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "predict")
        _remove_previous(out)
        images, results = [], []
        for frame, det in _progress(_predict_frames(detector, frames, batch_size), total, progress):
            h, w = frame.image.shape[:2]
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": frame.source, "name": frame.name, "width": w, "height": h})
            results += coco_results(image_id, det)
            if draw:
                write_image(out / "images" / f"{frame.name}.jpg",
                            draw_boxes(frame.image, det["boxes"], det["labels"], det["scores"],
                                       detector.class_names, thickness=max(1, round(max(h, w) / 320))), quality=90)
            if save_txt:
                atomic_write_text(out / "labels" / f"{frame.name}.txt", yolo_lines(det, w, h))
        cats = [{"id": k, "name": n} for k, n in sorted(detector.class_names.items())]
        atomic_write_json(out / "images.json", {"images": images, "categories": cats})
        atomic_write_json(out / "detections.json", results)
    logger.info("predicted %d images (%d detections) into %s", len(images), len(results), out)
    return {"images": len(images), "detections": len(results)}


def _remove_previous(out: Path) -> None:
    """Remove what an earlier ``predict`` into ``out`` wrote (the files its ``images.json`` names)."""
    import json

    try:
        old = json.loads((out / "images.json").read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for entry in old if isinstance(old, list) else []:
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if name and "/" not in name and name not in (".", ".."):
            (out / "images" / f"{name}.jpg").unlink(missing_ok=True)
            (out / "labels" / f"{name}.txt").unlink(missing_ok=True)
    for f in ("detections.json", "images.json"):
        (out / f).unlink(missing_ok=True)


def _predict_frames(detector: Detector, frames: Iterable[Frame], batch_size: int) -> Iterator[tuple[Frame, Detections]]:
    for chunk in _chunks(frames, batch_size):
        yield from zip(chunk, detector.predict_arrays([f.image for f in chunk]))


def _progress(it: Iterator, total: int | None, enabled: bool) -> Iterator:
    if not enabled:
        return it
    from tqdm import tqdm

    return iter(tqdm(it, total=total, desc="predict", unit="img"))  # tqdm writes to stderr


def class_names_arg(text: str | None) -> Mapping[int, str] | None:
    """``"bird,cat"`` -> ``{1: "bird", 2: "cat"}``; None stays None."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ValueError(f"--names {text!r}: empty class name")
    return {i + 1: n for i, n in enumerate(names)}
