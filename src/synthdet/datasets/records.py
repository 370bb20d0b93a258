"""The one record type every real-dataset reader produces, and a torch Dataset over records."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..utils.image import BadImageError, read_image

logger = logging.getLogger(__name__)


@dataclass
class DetectionRecord:
    """One annotated image.

    ``boxes``: float32 ``[N, 4]`` XYXY pixels, exclusive end (see :mod:`synthdet`).
    ``labels``: int64 ``[N]``, 1-based class ids (0 = background).
    ``extra``: reader-specific fields (e.g. WIDER Face ``difficulty``, VOC ``difficult``).
    """

    image_path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    image_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{self.image_path}: {len(self.boxes)} boxes but {len(self.labels)} labels")

    def replace(self, **changes: Any) -> "DetectionRecord":
        return dataclasses.replace(self, **changes)


def usable_boxes(boxes: np.ndarray) -> np.ndarray:
    """Bool mask ``[N]`` of XYXY boxes that are finite and have positive width and height (the
    others would crash a torchvision detector's training step or count as ground truth)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def drop_unusable(records: Sequence[DetectionRecord], where: str) -> list[DetectionRecord]:
    """Records with their unusable boxes (see :func:`usable_boxes`) removed; logs how many."""
    out, dropped = [], 0
    for rec in records:
        keep = usable_boxes(rec.boxes)
        if keep.all():
            out.append(rec)
            continue
        dropped += int((~keep).sum())
        extra = {k: (np.asarray(v)[keep] if isinstance(v, (list, np.ndarray)) and len(v) == len(keep) else v)
                 for k, v in rec.extra.items()}
        out.append(rec.replace(boxes=rec.boxes[keep], labels=rec.labels[keep], extra=extra))
    if dropped:
        logger.warning("%s: %d NaN or empty boxes dropped", where, dropped)
    return out


def validate_boxes(boxes: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """Clip XYXY boxes to the image (degenerate ones are kept); raises on NaN."""
    with np.errstate(over="ignore"):  # beyond float32: infinite, refused just below
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: non-finite box coordinates")
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


class DetectionDataset(torch.utils.data.Dataset):
    """Records -> ``(image FloatTensor[3, H, W] in [0, 1], {"boxes", "labels", "image_id"[, "difficult"]})``.

    ``transform(image_uint8_rgb, boxes, labels, rng)`` may augment (e.g.
    :class:`~synthdet.datasets.transforms.RealAugment`; a transform with a ``mosaic_p`` also gets
    ``others(k)``, k more random samples of this dataset); ``resize`` (square side) resizes image
    and boxes. Images are read lazily, so the dataset pickles cheaply.

    The index may be an ``int`` or ``(index, draw)``: the augmentation's generator is seeded with
    ``(seed, index, draw)``, so the trainer's endless sampler (which passes its global position as
    ``draw``) gets a new augmentation of an image every time it is drawn, the same in every run.

    ``skip_unreadable`` (training with ``--skip-bad-images``): an image that fails to decode
    although it passed the up-front check (corrupt pixel data) is replaced by the next record's,
    with a warning; otherwise its :class:`~synthdet.utils.image.BadImageError` is raised.
    """

    wants_draw = property(lambda self: self.transform is not None)

    def __init__(
        self,
        records: Sequence[DetectionRecord],
        resize: int | None = None,
        transform: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
        skip_unreadable: bool = False,
    ) -> None:
        self.records = list(records)
        self.resize = resize
        self.transform = transform
        self.seed = seed
        self.skip_unreadable = skip_unreadable
        self._unreadable: set[int] = set()  # per process: warned about once

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 HxWx3, boxes float32 [N, 4] in its pixels, labels)`` of record ``index``
        (of the next readable one with ``skip_unreadable``, see :meth:`_load_usable`)."""
        return self._load_usable(index)[1:]

    def _load_usable(self, index: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """``(record index, image, boxes, labels)``: ``index``'s, or with ``skip_unreadable`` the
        next record's whose image decodes when this one's does not (corruption inside the pixel
        data, which the up-front check cannot see): a warning names it once per process, and the
        replacement depends only on the files, not on the worker or the history."""
        if not self.skip_unreadable:
            return (index, *self._load(index))
        for k in range(len(self.records)):
            j = (index + k) % len(self.records)
            if j in self._unreadable:
                continue
            try:
                return (j, *self._load(j))
            except BadImageError as e:
                self._unreadable.add(j)
                logger.warning("%s; the next image is used in its place", e)
        raise BadImageError(self.records[index].image_path, "no image of the dataset can be decoded")

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rec = self.records[index]
        # the stated size picks the EXIF rule (see synthdet.utils.image): the boxes' pixels
        img = read_image(rec.image_path, expect_size=(rec.width, rec.height) if rec.width and rec.height else None)
        boxes, labels = rec.boxes.copy(), rec.labels.copy()
        h, w = img.shape[:2]
        if (w, h) != (rec.width, rec.height) and rec.width and rec.height:
            boxes = boxes * np.array([w / rec.width, h / rec.height] * 2, np.float32)
        return img, boxes, labels

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import cv2

        index, draw = (int(index[0]), int(index[1])) if isinstance(index, tuple) else (int(index), 0)
        used, img, boxes, labels = self._load_usable(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, index, draw])
            if getattr(self.transform, "mosaic_p", 0):
                def others(k: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
                    return [self.load(int(j)) for j in rng.integers(0, len(self), k)]

                img, boxes, labels = self.transform(img, boxes, labels, rng, others=others)
            else:
                img, boxes, labels = self.transform(img, boxes, labels, rng)
        if self.resize:
            h, w = img.shape[:2]
            img = cv2.resize(img, (self.resize, self.resize), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([self.resize / w, self.resize / h] * 2, np.float32)
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        keep = usable_boxes(boxes)
        target = {
            "boxes": torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(np.asarray(labels).reshape(-1)[keep], dtype=torch.int64).reshape(-1),
            "image_id": torch.tensor(self.records[used].image_id),
        }
        difficult = self.records[used].extra.get("difficult")
        if difficult is not None and len(difficult) == len(keep):
            # VOC "difficult" / WIDER ignored faces: neither a hit nor a miss in AP
            target["difficult"] = torch.as_tensor(np.asarray(difficult, bool)[keep])
        return image, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Collate for detection: lists of images and targets (torchvision's detector contract)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
