from __future__ import annotations

from pathlib import Path

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

