"""The inputs of ``synthdet train``: real labelled data in any format the readers take, its class
names matched to the object folders, the up-front image check (issue 23's
:func:`~synthdet.datasets.check.check_records`) and the held-out validation part.

Formats are told from the path: a ``.json`` file is COCO, a ``.yaml`` / ``.yml`` file a YOLO
``data.yaml``, a folder holding ``Annotations/`` Pascal VOC, a folder holding ``images/`` (or a
``data.yaml``) YOLO. A YOLO ``data.yaml`` or a VOC folder is read with the split of its role
(``train`` / ``val`` / ``test``) when it has one; a ``data.yaml`` given as ``--train`` also gives
the validation and test splits it lists, unless ``--val`` / ``--test`` are given.

Class names: the object folder's classes (``sources.objects.discover_classes``: class subfolders,
or a flat folder = one class) and the categories of the data must be the same names; a flat
folder takes the name of the data's only category. Labels are renumbered to the object folders'
order (label k = the k-th class subfolder, sorted by name), so the synthetic and the real labels
agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..datasets.records import DetectionRecord
from ..utils.errors import UserError
from ..utils.inputs import BadFile

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2  # without --val: this share of the labelled images (with boxes) is held out
MAX_VAL = 100  # ... at most this many (validation runs every 25 iterations)
ROLES = ("train", "val", "test")


@dataclass
class RealData:
    """One role's records (labels in the object folders' order) and where they came from."""

    records: list[DetectionRecord]
    source: str  # the path as given, or "held out of <train>"
    fmt: str
    skipped: list[BadFile] = field(default_factory=list)  # images left out by --skip-bad-images


@dataclass
class TrainInputs:
    """Everything ``synthdet train`` reads: the object classes and the real data of each role.

    ``val`` is held out of ``train`` when ``held_out`` > 0; ``test`` is None without test data.
    """

    objects: Path
    class_names: list[str]
    flat_objects: bool
    train: RealData
    val: RealData
    test: Optional[RealData]
    held_out: int = 0


def data_format(path: str | Path) -> str:
    """``coco`` | ``yolo`` | ``voc`` for a dataset path (see the module docstring)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return "coco"
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if p.is_dir() and (p / "Annotations").is_dir():
        return "voc"
    if p.is_dir() and ((p / "images").is_dir() or (p / "data.yaml").is_file() or (p / "dataset.yaml").is_file()):
        return "yolo"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    raise UserError(f"{p}: not a dataset synthdet train reads: give a COCO .json file, a YOLO data.yaml (or a "
                    "folder holding images/ and labels/), or a Pascal VOC folder holding Annotations/")


def _split(path: Path, fmt: str, role: str) -> Optional[str]:
    """The reader's ``split=`` for ``role``: the role's own split when the dataset has one."""
    if fmt == "yolo":
        from ..utils.config import load_yaml

        yaml_path = path if path.is_file() else next((path / n for n in ("data.yaml", "dataset.yaml")
                                                      if (path / n).is_file()), None)
        return role if yaml_path is not None and role in load_yaml(yaml_path) else None
    if fmt == "voc":
        sets = path / "ImageSets" / "Main"
        for name in ((role, "trainval") if role == "train" else (role,)):
            if (sets / f"{name}.txt").is_file():
                return name
    return None


def read_real(path: str | Path, role: str, split: Optional[str] = "auto"
              ) -> tuple[list[DetectionRecord], dict[int, str], str]:
    """``(records, {label: name}, format)`` of one dataset path read for ``role``."""
    from ..datasets import read_dataset

    p = Path(path)
    fmt = data_format(p)
    split = _split(p, fmt, role) if split == "auto" else split
    records, names = read_dataset(fmt, p, split=split)
    if not records:
        raise UserError(f"{p}: no images" + (f" in split {split!r}" if split else ""))
    return records, names, fmt


def implied_splits(path: str | Path) -> dict[str, str]:
    """The ``val`` / ``test`` splits a YOLO ``data.yaml`` given as ``--train`` lists (role -> split)."""
    p = Path(path)
    if data_format(p) != "yolo" or not p.is_file():
        return {}
    from ..utils.config import load_yaml

    data = load_yaml(p)
    return {role: role for role in ("val", "test") if data.get(role) and data.get(role) != data.get("train")}


