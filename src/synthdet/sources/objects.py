"""Object instances from a folder of images (class subfolders allowed) with their masks.

Masks come from any object with ``.get(path) -> float32 HxW mask`` (the segmentation stage's
``MaskCache``: every image segmented once, then read back); ``masks=None`` means no mask (``None``,
or the alpha channel with ``use_alpha``), i.e. the paper's naive pasting. Decoded objects live in a
bounded LRU cache, so memory does not grow with the number of images. Bad images are skipped and
counted; if every image is bad the source raises.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..utils.files import IMAGE_EXTENSIONS, list_images
from ..utils.image import BadImageError, read_image_rgba
from ..utils.inputs import BadFile, check_images, warn_skipped
from .base import CachedSource, ObjectSample

log = logging.getLogger(__name__)


class MaskProvider(Protocol):
    def get(self, path: Path) -> np.ndarray: ...


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(arr, (size, size), interpolation=interp)


def discover_classes(root: str | os.PathLike, class_name: str | None = None) -> tuple[list[str], list[list[Path]]]:
    """Class names and per-class sorted image lists under ``root``.

    A folder with images directly inside is one class (named ``class_name`` or after the folder)
    made of those images; its subfolders are then ignored, with a warning (e.g. tuxpaint's
    ``birds/cartoon/``). A folder with no loose images has one class per immediate subfolder that
    contains images (recursively), sorted by name. Raises ``FileNotFoundError`` for a missing
    folder and ``ValueError`` (naming the folder) when no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"object image folder not found: {root}")
    loose = list_images(root, recursive=False)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if loose:
        if subdirs:
            log.warning("%s: using the %d images directly in the folder as one class; subfolders ignored: %s",
                        root, len(loose), ", ".join(d.name for d in subdirs))
        return [class_name or root.name], [loose]
    names, files = [], []
    for d in subdirs:
        imgs = list_images(d)
        if imgs:
            names.append(d.name)
            files.append(imgs)
    if not names:
        raise ValueError(f"{root}: no object images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return names, files


def class_probabilities(spec: str | dict | None, class_names: list[str], counts: list[int]) -> np.ndarray:
    """Probability float64 ``[C]`` of drawing each class: ``None``/``"balanced"`` uniform,
    ``"proportional"`` by image count, a mapping ``{class name: weight}`` by relative weight
    (unlisted classes weigh 1). Raises ``ValueError`` for an unknown class name or all-zero weights."""
    if spec in (None, "balanced"):
        w = np.ones(len(class_names))
    elif spec == "proportional":
        w = np.asarray(counts, np.float64)
    else:
        unknown = sorted(set(spec) - set(class_names))
        if unknown:
            raise ValueError(f"class_weights: unknown class(es) {unknown}; the classes are {class_names}")
        w = np.array([float(spec.get(name, 1.0)) for name in class_names])
    if not w.sum() > 0:
        raise ValueError(f"class_weights: every class has weight 0 ({spec!r})")
    return w / w.sum()


class FolderObjectSource(CachedSource):
    """An :class:`~synthdet.sources.base.ObjectSource` over a folder of object images.

    Classes: see :func:`discover_classes` (class subfolders, or one flat class).

    ``draw(rng)`` picks a class uniformly (``balance_classes``), by ``class_probs`` (see
    :meth:`with_class_weights`) or an image uniformly over all classes, and returns the image and
    mask resized to ``size x size`` (uint8 / float32 in [0, 1]) with the 1-based class label. With
    ``masks=None`` the mask is ``None`` (naive pasting), or with ``use_alpha`` an RGBA image's alpha.
    ``stats`` counts bad files and empty / all-foreground masks (per process). The returned arrays
    are read-only views of the cache. ``one_class`` merges every subfolder into a single class
    (named ``class_name``), e.g. CUB's 200 species as "bird".
    """

    def __init__(self, root: str | os.PathLike, masks: MaskProvider | None = None, size: int = 128,
                 cache_items: int = 512, class_name: str | None = None, balance_classes: bool = True,
                 use_alpha: bool = False, max_bad_draws: int = 1000, one_class: bool = False) -> None:
        if size < 1:
            raise ValueError(f"FolderObjectSource: size must be >= 1, got {size}")
        self.root = Path(root)
        self.class_names, self.files = discover_classes(self.root, class_name)
        if one_class and len(self.files) > 1:
            self.class_names = [class_name or self.root.name]
            self.files = [sorted(p for f in self.files for p in f)]
        self.masks = masks
        self.size = int(size)
        self.cache_items = max(0, int(cache_items))
        self.balance_classes = balance_classes
        self.class_probs: np.ndarray | None = None  # set by with_class_weights
        self.use_alpha = use_alpha
        self.max_bad_draws = max_bad_draws
        self._offsets = np.cumsum([0] + [len(f) for f in self.files])
        self.skipped: list[BadFile] = []  # left out by precheck()
        self._init_state()

    def precheck(self, progress: bool = True) -> list[BadFile]:
        """Probe every image up front (:func:`~synthdet.utils.inputs.check_images`: header and
        end, no decoding) and leave out the bad ones: returned, kept in ``skipped`` and warned
        about. A class left without a usable image raises ValueError naming it."""
        paths = self.paths
        good, bad = check_images(paths, desc=f"checking {self.root}", progress=progress)
        if bad:
            usable = {paths[i] for i in good}
            for name, files in zip(self.class_names, self.files):
                if not any(p in usable for p in files):
                    first = next(b for b in bad if Path(b.path) in set(files))
                    raise ValueError(f"{self.root}: none of the {len(files)} images of class {name!r} can be used "
                                     f"(first: {first.path}: {first.problem})")
            self.files = [[p for p in files if p in usable] for files in self.files]
            self._offsets = np.cumsum([0] + [len(f) for f in self.files])
        self.skipped = bad
        warn_skipped(bad, len(paths), f"object images {self.root}")
        return bad

    def _init_state(self) -> None:
        super()._init_state()
        self.stats.update(empty_masks=0, full_masks=0)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def paths(self) -> list[Path]:
        """All object image paths, class by class."""
        return [p for f in self.files for p in f]

    def with_class_weights(self, spec: str | dict | None) -> "FolderObjectSource":
        """A copy drawing classes by ``spec`` (see :func:`class_probabilities`)."""
        import copy

        other = copy.copy(self)
        other.balance_classes = spec in (None, "balanced")
        other.class_probs = (None if spec in (None, "balanced", "proportional") else
                             class_probabilities(spec, self.class_names, [len(f) for f in self.files]))
        return other

    def _pick(self, rng: np.random.Generator) -> tuple[int, int]:
        probs = self.class_probs
        if probs is not None:
            c = min(int(np.searchsorted(np.cumsum(probs), rng.random(), side="right")), len(probs) - 1)
            while probs[c] == 0:  # rounding at the top of the cumulative sum: the last weighted class
                c -= 1
            return c, int(rng.integers(len(self.files[c])))
        if self.balance_classes:
            c = int(rng.integers(len(self.files)))
            return c, int(rng.integers(len(self.files[c])))
        flat = int(rng.integers(len(self)))
        c = int(np.searchsorted(self._offsets, flat, side="right") - 1)
        return c, flat - int(self._offsets[c])

    def _load(self, c: int, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        path = self.files[c][j]
        rgb, alpha = read_image_rgba(path)
        if self.masks is not None:
            try:
                mask = np.asarray(self.masks.get(path), dtype=np.float32)
            except BadImageError:
                raise
            except (ValueError, OSError) as e:
                raise BadImageError(path, f"no usable mask ({e})") from None
            if mask.ndim != 2 or not np.isfinite(mask).all():
                raise BadImageError(path, f"mask has shape {mask.shape} or non-finite values")
            if mask.shape != rgb.shape[:2] and mask.shape == rgb.shape[1::-1]:  # turned: made before the
                # reader applied EXIF orientation (masks of another size are resized, as before)
                raise BadImageError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} px, the image (after EXIF "
                                          f"orientation) {rgb.shape[1]}x{rgb.shape[0]} px: a stale mask cache?")
        elif self.use_alpha and alpha is not None:
            mask = alpha
        else:  # not segmented: naive pasting (see ObjectSample)
            mask = None
        image = _resize(rgb, self.size)
        image.setflags(write=False)
        self.stats["loaded"] += 1
        if mask is None:
            return image, None
        mask = np.clip(_resize(mask, self.size), 0.0, 1.0).astype(np.float32)
        if not (mask > 0).any():
            self.stats["empty_masks"] += 1
        elif (mask >= 1.0).all() and self.masks is not None:
            self.stats["full_masks"] += 1
        mask.setflags(write=False)
        return image, mask

    def get(self, c: int, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Decoded ``(image, mask)`` of file ``j`` of class ``c`` (cached; mask ``None`` without
        masks). Raises BadImageError."""
        key = (c, j)
        hit = self._cache_get(key)
        if hit is not None:
            return hit
        if key in self._bad:
            raise BadImageError(self.files[c][j], self._bad[key])
        try:
            item = self._load(c, j)
        except BadImageError as e:
            self._bad[key] = e.reason
            self.stats["bad_files"] += 1
            log.warning("skipping object image %s (%d bad so far)", e, len(self._bad))
            raise
        self._cache_put(key, item)
        return item

    def draw(self, rng: np.random.Generator) -> ObjectSample:
        """One object instance; a bad file is skipped and another drawn with ``rng``.

        The candidates never change with what is known to be bad, so the result depends only on
        ``rng`` and the files, not on the history of this process (worker-count invariance).
        """
        for _ in range(self.max_bad_draws):
            c, j = self._pick(rng)
            try:
                image, mask = self.get(c, j)
            except BadImageError:
                if len(self._bad) >= len(self):
                    break
                continue
            return ObjectSample(image=image, mask=mask, label=c + 1, key=str(self.files[c][j]))
        raise RuntimeError(f"{self.root}: no usable object image ({len(self._bad)} of {len(self)} files "
                           f"are bad, e.g. {next(iter(self._bad.values()), '?')})")
