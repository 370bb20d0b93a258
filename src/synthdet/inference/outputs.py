"""``synthdet predict``'s outputs: drawn images, COCO-format detections, YOLO txt files.

The output folder holds ``images/<name>.jpg`` (boxes drawn), ``detections.json`` (a COCO results
list: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, what pycocotools'
``COCO.loadRes`` reads), ``images.json`` (a COCO dataset without annotations: the ``images`` the
ids refer to, with ``file_name``, ``width``, ``height``, and the ``categories``) and with
``save_txt`` ``labels/<name>.txt`` (YOLO: ``class cx cy w h score``, normalised, class = label - 1).
``skipped.json`` lists each input left out and why (``{"file", "problem"}``). While the run goes,
``detections.jsonl`` holds one line per image done (``{"image": <images entry>, "detections":
[<results entries>]}``), flushed to the disk batch by batch: a killed run loses nothing done, and
its rerun with the same settings resumes from it. The json files above are written at the end.
It is a folder synthdet owns (``.synthdet`` marker, writer lock): a folder holding files synthdet
did not write is refused, so nothing of the user's is ever overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..utils.errors import UserError
from ..utils.files import atomic_write_json, atomic_write_text
from ..utils.image import write_image
from ..utils.inputs import BadFile
from ..utils.viz import draw_boxes
from .predictor import Detections, Detector, Frame, Source, _chunks, count_frames, iter_frames

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


JSONL = "detections.jsonl"


def predict_to_folder(detector: Detector, sources: Sequence[Source], out: str | Path, batch_size: int = 8,
                      save_txt: bool = False, draw: bool = True, force: bool = False, video_stride: int = 1,
                      bad: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
                      progress: bool = True) -> dict[str, int]:
    """Predict every frame of ``sources`` and write the outputs of the module docstring into ``out``.

    A file that cannot be read (``bad``: ``{path: problem}`` found by the up-front check, or one
    failing to decode) is left out and listed in ``skipped.json``; the rest goes on. Each batch's
    results are appended to ``detections.jsonl`` and flushed as they are made, so a killed run
    keeps them: with the same ``settings`` (what decides the results) a rerun finishes what is
    left, otherwise it starts over and says so. Returns ``{"images", "detections", "skipped",
    "resumed"}``. Refuses an ``out`` synthdet's ``predict`` did not write (unless ``force``) and a
    second concurrent writer.
    """
    from ..utils.outdir import check_ours, locked

    out = Path(out)
    check_ours(out, force, writer="predict", hint="choose another --out (it is never overwritten), or --force")
    with locked(out):
        check_ours(out, force, writer="predict")
        out.mkdir(parents=True, exist_ok=True)
        entries = _start(out, dict(settings) if settings is not None else None)
        skipped: list[BadFile] = []
        frames = iter_frames(sources, video_stride, skipped=skipped, bad=bad,
                             done={e["image"]["file_name"] for e in entries})
        total = count_frames(sources, video_stride)
        resumed = len(entries)
        try:
            with open(out / JSONL, "a") as log_file:
                batches = _progress(_chunks(frames, batch_size), None if total is None else total - resumed, progress)
                for chunk in batches:
                    new = _predict_chunk(detector, chunk, skipped)
                    for frame, det in new:
                        entries.append(_write_one(detector, out, frame, det, len(entries) + 1, draw, save_txt))
                    _append(log_file, entries[len(entries) - len(new):])
            _finish(detector, out, entries, skipped, settings)
        except OSError as e:
            where = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
            raise UserError(f"{where}; predict stopped: the {len(entries)} images done so far are kept in "
                            f"{out / JSONL} (free the space and rerun the same command to finish)") from e
    stats = {"images": len(entries), "detections": sum(len(e["detections"]) for e in entries),
             "skipped": len(skipped), "resumed": resumed}
    logger.info("predicted %d images (%d detections, %d skipped) into %s", stats["images"], stats["detections"],
                stats["skipped"], out)
    return stats


def _start(out: Path, settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The entries of an interrupted run with the same ``settings`` (to resume), else ``[]`` after
    removing what an earlier ``predict`` wrote; marks the folder as a run in progress."""
    from ..utils.outdir import read_marker, write_marker

    marker = read_marker(out) or {}
    entries = _read_jsonl(out / JSONL) if marker.get("complete") is False else []
    if entries and settings is not None and marker.get("settings") == settings:
        logger.info("%s: resuming an interrupted predict: %d images already done", out, len(entries))
        atomic_write_text(out / JSONL, "".join(json.dumps(e) + "\n" for e in entries))  # drop a cut-off line
        return entries
    if entries:
        changed = sorted(k for k in set(settings or {}) | set(marker.get("settings") or {})
                         if (settings or {}).get(k) != (marker.get("settings") or {}).get(k))
        logger.warning("%s: the interrupted predict there used other settings (%s); starting over", out,
                       ", ".join(changed) or "unknown")
    _remove_previous(out)
    write_marker(out, "predict", complete=False, settings=settings)
    return []


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete entries of a results log (a line cut off by a kill is dropped)."""
    entries = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    for line in text.splitlines(keepends=True):
        try:
            entry = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            entry = None
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), dict)
                and isinstance(entry.get("detections"), list) and "file_name" in entry["image"]):
            break
        entries.append(entry)
    return entries


def _predict_chunk(detector: Detector, chunk: list[Frame], skipped: list[BadFile]) -> list[tuple[Frame, Detections]]:
    """Detections of a batch; if the batch fails, image by image, leaving out (and listing) the
    images the detector fails on."""
    try:
        return list(zip(chunk, detector.predict_arrays([f.image for f in chunk])))
    except (RuntimeError, ValueError) as e:
        if len(chunk) == 1:
            skipped.append(BadFile(chunk[0].source, f"the detector failed on it ({e.__class__.__name__}: {e})"))
            return []
        return [pair for f in chunk for pair in _predict_chunk(detector, [f], skipped)]


def _write_one(detector: Detector, out: Path, frame: Frame, det: Detections, image_id: int, draw: bool,
               save_txt: bool) -> dict[str, Any]:
    """Write one frame's drawn image / YOLO txt; return its results-log entry."""
    h, w = frame.image.shape[:2]
    if draw:
        write_image(out / "images" / f"{frame.name}.jpg",
                    draw_boxes(frame.image, det["boxes"], det["labels"], det["scores"], detector.class_names,
                               thickness=max(1, round(max(h, w) / 320))), quality=90)
    if save_txt:
        atomic_write_text(out / "labels" / f"{frame.name}.txt", yolo_lines(det, w, h))
    image = {"id": image_id, "file_name": frame.source, "name": frame.name, "width": w, "height": h}
    return {"image": image, "detections": coco_results(image_id, det)}


