"""CUB-200-2011 (Caltech-UCSD Birds): one box per image.

On-disk layout (``CUB_200_2011/``)::

    images.txt               "<image_id> <relative path under images/>"
    bounding_boxes.txt       "<image_id> <x> <y> <width> <height>"  (floats, pixels)
    train_test_split.txt     "<image_id> <is_training_image>"       (1 train, 0 test)
    classes.txt              "<class_id> <NNN.Species_name>"
    image_class_labels.txt   "<image_id> <class_id>"
    images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg

Boxes ``x y w h`` become XYXY ``(x, y, x + w, y + h)``. The paper detects "bird" (one class); the
per-species labelling is an option.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ._common import carve_split, clean_boxes, image_sizes, log_summary, parse_numbers, read_lines, require_dir
from .records import DetectionRecord

logger = logging.getLogger(__name__)


def _id_table(path: Path, what: str) -> dict[int, str]:
    """``{id: rest of the line}`` of a two-column CUB index file ("<id> <value>")."""
    table: dict[int, str] = {}
    for lineno, line in read_lines(path, what):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<id> <value>', got {line!r}")
        try:
            key = int(parts[0])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected an integer id, got {parts[0]!r}") from None
        if key in table:
            raise ValueError(f"{path}:{lineno}: duplicate id {key}")
        table[key] = parts[1].strip()
    return table


def _read_test_ids(test_ids: str | os.PathLike | Sequence[int], name_to_id: dict[str, int]) -> list[int]:
    """Ids from a list, or from a file of image ids or relative image paths (one per line)."""
    if isinstance(test_ids, (str, os.PathLike)):
        path = Path(test_ids)
        out = []
        for lineno, line in read_lines(path, "CUB test list"):
            tok = line.split()[0]
            if tok.isdigit():
                out.append(int(tok))
            elif tok in name_to_id:
                out.append(name_to_id[tok])
            else:
                raise ValueError(f"{path}:{lineno}: {tok!r} is neither an image id nor a path in images.txt")
        return out
    return [int(i) for i in test_ids]


def read_cub(root: str | os.PathLike, split: str = "train", one_class: bool = True, val_size: int = 0,
             seed: int = 0, test_ids: str | os.PathLike | Sequence[int] | None = None,
             ) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read CUB-200-2011 into records (one bird box per image).

    ``split``: ``train``, ``val``, ``trainval``, ``test`` or ``all``. Test images are the official
    ``train_test_split.txt`` test set, or ``test_ids`` (image ids, or a file of ids / relative image
    paths) when given, every other image then being trainval; ``val`` is a seeded draw of
    ``val_size`` trainval images (0 = no val, the official split). The paper's split is 10345 / 1000
    / 443 with a custom test list: ``val_size=1000, test_ids=<its list>``.
    ``one_class=True`` labels every box 1 ("bird"); otherwise labels are the 200 species ids.
    ``extra["species"]``: the species id (1..200); ``image_id`` is CUB's image id.
    """
    root = Path(root)
    require_dir(root, "CUB root")
    images = _id_table(root / "images.txt", "CUB images.txt")
    bboxes = _read_boxes(root / "bounding_boxes.txt")
    is_train = _id_table(root / "train_test_split.txt", "CUB train_test_split.txt")
    labels = _id_table(root / "image_class_labels.txt", "CUB image_class_labels.txt")
    classes = _id_table(root / "classes.txt", "CUB classes.txt")
    species_names = {k: v.split(".", 1)[-1] for k, v in classes.items()}
    for name, table in (("bounding_boxes.txt", bboxes), ("train_test_split.txt", is_train),
                        ("image_class_labels.txt", labels)):
        missing = sorted(set(images) - set(table))
        if missing:
            raise ValueError(f"{root / name}: no entry for image ids {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    ids = sorted(images)
    if test_ids is None:
        test = [i for i in ids if is_train[i] == "0"]
    else:
        test = _read_test_ids(test_ids, {v: k for k, v in images.items()})
        unknown = sorted(set(test) - set(images))
        if unknown:
            raise ValueError(f"test_ids not in {root / 'images.txt'}: {unknown[:5]}")
    chosen = carve_split(ids, split, val_size, seed, test)

    paths = [root / "images" / images[i] for i in chosen]
    sizes = image_sizes(paths, desc="CUB image sizes")
    records, dropped = [], 0
    for i, path, (w, h) in zip(chosen, paths, sizes):
        x, y, bw, bh = bboxes[i]
        try:
            species = int(labels[i])
        except ValueError:
            raise ValueError(f"{root / 'image_class_labels.txt'}: image {i} has a non-integer class {labels[i]!r}") from None
        if species not in species_names:
            raise ValueError(f"{root / 'image_class_labels.txt'}: image {i} has class {species} not in classes.txt")
        box = np.array([[x, y, x + bw, y + bh]], np.float64)
        box, keep, _ = clean_boxes(box, w, h, f"CUB image {i} ({path})")
        dropped += int((~keep).sum())
        records.append(DetectionRecord(
            image_path=str(path), width=w, height=h, boxes=box,
            labels=np.full(len(box), 1 if one_class else species, np.int64), image_id=i,
            extra={"species": species},
        ))
    log_summary(f"CUB {root} ({split})", records, dropped)
    names = {1: "bird"} if one_class else dict(sorted(species_names.items()))
    return records, names


def _read_boxes(path: Path) -> dict[int, list[float]]:
    """``{image id: [x, y, w, h]}`` from ``bounding_boxes.txt``."""
    out: dict[int, list[float]] = {}
    for lineno, line in read_lines(path, "CUB bounding_boxes.txt"):
        vals = parse_numbers(line.split(), path, lineno, count=5)
        key = int(vals[0])
        if key in out:
            raise ValueError(f"{path}:{lineno}: duplicate image id {key}")
        if vals[3] < 0 or vals[4] < 0:
            raise ValueError(f"{path}:{lineno}: negative box size")
        out[key] = vals[1:]
    return out
