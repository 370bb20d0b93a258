"""Tiny on-disk object/background folders for the synthesis tests (made in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthdet.utils.image import write_image


def make_objects(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int = 3, size: int = 40) -> Path:
    """Class subfolders of solid-colour images (one colour per class)."""
    for name, color in classes.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = np.zeros((size + 4 * k, size, 3), np.uint8)
            img[:] = color
            write_image(d / f"{name}_{k}.png", img)
    return root


def make_backgrounds(root: Path, count: int = 3, size: tuple[int, int] = (90, 120), value: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) if value is None else \
            np.full((*size, 3), value, np.uint8)
        write_image(root / f"bg{k}.jpg" if value is None else root / f"bg{k}.png", img)
    return root


class DiskMasks:
    """Stand-in for the segmentation stage's MaskCache: ``get(path)`` -> float32 HxW mask."""

    def __init__(self, kind: str = "disk") -> None:
        self.kind = kind
        self.calls = 0

    def get(self, path: Path) -> np.ndarray:
        from synthdet.utils.image import read_image

        self.calls += 1
        h, w = read_image(path).shape[:2]
        if self.kind == "empty":
            return np.zeros((h, w), np.float32)
        if self.kind == "full":
            return np.ones((h, w), np.float32)
        yy, xx = np.mgrid[:h, :w]
        return (((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1).astype(np.float32)
