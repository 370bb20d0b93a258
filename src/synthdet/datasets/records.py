"""The one record type every real-dataset reader produces, and a torch Dataset over records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..utils.image import read_image


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


def validate_boxes(boxes: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """Clip XYXY boxes to the image (degenerate ones are kept); raises on NaN."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: non-finite box coordinates")
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


class DetectionDataset(torch.utils.data.Dataset):
    """Records -> ``(image FloatTensor[3, H, W] in [0, 1], {"boxes", "labels", "image_id"[, "difficult"]})``.

    ``transform(image_uint8_rgb, boxes, labels, rng)`` may augment; ``resize`` (square side)
    resizes image and boxes. Images are read lazily, so the dataset pickles cheaply.
    """

    def __init__(
        self,
        records: Sequence[DetectionRecord],
        resize: int | None = None,
        transform: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.resize = resize
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rec = self.records[index]
        img = read_image(rec.image_path)
        boxes, labels = rec.boxes.copy(), rec.labels.copy()
        h, w = img.shape[:2]
        if (w, h) != (rec.width, rec.height) and rec.width and rec.height:
            boxes = boxes * np.array([w / rec.width, h / rec.height] * 2, np.float32)
        return img, boxes, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import cv2

        img, boxes, labels = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, index])
            img, boxes, labels = self.transform(img, boxes, labels, rng)
        if self.resize:
            h, w = img.shape[:2]
            img = cv2.resize(img, (self.resize, self.resize), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([self.resize / w, self.resize / h] * 2, np.float32)
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": torch.tensor(self.records[index].image_id),
        }
        difficult = self.records[index].extra.get("difficult")
        if difficult is not None and len(difficult) == len(target["boxes"]):
            # VOC "difficult" / WIDER ignored faces: neither a hit nor a miss in AP
            target["difficult"] = torch.as_tensor(np.asarray(difficult, bool))
        return image, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Collate for detection: lists of images and targets (torchvision's detector contract)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
