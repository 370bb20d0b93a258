"""Robust image reading: any mode in, ``uint8`` RGB (and optional alpha) out.

Grey, palette, RGBA, 16-bit and float images are converted; unreadable or too-small files
raise :class:`BadImageError` naming the file and the problem, so callers can skip-and-count.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .files import atomic_path


# Images claiming more pixels than this (a 16384 x 16384 photo) are refused before decoding: a
# crafted or corrupt header must not make the reader allocate tens of gigabytes.
MAX_PIXELS = 1 << 28


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        hi = 1.0 if float(np.nanmax(arr)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(arr) * (255.0 / hi), 0, 255).round().astype(np.uint8)
    info = np.iinfo(arr.dtype)
    return (arr.astype(np.float64) / info.max * 255).clip(0, 255).astype(np.uint8)


def to_rgb_uint8(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert an array in any common layout to ``(rgb uint8 HxWx3, alpha float32 HxW | None)``.

    Accepts HxW (grey), HxWx1, HxWx2 (grey+alpha), HxWx3 (RGB), HxWx4 (RGBA); 8/16-bit or float.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image array shape {arr.shape}")
    arr = _to_uint8(arr)
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1].astype(np.float32) / 255.0
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr), alpha


def read_image_rgba(path: str | os.PathLike, min_size: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``path`` as ``(rgb uint8 HxWx3, alpha float32 HxW in [0,1] or None)``."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, "file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise BadImageError(path, "empty file")
    check_header_size(path)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        arr = _read_with_pil(path)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        # OpenCV decodes to BGR(A).
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
    try:
        rgb, alpha = to_rgb_uint8(arr)
    except ValueError as e:
        raise BadImageError(path, str(e)) from None
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise BadImageError(path, f"too small ({w}x{h} px, need at least {min_size} px per side)")
    return rgb, alpha


def check_header_size(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`BadImageError` if the header of ``path`` claims more than ``max_pixels``
    pixels (checked without decoding). Files PIL cannot identify are left to the decoder."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise BadImageError(path, f"image too large to decode (the header claims over {max_pixels} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return
    if w * h > max_pixels:
        raise BadImageError(path, f"image too large to decode ({w}x{h} px, at most {max_pixels} pixels)")


def _read_with_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise BadImageError(path, f"not a readable image ({e.__class__.__name__}: {e})") from None
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]  # match OpenCV's BGR
    return arr


def read_image(path: str | os.PathLike, min_size: int = 1) -> np.ndarray:
    """Read ``path`` as ``uint8`` RGB ``HxWx3``; alpha (if any) is dropped."""
    return read_image_rgba(path, min_size=min_size)[0]


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an RGB (HxWx3) or grey (HxW) ``uint8`` array atomically; format from the suffix."""
    path = Path(path)
    arr = np.asarray(rgb)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(arr), params)
    if not ok:
        raise OSError(f"could not encode image for {path}")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))
