from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from synthdet.utils.image import write_image


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A noisy dark background with a bright blob near the centre."""
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
    img[blob] = rng.integers(180, 255, (int(blob.sum()), 3), dtype=np.uint8)
    return img


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Eight small images of different sizes (PNG and JPEG), one grey."""
    root = tmp_path_factory.mktemp("seg_images")
    rng = np.random.default_rng(0)
    for i in range(8):
        img = _image(rng, 32 + 4 * i, 40 - 2 * i)
        if i == 3:
            img = img[:, :, 0]
        write_image(root / f"im{i}.{'jpg' if i % 2 else 'png'}", img)
    return root



def _texture(rng: np.random.Generator, s: int) -> np.ndarray:
    """A random background: stripes, checks or smooth colour noise."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[:s, :s]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    if kind == 0:
        t = (np.sin((xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) * rng.uniform(0.3, 0.8)) > 0)
    elif kind == 1:
        k = int(rng.integers(4, 10))
        t = ((xx // k + yy // k) % 2) == 0
    else:
        t = cv2.resize(rng.random((6, 6)).astype(np.float32), (s, s)) > 0.5
    img = np.where(t[..., None], a, b).astype(np.float32) + rng.normal(0, 8, (s, s, 3))
    return img.clip(0, 255).astype(np.uint8)


def _object(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared object: a red disc with black spots, off-centre a little, random size."""
    r = rng.uniform(0.22, 0.3) * s
    cy, cx = s / 2 + rng.uniform(-0.08, 0.08) * s, s / 2 + rng.uniform(-0.08, 0.08) * s
    yy, xx = np.mgrid[:s, :s]
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
    colour = np.zeros((s, s, 3), np.float32)
    colour[:] = (210, 30, 25)
    for dy, dx in ((-0.4, -0.4), (0.3, -0.35), (-0.3, 0.4), (0.35, 0.3), (0.0, 0.0)):
        spot = ((yy - cy - dy * r) ** 2 + (xx - cx - dx * r) ** 2) <= (0.18 * r) ** 2
        colour[spot] = (15, 15, 15)
    return colour, mask


def make_shape_class(root: Path, count: int = 12, side: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """``count`` images ``side`` px square of one object (a spotted red disc) on varied textures,
    in ``root/images``, with their true masks in ``root/true``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = _texture(rng, side).astype(np.float32)
        colour, mask = _object(rng, side)
        img[mask] = colour[mask] + rng.normal(0, 6, (int(mask.sum()), 3))
        write_image(root / "images" / f"s{i:02d}.png", img.clip(0, 255).astype(np.uint8))
        write_image(root / "true" / f"s{i:02d}.png", (mask * 255).astype(np.uint8))
    return root / "images", root / "true"


@pytest.fixture(scope="module")
def shape_class(tmp_path_factory) -> tuple[Path, Path]:
    """Twelve 64x64 images of one object on varied textures, with true masks."""
    return make_shape_class(tmp_path_factory.mktemp("shape_class"))
