"""The input catalogue's odd and bad image files, one writer each (tiny files, milliseconds).

``GOOD``: odd files every command must read (and put boxes on the right pixels of);
``BAD``: files every command must name with their problem, then refuse (labelled data) or skip;
``LATE``: bad files the cheap check cannot see, named when first decoded.
``write_case(kind, folder, monkeypatch)`` writes one and returns ``(path, (width, height))``: the
path to list (for ``missing``, one that does not exist) and the size after EXIF orientation.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from synthdet.utils.image import write_image

W, H = 40, 32  # stored size of the ordinary test images

GOOD = ("plain", "png_named_jpg", "png16", "cmyk", "grayscale", "exif_rotated", "one_pixel", "non_utf8_name")
BAD = {  # kind -> the problem the checks name
    "missing": "file not found",
    "empty": "empty file",
    "truncated": "truncated",
    "not_an_image": "not a readable image",
    "huge_header": "image too large to decode",
    "symlink_loop": "symlink loop",
    "unreadable": "permission denied",
}
# Bad inside the pixel data: the cheap up-front check (header, end marker) passes it, the decoder
# does not; it is found when the image is first decoded.
LATE = {"corrupt_pixels": "not a readable image"}


def pattern(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """An RGB test image: dark noise with a bright square at ``[8, 8, 24, 24)`` (x, y)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[8:24, 8:24] = (250, 240, 230)
    return img


def huge_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A valid PNG header claiming ``w x h`` pixels, with almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def exif_jpeg(path: Path, stored: np.ndarray, orientation: int) -> Path:
    """A JPEG of the ``stored`` pixels carrying EXIF Orientation ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def make_unreadable(path: Path, monkeypatch) -> None:
    """Make ``path`` unreadable. As root (this project's test machines) ``chmod 000`` does not stop
    reads, so ``open`` is patched to raise the PermissionError a non-root reader would get."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    import builtins

    real_open = builtins.open
    target = os.path.abspath(path)

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def write_case(kind: str, folder: Path, monkeypatch=None, stem: str | None = None) -> tuple[Path, tuple[int, int]]:
    """Write catalogue case ``kind`` into ``folder``; see the module docstring."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or kind
    img = pattern()
    p = folder / f"{stem}.jpg"
    if kind == "plain":
        write_image(p, img)
    elif kind == "png_named_jpg":
        Image.fromarray(img).save(p, format="PNG")
    elif kind == "png16":
        p = folder / f"{stem}.png"
        Image.fromarray(img[..., 0].astype(np.uint16) * 257).save(p)
    elif kind == "cmyk":
        Image.fromarray(img).convert("CMYK").save(p, format="JPEG", quality=95)
    elif kind == "grayscale":
        Image.fromarray(img[..., 0]).save(p, format="JPEG", quality=95)
    elif kind == "exif_rotated":  # stored W x H, shown H x W (orientation 6: turn 90 degrees clockwise)
        exif_jpeg(p, np.ascontiguousarray(np.rot90(img, 1)), 6)
        return p, (W, H)
    elif kind == "one_pixel":
        p = folder / f"{stem}.png"
        write_image(p, img[:1, :1])
        return p, (1, 1)
    elif kind == "non_utf8_name":
        p = folder / os.fsdecode(stem.encode() + b"_caf\xe9.jpg")
        write_image(p, img)
    elif kind == "missing":
        pass
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        write_image(p, np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
        p.write_bytes(p.read_bytes()[:-200])
    elif kind == "not_an_image":
        p.write_bytes(b"this is not an image at all\n" * 4)
    elif kind == "huge_header":
        p = huge_png(folder / f"{stem}.png")
        return p, (100_000, 100_000)
    elif kind == "symlink_loop":
        os.symlink(f"{stem}_b.lnk", p)
        os.symlink(f"{stem}.jpg", folder / f"{stem}_b.lnk")
    elif kind == "corrupt_pixels":  # a PNG whose compressed data has a flipped byte (IEND intact)
        p = folder / f"{stem}.png"
        write_image(p, np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8))
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    elif kind == "unreadable":
        write_image(p, img)
        if monkeypatch is None:
            raise ValueError("the unreadable case needs pytest's monkeypatch")
        make_unreadable(p, monkeypatch)
    else:
        raise ValueError(f"unknown case {kind!r}")
    return p, (W, H)