def match_classes(object_names: Sequence[str], flat: bool, data_names: dict[str, dict[int, str]],
                  objects: str | Path) -> list[str]:
    """The class names of the run, in label order: the object folders' names, or for a flat folder
    the data's only category. Raises :class:`UserError` listing both sides on a mismatch: the
    ``train`` data's categories must be the object classes, the other roles' a part of them."""
    train_names = sorted(set(data_names["train"].values()))
    if flat:
        if len(train_names) != 1:
            raise UserError(f"class names: {objects} is one class (its images are not in class subfolders), "
                            f"the training data has {len(train_names)} categories: {train_names}; put the object "
                            "images of each category in a subfolder named like it")
        names = train_names
    else:
        names = list(object_names)
    for role, cats in data_names.items():
        found = sorted(set(cats.values()))
        extra = sorted(set(found) - set(names))
        missing = sorted(set(names) - set(found)) if role == "train" else []
        if extra or missing:
            raise UserError(
                f"class names differ: object folders of {objects}: {sorted(names)}; categories of the {role} "
                f"data: {found}" + (f"; no object folder for {extra}" if extra else "")
                + (f"; not a category of the training data: {missing}" if missing else "")
                + " (name the object subfolders exactly like the categories)")
    return names


def relabel(records: Sequence[DetectionRecord], names: dict[int, str], order: Sequence[str]) -> list[DetectionRecord]:
    """Records with labels renumbered by name to ``order`` (label k = ``order[k - 1]``)."""
    index = {label: order.index(name) + 1 for label, name in names.items()}
    return [r.replace(labels=np.array([index[int(lab)] for lab in r.labels], np.int64)) for r in records]


def hold_out(records: Sequence[DetectionRecord], seed: int) -> tuple[list[DetectionRecord], list[DetectionRecord]]:
    """``(training part, validation part)`` of ``records``: ``round(VAL_FRACTION * n)`` (at least 1,
    at most ``MAX_VAL``) of the ``n`` images with boxes, drawn by ``np.random.default_rng(seed)``;
    images without boxes stay in training. Both parts keep the input order. Raises
    :class:`UserError` with fewer than 2 images with boxes."""
    boxed = [i for i, r in enumerate(records) if len(r.boxes)]
    if len(boxed) < 2:
        raise UserError(f"holding out validation images needs at least 2 labelled images with boxes, got "
                        f"{len(boxed)}: give --val DATA")
    k = int(np.clip(round(VAL_FRACTION * len(boxed)), 1, MAX_VAL))
    chosen = set(np.asarray(boxed)[np.random.default_rng(seed).permutation(len(boxed))[:k]].tolist())
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen])


def _check_disjoint(parts: dict[str, list[DetectionRecord]]) -> None:
    seen: dict[str, str] = {}
    for role, records in parts.items():
        for r in records:
            key = str(Path(r.image_path).resolve())
            if seen.get(key, role) != role:
                raise UserError(f"{r.image_path}: in the {seen[key]} data and in the {role} data; the training, "
                                "validation and test images must be different images")
            seen[key] = role


def read_inputs(objects: str | Path, train: str | Path, val: str | Path | None = None,
                test: str | Path | None = None, seed: int = 0, skip_bad: bool = False,
                progress: bool = True) -> TrainInputs:
    """Read, match, check and split everything ``synthdet train`` is given (module docstring).
    Every labelled image is checked first (``datasets.check.check_records``): bad ones refuse the
    data before any work, or with ``skip_bad`` are dropped with their boxes."""
    from ..datasets.check import check_records
    from ..sources.objects import discover_classes
    from ..utils.files import list_images

    objects = Path(objects)
    object_names, _ = discover_classes(objects)
    flat = bool(list_images(objects, recursive=False))  # loose images: one class (discover_classes)
    given = {"train": (train, "auto"), "val": (val, "auto"), "test": (test, "auto")}
    for role, split in implied_splits(train).items():
        if given[role][0] is None:
            given[role] = (train, split)
            log.info("using the %s split of %s as the %s data", split, train, role)
    raw = {role: (read_real(path, role, split), str(path)) for role, (path, split) in given.items() if path is not None}
    names = match_classes(object_names, flat, {role: r[0][1] for role, r in raw.items()}, objects)
    parts: dict[str, RealData] = {}
    for role, ((records, cats, fmt), source) in raw.items():
        kept, bad = check_records(relabel(records, cats, names), f"{source} ({role})", skip_bad=skip_bad,
                                  progress=progress)
        parts[role] = RealData(kept, source, fmt, bad)
    _check_disjoint({role: d.records for role, d in parts.items()})
    held = 0
    if "val" not in parts:
        tr, va = hold_out(parts["train"].records, seed)
        held = len(va)
        parts["val"] = RealData(va, f"held out of {parts['train'].source}", parts["train"].fmt)
        parts["train"] = RealData(tr, parts["train"].source, parts["train"].fmt, parts["train"].skipped)
    return TrainInputs(objects, names, flat, parts["train"], parts["val"], parts.get("test"), held)
