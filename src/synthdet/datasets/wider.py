"""WIDER Face: ``wider_face_*_bbx_gt.txt`` reader and the official easy/medium/hard lists.

On-disk layout::

    wider_face_split/wider_face_train_bbx_gt.txt   (and _val_; test: wider_face_test_filelist.txt)
    WIDER_train/images/0--Parade/0_Parade_marchingband_1_5.jpg
    eval_tools/ground_truth/wider_{easy,medium,hard}_val.mat   (official evaluation kit)

The gt text repeats: image path (relative to ``WIDER_<split>/images``), face count, then one line
per face ``x y w h blur expression illumination invalid occlusion pose`` (integers, pixels). An
image with 0 faces still has one all-zero dummy line. Boxes become XYXY ``(x, y, x + w, y + h)``;
zero-size boxes are dropped.

The official protocol scores each difficulty on the subset of faces listed in that level's
``gt_list`` (1-based indices into the image's faces in file order); the other faces are ignored
(a detection on them is neither a true nor a false positive, like VOC ``difficult``). With
``eval_dir`` the reader marks, per kept box, ``extra["easy"]``, ``extra["medium"]``,
``extra["hard"]`` (bool, True = the face counts at that level); :func:`wider_ignore` turns
that into the ``difficult`` mask an AP evaluator takes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import clean_boxes, image_sizes, log_summary, parse_numbers, read_counted_blocks, read_lines, require_dir, require_file
from .records import DetectionRecord

logger = logging.getLogger(__name__)

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
LEVELS = ("easy", "medium", "hard")


def _parse_gt(path: Path) -> list[tuple[str, np.ndarray]]:
    """``(relative image path, faces int64 [N, 10])`` per image, in file order (dummy lines removed)."""
    out = []
    for name, count, count_line, block in read_counted_blocks(path, "WIDER Face gt file", dummy_line_on_zero=True):
        faces = []
        for ln, line in block:
            if len(line.split()) == 1 and Path(line).suffix:
                raise ValueError(f"{path}:{ln}: expected a face line, found image {line!r} "
                                 f"(face count {count} on line {count_line} too large?)")
            faces.append(parse_numbers(line.split(), path, ln, count=10))
        out.append((name, np.array(faces, np.float64).reshape(-1, 10)))
    return out


def _cells(arr: Any) -> list[Any]:
    """The elements of a MATLAB cell array as scipy loads it (an object array of any shape)."""
    return list(np.asarray(arr, dtype=object).reshape(-1))


def _cell_strings(arr: Any) -> list[str]:
    """A cell array of char arrays (``array(['name'])`` elements) -> list of str."""
    return [str(np.asarray(v).reshape(-1)[0]) for v in _cells(arr)]


def read_wider_eval_mat(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read an official ``wider_{easy,medium,hard}_val.mat`` (or any file with ``gt_list``).

    Returns ``{"<event>/<file stem>": 1-based face indices that count at this level}``. The file
    holds cells ``event_list`` (events), ``file_list`` (per event: image stems) and ``gt_list``
    (per event, per image: a column of indices); event/file lists are taken from the file itself,
    else from ``wider_face_val.mat`` beside it.
    """
    from scipy.io import loadmat

    path = Path(path)
    require_file(path, "WIDER Face evaluation file")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several types for broken files
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None
    if "gt_list" not in mat:
        raise ValueError(f"{path}: no 'gt_list' variable")
    lists = mat
    if "event_list" not in mat or "file_list" not in mat:
        lists = loadmat(str(require_file(path.parent / "wider_face_val.mat", "WIDER Face wider_face_val.mat")))
    events = _cell_strings(lists["event_list"])
    files, gts = _cells(lists["file_list"]), _cells(mat["gt_list"])
    if not (len(events) == len(files) == len(gts)):
        raise ValueError(f"{path}: {len(events)} events, {len(files)} file lists, {len(gts)} gt lists")
    out: dict[str, list[int]] = {}
    for event, names, gt in zip(events, files, gts):
        names, gt = _cell_strings(names), _cells(gt)
        if len(names) != len(gt):
            raise ValueError(f"{path}: event {event!r} has {len(names)} files but {len(gt)} gt entries")
        for name, idx in zip(names, gt):
            out[f"{event}/{name}"] = [int(v) for v in np.asarray(idx, np.float64).reshape(-1)]
    return out