def _append(log_file: Any, entries: list[dict[str, Any]]) -> None:
    """Append entries to the results log and push them to the disk (a kill keeps them)."""
    if entries:
        log_file.write("".join(json.dumps(e) + "\n" for e in entries))
        log_file.flush()
        os.fsync(log_file.fileno())


def _finish(detector: Detector, out: Path, entries: list[dict[str, Any]], skipped: list[BadFile],
            settings: Mapping[str, Any] | None) -> None:
    from ..utils.outdir import write_marker

    cats = [{"id": k, "name": n} for k, n in sorted(detector.class_names.items())]
    atomic_write_json(out / "images.json", {"images": [e["image"] for e in entries], "categories": cats})
    atomic_write_json(out / "detections.json", [d for e in entries for d in e["detections"]])
    atomic_write_json(out / "skipped.json", [b.as_dict() for b in skipped])
    write_marker(out, "predict", complete=True, settings=dict(settings) if settings is not None else None)


def _remove_previous(out: Path) -> None:
    """Remove what an earlier ``predict`` into ``out`` wrote (the files its ``images.json`` and
    its results log name)."""
    named = []
    try:
        old = json.loads((out / "images.json").read_text())["images"]
        named += old if isinstance(old, list) else []
    except (OSError, ValueError, KeyError, TypeError):
        pass
    named += [e["image"] for e in _read_jsonl(out / JSONL)]
    for entry in named:
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if name and "/" not in name and name not in (".", ".."):
            (out / "images" / f"{name}.jpg").unlink(missing_ok=True)
            (out / "labels" / f"{name}.txt").unlink(missing_ok=True)
    for f in ("detections.json", "images.json", "skipped.json", JSONL):
        (out / f).unlink(missing_ok=True)


def _progress(chunks: Iterator[list[Frame]], total: int | None, enabled: bool) -> Iterator[list[Frame]]:
    """``chunks`` with a progress bar counting images (tqdm writes to stderr)."""
    if not enabled:
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="predict", unit="img") as bar:
        for chunk in chunks:
            yield chunk
            bar.update(len(chunk))


def class_names_arg(text: str | None) -> Mapping[int, str] | None:
    """``"bird,cat"`` -> ``{1: "bird", 2: "cat"}``; None stays None."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ValueError(f"--names {text!r}: empty class name")
    return {i + 1: n for i, n in enumerate(names)}
