"""Augmentation of real box-labelled images (finetuning and mixed training).

Pure functions on ``(image uint8 [H, W, 3], boxes float32 [N, 4] XYXY exclusive-end pixels,
labels int64 [N])`` plus :class:`RealAugment`, which only holds the parameters and draws them
from an ``np.random.Generator``. Every geometric step moves boxes with exactly the mapping it
applies to pixels; boxes cut by the image border are clipped, and boxes left with too little of
their area or side are dropped (with their labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]
PAD_VALUE = 114  # grey fill outside the source image (zoom-out, mosaic borders)


def hflip(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> Sample:
    """Mirror left-right: column ``x`` goes to ``W - 1 - x``, box ``[x0, x1)`` to ``[W - x1, W - x0)``."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out, labels


def clip_boxes(boxes: np.ndarray, labels: np.ndarray, width: int, height: int, min_visible: float = 0.25,
               min_side: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to ``[0, width] x [0, height]``; drop those keeping under ``min_visible`` of
    their area or with a side under ``min_side`` pixels."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32), labels
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    keep = (w >= min_side) & (h >= min_side) & (w * h >= min_visible * np.maximum(area, 1e-6))
    return out[keep].astype(np.float32), labels[keep]


def crop_resize(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, window: tuple[float, float, float, float],
                out_size: tuple[int, int], min_visible: float = 0.25) -> Sample:
    """Cut the window ``(x0, y0, x1, y1)`` (image pixels; may reach outside the image, which is
    filled with grey) and resize it to ``out_size = (W, H)``. A pixel at ``x`` goes to
    ``(x - x0) * W / (x1 - x0)``; boxes follow the same map, then :func:`clip_boxes`."""
    x0, y0, x1, y1 = window
    sx, sy = out_size[0] / (x1 - x0), out_size[1] / (y1 - y0)
    # OpenCV puts pixel centres at integers, boxes here put pixel i at [i, i + 1): shift by half a
    # pixel on both sides so that box corners land exactly where the pixels' edges do
    m = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]], np.float64)
    interp = cv2.INTER_AREA if sx < 1 and sy < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(image, m, out_size, flags=interp, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(PAD_VALUE,) * 3)
    b = ((boxes.reshape(-1, 4) - np.array([x0, y0, x0, y0])) * np.array([sx, sy, sx, sy])).astype(np.float32)
    b, lab = clip_boxes(b, labels, out_size[0], out_size[1], min_visible)
    return out, b, lab


def mosaic(samples: list[Sample], out_size: tuple[int, int]) -> Sample:
    """Tile four samples 2 x 2 into one ``out_size = (W, H)`` image (each resized to a quadrant)."""
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    w, h = out_size
    canvas = np.full((h, w, 3), PAD_VALUE, np.uint8)
    all_boxes, all_labels = [], []
    for k, (img, boxes, labels) in enumerate(samples):
        qx0, qy0 = (k % 2) * (w // 2), (k // 2) * (h // 2)
        qw, qh = (w // 2 if k % 2 == 0 else w - w // 2), (h // 2 if k < 2 else h - h // 2)
        ih, iw = img.shape[:2]
        canvas[qy0:qy0 + qh, qx0:qx0 + qw] = cv2.resize(img, (qw, qh), interpolation=cv2.INTER_AREA)
        scale = np.array([qw / iw, qh / ih, qw / iw, qh / ih], np.float32)
        all_boxes.append(boxes.reshape(-1, 4) * scale + np.array([qx0, qy0, qx0, qy0], np.float32))
        all_labels.append(labels)
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_labels)


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """Random brightness / contrast / saturation (multiplicative, ``1 +- x``) and hue shift
    (fraction of the colour circle, ``+- hue``); boxes are unaffected."""
    img = image.astype(np.float32)
    img *= 1 + rng.uniform(-brightness, brightness)
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-contrast, contrast)) + mean
    hsv = cv2.cvtColor(img.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 180) % 180
    hsv[..., 1] = (hsv[..., 1] * (1 + rng.uniform(-saturation, saturation))).clip(0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@dataclass(frozen=True)
class RealAugment:
    """Parameters of the real-image augmentation; call it as a :class:`DetectionDataset` transform.

    Steps, each drawn from ``rng``: mosaic of this and 3 other images (``mosaic_p``), a random
    window of side ``scale`` x the image side (``scale < 1`` crops and zooms in, ``> 1`` zooms out
    onto grey; aspect ``1 +- aspect``) resized back to the image size, horizontal flip
    (``flip_p``), colour jitter. Boxes cut by the window are clipped, and dropped when under
    ``min_visible`` of their area remains.

    With ``crop_size`` (and ``image_size``, the longer side the detector resizes images to at
    inference) the window is ``scale`` x ``crop_size`` pixels *at inference scale* and the output
    ``crop_size`` x ``crop_size``: a detector that trains on small inputs and detects on larger
    ones sees its objects at the scale it will meet them (``train_size`` of
    :func:`~synthdet.models.fcos.fcos_efficientnet_lite0`).
    """

    flip_p: float = 0.5
    scale: tuple[float, float] = (0.6, 1.4)
    aspect: float = 0.2
    min_visible: float = 0.35
    mosaic_p: float = 0.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    hue: float = 0.02
    crop_size: Optional[int] = None
    image_size: Optional[int] = None

    def __post_init__(self) -> None:
        if (self.crop_size is None) != (self.image_size is None):
            raise ValueError("crop_size and image_size go together (both or neither)")

    def window(self, w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """A random window ``(x0, y0, x1, y1)`` in image pixels, see the class docstring."""
        s = rng.uniform(*self.scale)
        a = 1 + rng.uniform(-self.aspect, self.aspect)
        if self.crop_size and self.image_size:  # crop_size output pixels at inference scale, in image pixels
            w0 = h0 = self.crop_size * max(w, h) / self.image_size
        else:
            w0, h0 = w, h
        ww, wh = w0 * s * np.sqrt(a), h0 * s / np.sqrt(a)
        x0 = rng.uniform(min(0.0, w - ww), max(0.0, w - ww))
        y0 = rng.uniform(min(0.0, h - wh), max(0.0, h - wh))
        return float(x0), float(y0), float(x0 + ww), float(y0 + wh)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 others: Optional[Callable[[int], list[Sample]]] = None) -> Sample:
        h, w = image.shape[:2]
        if self.mosaic_p and others is not None and rng.random() < self.mosaic_p:
            image, boxes, labels = mosaic([(image, boxes, labels), *others(3)], (w, h))
        out = (self.crop_size, self.crop_size) if self.crop_size else (w, h)
        image, boxes, labels = crop_resize(image, boxes, labels, self.window(w, h, rng), out, self.min_visible)
        if rng.random() < self.flip_p:
            image, boxes, labels = hflip(image, boxes, labels)
        if self.brightness or self.contrast or self.saturation or self.hue:
            image = color_jitter(image, rng, self.brightness, self.contrast, self.saturation, self.hue)
        return image, boxes, labels