def read_wider(root: str | os.PathLike, split: str = "train", eval_dir: str | os.PathLike | None = None,
               drop_invalid: bool = False) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read WIDER Face ``train``, ``val`` or ``test`` (no boxes) into one-class (``face``) records.

    ``extra``: per kept box int arrays ``blur``, ``expression``, ``illumination``, ``invalid``,
    ``occlusion``, ``pose``; ``face_index`` (1-based position in the gt file); with ``eval_dir``
    (folder of ``wider_{easy,medium,hard}_val.mat``) bool ``easy``/``medium``/``hard``.
    ``drop_invalid`` removes faces flagged ``invalid``. Zero-size boxes are always dropped.
    """
    root = Path(root)
    require_dir(root, "WIDER Face root")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown WIDER Face split {split!r}; expected train, val or test")
    images_dir = root / f"WIDER_{split}" / "images"
    if split == "test":
        list_file = root / "wider_face_split" / "wider_face_test_filelist.txt"
        entries = [(line, np.zeros((0, 10))) for _, line in read_lines(list_file, "WIDER Face test file list")]
    else:
        entries = _parse_gt(root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt")
    levels: dict[str, dict[str, list[int]]] = {}
    if eval_dir is not None:
        for level in LEVELS:
            levels[level] = read_wider_eval_mat(Path(eval_dir) / f"wider_{level}_{split}.mat")

    paths = [images_dir / name for name, _ in entries]
    sizes = image_sizes(paths, desc="WIDER Face image sizes")
    records, dropped, dropped_invalid, unlisted = [], 0, 0, 0
    for n, ((name, faces), path, (w, h)) in enumerate(zip(entries, paths, sizes), 1):
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
        per_box: dict[str, np.ndarray] = {a: faces[:, 4 + k].astype(np.int64) for k, a in enumerate(ATTRIBUTES)}
        per_box["face_index"] = np.arange(1, len(faces) + 1, dtype=np.int64)
        key = str(Path(name).with_suffix("").as_posix())
        for level, table in levels.items():
            flags = np.zeros(len(faces), bool)
            if key in table:
                idx = np.asarray(table[key], np.int64)
                if len(idx) and (idx.min() < 1 or idx.max() > len(faces)):
                    raise ValueError(f"{eval_dir}: {level} list for {name} indexes face {idx.max()} "
                                     f"of {len(faces)} (gt file and evaluation files disagree)")
                flags[idx - 1] = True
            else:
                unlisted += 1
            per_box[level] = flags
        if drop_invalid:
            ok = per_box["invalid"] == 0
            dropped_invalid += int((~ok).sum())
            boxes, per_box = boxes[ok], {k: v[ok] for k, v in per_box.items()}
        boxes, keep, per_box = clean_boxes(boxes, w, h, f"WIDER {name}", per_box)
        dropped += int((~keep).sum())
        records.append(DetectionRecord(image_path=str(path), width=w, height=h, boxes=boxes,
                                       labels=np.ones(len(boxes), np.int64), image_id=n, extra=per_box))
    if unlisted:
        logger.warning("WIDER Face %s: %d (image, level) pairs missing from the evaluation files", split, unlisted)
    if dropped_invalid:
        logger.info("WIDER Face %s: %d invalid faces dropped", split, dropped_invalid)
    log_summary(f"WIDER Face {root} ({split})", records, dropped)
    return records, {1: "face"}


def wider_ignore(record: DetectionRecord, level: str) -> np.ndarray:
    """Bool ``[N]``: True for faces the official ``level`` evaluation ignores (pass as ``difficult``)."""
    if level not in LEVELS:
        raise ValueError(f"unknown WIDER Face level {level!r}; expected one of {LEVELS}")
    if level not in record.extra:
        raise ValueError(f"{record.image_path}: no '{level}' flags (read the dataset with eval_dir=...)")
    return ~np.asarray(record.extra[level], bool)
