"""Stanford Cars: devkit ``.mat`` annotations -> one box per image.

On-disk layout (as distributed, and as torchvision's ``StanfordCars`` expects)::

    devkit/cars_train_annos.mat          struct array 'annotations' with fields
                                         bbox_x1 bbox_y1 bbox_x2 bbox_y2 class fname
    devkit/cars_meta.mat                 'class_names': 1x196 cell of model names
    cars_test_annos_withlabels.mat       same struct for the test images (here or in devkit/)
    cars_train/00001.jpg   cars_test/00001.jpg

The all-in-one ``cars_annos.mat`` (fields ``relative_im_path``, bbox_*, ``class``, ``test``; images
under ``car_ims/``) is read when the devkit files are absent. Coordinates are 1-based inclusive
pixels, so our XYXY exclusive-end box is ``(x1 - 1, y1 - 1, x2, y2)``. The paper detects "car"
(one class) with 7144 / 1000 / 8041 train / val / test images: val is a seeded draw of
``val_size`` official training images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._common import carve_split, clean_boxes, image_sizes, log_summary, require_dir, require_file
from .records import DetectionRecord

logger = logging.getLogger(__name__)

_BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _unwrap(value: Any) -> Any:
    """MATLAB values as scipy loads them (``[[5]]``, ``array(['a.jpg'])``) -> Python scalars/str."""
    while isinstance(value, np.ndarray):
        if value.size != 1:
            if value.size == 0:
                return None
            raise ValueError(f"expected a scalar, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _load_mat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    require_file(path, "Stanford Cars annotation file")
    try:
        return loadmat(str(path))
    except Exception as e:  # scipy raises several types for broken files
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None


def _annotations(path: Path) -> list[dict[str, Any]]:
    """The ``annotations`` struct array of a cars ``.mat`` file as a list of plain dicts."""
    mat = _load_mat(path)
    if "annotations" not in mat:
        raise ValueError(f"{path}: no 'annotations' variable (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    annos = mat["annotations"]
    fields = annos.dtype.names or ()
    missing = [f for f in _BOX_FIELDS if f not in fields]
    if missing:
        raise ValueError(f"{path}: annotations lack fields {missing} (have {list(fields)})")
    rows = []
    for k, entry in enumerate(annos.reshape(-1)):
        try:
            rows.append({f: _unwrap(entry[f]) for f in fields})
        except ValueError as e:
            raise ValueError(f"{path}: annotation {k + 1}: {e}") from None
    return rows


def _class_names(root: Path) -> dict[int, str] | None:
    for path in (root / "devkit" / "cars_meta.mat", root / "cars_meta.mat", root / "cars_annos.mat"):
        if path.is_file():
            mat = _load_mat(path)
            if "class_names" in mat:
                return {k + 1: str(_unwrap(v)) for k, v in enumerate(mat["class_names"].reshape(-1))}
    return None


def read_cars(root: str | os.PathLike, split: str = "train", one_class: bool = True, val_size: int = 0,
              seed: int = 0) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read Stanford Cars into records (one car box per image).

    ``split``: ``train`` (official train minus val), ``val`` (a seeded draw of ``val_size``
    official training images; the paper uses 1000), ``trainval``, ``test``, ``all``.
    ``one_class=True`` labels every box 1 ("car"); otherwise the 196 model classes (names from
    ``cars_meta.mat``). ``extra["car_class"]``: the model class (1..196) when annotated.
    """
    root = Path(root)
    require_dir(root, "Stanford Cars root")
    train_mat = root / "devkit" / "cars_train_annos.mat"
    rows: list[tuple[Path, dict[str, Any], bool]] = []  # (image path, annotation, is_test)
    if train_mat.is_file() or not (root / "cars_annos.mat").is_file():
        rows += [(root / "cars_train" / str(a["fname"]), a, False) for a in _annotations(train_mat)]
        if split not in ("train", "val", "trainval"):
            test_mat = next((p for p in (root / "cars_test_annos_withlabels.mat",
                                         root / "devkit" / "cars_test_annos_withlabels.mat",
                                         root / "devkit" / "cars_test_annos.mat") if p.is_file()),
                            root / "cars_test_annos_withlabels.mat")
            rows += [(root / "cars_test" / str(a["fname"]), a, True) for a in _annotations(test_mat)]
    else:
        for a in _annotations(root / "cars_annos.mat"):
            rows.append((root / str(a["relative_im_path"]), a, bool(a.get("test") or 0)))
    ids = list(range(len(rows)))
    chosen = carve_split(ids, split, val_size, seed, [i for i in ids if rows[i][2]])

    names_all = _class_names(root)
    paths = [rows[i][0] for i in chosen]
    sizes = image_sizes(paths, desc="Stanford Cars image sizes")
    records, dropped = [], 0
    for n, (i, path, (w, h)) in enumerate(zip(chosen, paths, sizes), 1):
        a = rows[i][1]
        car_class = a.get("class")
        if not one_class and car_class is None:
            raise ValueError(f"{path}: no 'class' in its annotation (per-model labels need the labelled test file)")
        x1, y1, x2, y2 = (float(a[f]) for f in _BOX_FIELDS)
        box = np.array([[x1 - 1, y1 - 1, x2, y2]], np.float64)
        box, keep, _ = clean_boxes(box, w, h, str(path))
        dropped += int((~keep).sum())
        extra = {} if car_class is None else {"car_class": int(car_class)}
        records.append(DetectionRecord(
            image_path=str(path), width=w, height=h, boxes=box,
            labels=np.full(len(box), 1 if one_class else int(car_class), np.int64), image_id=n, extra=extra,
        ))
    log_summary(f"Stanford Cars {root} ({split})", records, dropped)
    if one_class:
        return records, {1: "car"}
    if names_all is None:
        top = max((int(r.labels.max()) for r in records if len(r.labels)), default=0)
        names_all = {k: f"class{k}" for k in range(1, top + 1)}
    return records, names_all
