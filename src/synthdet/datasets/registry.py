"""``read_dataset(fmt, path, **kwargs)``: one entry point over every real-dataset reader."""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from .cars import read_cars
from .coco import read_coco
from .cub import read_cub
from .fddb import read_fddb
from .records import DetectionRecord, drop_unusable
from .voc import read_voc
from .wider import read_wider
from .yolo import read_yolo

class DatasetOptionError(TypeError, ValueError):
    """An option (``split=``, ...) the dataset format does not take: a user mistake."""


Reader = Callable[..., tuple[list[DetectionRecord], dict[int, str]]]

# name -> (reader, what ``path`` is)
_READERS: dict[str, tuple[Reader, str]] = {
    "coco": (read_coco, "a COCO JSON file"),
    "voc": (read_voc, "a VOC year folder holding Annotations/ (e.g. VOCdevkit/VOC2007)"),
    "yolo": (read_yolo, "a YOLO folder with images/ and labels/, or its data.yaml"),
    "fddb": (read_fddb, "the FDDB folder holding FDDB-folds/ and originalPics/"),
    "cub": (read_cub, "the CUB_200_2011 folder holding images.txt"),
    "cars": (read_cars, "the Stanford Cars folder holding devkit/ and cars_train/"),
    "wider": (read_wider, "the WIDER Face folder holding wider_face_split/ and WIDER_<split>/"),
}


def list_formats() -> dict[str, str]:
    """``{format name: what its path argument is}`` for every registered reader."""
    return {name: what for name, (_, what) in _READERS.items()}


def read_dataset(fmt: str, path: str | os.PathLike, **kwargs: Any) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read a real detection dataset: ``(records, {label: class name})``.

    Records hold XYXY exclusive-end float32 boxes and 1-based int64 labels. ``kwargs`` go to the
    format's reader (e.g. ``split=``); an unknown format or keyword raises with the valid choices
    (a keyword the format lacks is ignored when its value is None).
    """
    if fmt not in _READERS:
        raise ValueError(f"unknown dataset format {fmt!r}; available: {', '.join(_READERS)}")
    reader = _READERS[fmt][0]
    params = list(inspect.signature(reader).parameters)[1:]
    # Options a format does not have are an error, unless unset (None): CLI layers pass e.g.
    # ``split=None`` to every format.
    kwargs = {k: v for k, v in kwargs.items() if k in params or v is not None}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        given = ", ".join(f"{k}={kwargs[k]!r}" for k in unknown)
        raise DatasetOptionError(f"{path}: the {fmt} reader has no option {given} (its options: "
                                 f"{', '.join(params) or 'none'}); for {fmt}, give each split as its own path")
    records, names = reader(path, **kwargs)
    return drop_unusable(records, str(path)), names
