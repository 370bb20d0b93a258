"""The one image reader: any file in, ``uint8`` RGB (and optional alpha) out, the same pixels for
training, evaluation, ``predict`` and synthesis.

- **Modes.** Grey, grey + alpha, 1-bit, palette (its transparency becomes alpha), RGB, RGBA,
  CMYK JPEG, 16-bit PNG / TIFF (the top 8 bits) and float images become 8-bit RGB.
- **EXIF orientation, one rule.** The stored pixels are turned as the file's EXIF Orientation tag
  says (what photo viewers and most labelling tools show), and every size synthdet reports for a
  file (:attr:`ImageInfo.size`: YOLO / VOC box scaling, ``predict``'s ``width`` / ``height``) is
  the turned one. One exception, for labelled data: given ``expect_size`` (the width / height an
  annotation file states), when it equals the *stored* size and not the turned one, the tool that
  drew the boxes ignored EXIF, so the stored orientation is kept and the boxes stay on the pixels
  they were drawn on (a warning, once per file). Flips and 180-degree turns keep the size, so
  nothing tells them apart: they are always applied; so is any turn of a square image.
- **Bad files** raise :class:`BadImageError` naming the file and the problem (``file not found``,
  ``broken symlink``, ``symlink loop``, ``permission denied``, ``empty file``, ``not a readable
  image``, ``truncated``, ``image too large to decode``, ``too small``), so callers can skip and
  count, or refuse.
- :func:`probe_image` is the cheap check behind every command's up-front input check: the header
  and the file's last bytes, no pixels decoded (a file whose end marker is missing is decoded,
  at 1/8 scale for JPEG, to tell a truncated file from one with trailing data).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from .files import atomic_path

logger = logging.getLogger(__name__)

# Images claiming more pixels than this (a 16384 x 16384 photo) are refused before decoding: a
# crafted or corrupt header must not make the reader allocate tens of gigabytes.
MAX_PIXELS = 1 << 28
_TAIL = 4096  # bytes at the end of a file searched for its format's end marker
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_EXIF_ORIENTATION = 0x0112


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says. ``stored_size``: ``(width, height)`` of the pixels as stored;
    ``orientation``: its EXIF Orientation (1 = none, 2..8 = flips / turns); ``format``: PIL's
    format name (``JPEG``, ``PNG``, ...)."""

    path: str
    format: str
    mode: str
    stored_size: tuple[int, int]
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` after the EXIF orientation (what :func:`read_image` returns)."""
        w, h = self.stored_size
        return (h, w) if self.orientation >= 5 else (w, h)


# --------------------------------------------------------------------------- the cheap check


def probe_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check ``path`` without decoding it: exists, is a readable regular non-empty file, has an
    image header with a decodable size (at most ``max_pixels``), and is not cut short. Returns its
    :class:`ImageInfo`; raises :class:`BadImageError` naming the problem."""
    path = Path(path)
    nbytes = _stat(path)
    try:
        with open(path, "rb") as f:
            info = _probe_stream(path, f, max_pixels)
            f.seek(max(0, nbytes - _TAIL))
            tail = f.read()
            if _looks_truncated(info.format, tail):
                f.seek(0)
                _check_complete(path, f.read(), info)
    except OSError as e:
        raise _os_error(path, e) from None
    return info


def _stat(path: Path) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadImageError(path, "broken symlink (its target does not exist)" if os.path.islink(path)
                            else "file not found") from None
    except OSError as e:
        raise _os_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise BadImageError(path, "not a regular file")
    if st.st_size == 0:
        raise BadImageError(path, "empty file")
    return int(st.st_size)


def _os_error(path: Path, e: OSError) -> BadImageError:
    if e.errno == errno.ELOOP:
        return BadImageError(path, "symlink loop")
    if isinstance(e, PermissionError):
        return BadImageError(path, "permission denied")
    return BadImageError(path, f"cannot be read ({e.strerror or e})")


def _probe_stream(path: Path, f: BinaryIO, max_pixels: int) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f)
            info = ImageInfo(str(path), str(im.format), im.mode, (int(im.size[0]), int(im.size[1])),
                             _orientation(im))
    except Image.DecompressionBombError as e:
        claim = re.search(r"\((\d+) pixels\)", str(e))
        raise BadImageError(path, f"image too large to decode (the header claims "
                                  f"{claim.group(1) if claim else 'too many'} pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        if isinstance(e, (PermissionError, IsADirectoryError)):
            raise
        f.seek(0)
        why = "unknown format or corrupt header" if isinstance(e, UnidentifiedImageError) else \
            f"{e.__class__.__name__}: {e}"
        return _probe_with_cv2(path, f.read(), why)
    w, h = info.stored_size
    if w < 1 or h < 1:
        raise BadImageError(path, f"the header claims a {w}x{h} px image")
    if w * h > max_pixels:
        raise BadImageError(path, f"image too large to decode ({w}x{h} px, at most {max_pixels} pixels)")
    return info


def _probe_with_cv2(path: Path, data: bytes, why: str) -> ImageInfo:
    """A file PIL cannot identify: readable if OpenCV decodes it (the reader tries both)."""
    arr = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise BadImageError(path, f"not a readable image ({why})")
    return ImageInfo(str(path), "unknown", "", (int(arr.shape[1]), int(arr.shape[0])))


def _orientation(im: Any) -> int:
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # PIL would decode the whole PNG to look for an eXIf chunk after the pixels
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: no orientation, like every viewer
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _looks_truncated(fmt: str, tail: bytes) -> bool:
    marker = _END_MARKERS.get(fmt)
    return marker is not None and marker not in tail


def _check_complete(path: Path, data: bytes, info: ImageInfo) -> None:
    """Decode a file whose end marker is missing (JPEG at 1/8 scale): trailing data is fine, a
    file cut short is not."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if info.format == "JPEG":
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImageError(path, f"truncated or corrupt {info.format} data ({e})") from None


# --------------------------------------------------------------------------- orientation


_warned_stored: set[str] = set()


def orientation_for(info: ImageInfo, expect_size: tuple[int, int] | None = None) -> int:
    """The EXIF orientation :func:`read_image` applies (see the module docstring): ``info``'s,
    or 1 (the stored pixels) when ``expect_size`` is the stored size and not the turned one."""
    if expect_size is None or info.orientation == 1:
        return info.orientation
    expected = (int(expect_size[0]), int(expect_size[1]))
    if expected == info.stored_size and expected != info.size:
        if info.path not in _warned_stored:
            _warned_stored.add(info.path)
            logger.warning("%s: EXIF orientation %d ignored: the annotation's size %dx%d is the stored one, "
                           "so its boxes were drawn on the stored pixels", info.path, info.orientation, *expected)
        return 1
    return info.orientation


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an ``HxW[xC]`` array as EXIF ``orientation`` (1..8) says; what PIL's
    ``ImageOps.exif_transpose`` does to an image."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(int(orientation), ops[1])(arr))


# --------------------------------------------------------------------------- decoding


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
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
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.size == 0:
        raise ValueError(f"unsupported image array shape {arr.shape}")
    arr = _to_uint8(arr)
    alpha = None
    if arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1].astype(np.float32) / 255.0
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr), alpha


def _imdecode(data: bytes, flags: int) -> np.ndarray | None:
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None


def _decode_cv2(data: bytes) -> np.ndarray | None:
    """Stored pixels (EXIF not applied), channels in RGB(A) order, or None."""
    arr = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is not None and arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]  # OpenCV decodes to BGR(A)
    return arr


def _decode_pil(path: Path, data: bytes, reduce_to: int | None = None) -> np.ndarray:
    """Stored pixels (EXIF not applied) in RGB(A) order; JPEGs at a reduced DCT scale whose
    short side stays >= ``reduce_to`` when given."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if reduce_to and im.format == "JPEG" and min(im.size) > reduce_to:
                f = reduce_to / min(im.size)
                im.draft("RGB", (max(1, int(im.size[0] * f)), max(1, int(im.size[1] * f))))
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                keep_alpha = "A" in im.mode or "transparency" in im.info
                im = im.convert("RGBA" if keep_alpha else ("L" if im.mode == "1" else "RGB"))
            return np.array(im)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        what = "truncated or corrupt image data" if "truncated" in str(e) else "not a readable image"
        raise BadImageError(path, f"{what} ({e.__class__.__name__}: {e})") from None


def read_image_rgba(path: str | os.PathLike, min_size: int = 1, expect_size: tuple[int, int] | None = None,
                    reduce_to: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``path`` as ``(rgb uint8 HxWx3, alpha float32 HxW in [0,1] or None)``, EXIF
    orientation applied as the module docstring says (``expect_size``: the ``(width, height)`` an
    annotation file states for it). ``reduce_to``: a JPEG may be decoded at a reduced DCT scale
    whose short side stays >= this (backgrounds); other files decode at full size."""
    path = Path(path)
    _stat(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _os_error(path, e) from None
    info = _probe_stream(path, io.BytesIO(data), MAX_PIXELS)
    arr = None
    if not (reduce_to and info.format == "JPEG") and not _looks_truncated(info.format, data[-_TAIL:]):
        arr = _decode_cv2(data)
    if arr is None:  # OpenCV failed, a suspect end, or a reduced JPEG: PIL decides (and names the problem)
        arr = _decode_pil(path, data, reduce_to)
    arr = apply_orientation(arr, orientation_for(info, expect_size))
    try:
        rgb, alpha = to_rgb_uint8(arr)
    except ValueError as e:
        raise BadImageError(path, str(e)) from None
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise BadImageError(path, f"too small ({w}x{h} px, need at least {min_size} px per side)")
    return rgb, alpha


def read_image(path: str | os.PathLike, min_size: int = 1, expect_size: tuple[int, int] | None = None,
               reduce_to: int | None = None) -> np.ndarray:
    """Read ``path`` as ``uint8`` RGB ``HxWx3`` (see :func:`read_image_rgba`); alpha is dropped."""
    return read_image_rgba(path, min_size=min_size, expect_size=expect_size, reduce_to=reduce_to)[0]


def read_readable(paths: "list[str | os.PathLike]") -> tuple[list[np.ndarray], list, int]:
    """``(images, their paths, skipped)``: :func:`read_image` of each of ``paths``; a file that
    raises :class:`BadImageError` is left out, warned once by name and counted."""
    images, kept, skipped = [], [], 0
    for p in paths:
        try:
            images.append(read_image(p))
            kept.append(p)
        except BadImageError as e:
            skipped += 1
            logger.warning("skipping %s", e)
    return images, kept, skipped


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
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
