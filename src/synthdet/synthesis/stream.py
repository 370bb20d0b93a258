"""The endless stream of artificial detection samples, a fixed pool of them, and their loaders.

Sample ``i`` is a pure function of ``(config, seed, i)`` (its generator is
``np.random.default_rng([seed, i])``), so the stream gives the same samples whatever the number
of DataLoader workers: worker ``w`` of ``W`` renders the blocks of ``block`` consecutive indices
``w, w + W, w + 2W, ...``, and with ``block`` = the batch size, the loader's round-robin over
workers puts block ``k`` in batch ``k``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from ..datasets.records import collate_detection
from ..sources.backgrounds import BackgroundSource
from ..sources.base import ObjectSource
from .augment import ObjectAugmenter
from .compose import place_boxes
from .config import SynthConfig
from .placement import BoxPrior
from .scene import paste_scene

log = logging.getLogger(__name__)


@dataclass
class SynthSample:
    """One rendered sample.

    ``image``: uint8 ``SxSx3``; ``boxes``: float32 ``[N, 4]`` XYXY (exclusive end), the tight box
    of each object's binarised mask; ``labels``: int64 ``[N]`` (1-based); ``placed``: int64
    ``[N, 4]`` the sampled box each object was resized into; ``masks``: N float32 masks of the
    placed-box size (soft; with ``allow_overlap`` only their visible part); ``empty``: bool ``[N]``,
    mask empty -> whole placed box; ``keys``: where each object came from; ``amodal``: float32
    ``[N, 4]`` the tight box of each whole mask, covered parts included (= ``boxes`` without
    occlusion); ``visible``: float32 ``[N]`` the visible fraction of each mask (1 without occlusion).
    Objects are in pasting order (later ones on top). Objects hidden below ``min_visibility`` and
    distractors are in the image, not in these arrays.
    """

    index: int
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    placed: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    empty: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    keys: list[str] = field(default_factory=list)
    amodal: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    visible: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def full_masks(self, threshold: float = 0.0) -> np.ndarray:
        """Binary instance masks bool ``[N, S, S]`` in canvas coordinates (``mask > threshold``).

        With ``allow_overlap`` these are the visible parts (what later objects cover is removed).
        """
        h, w = self.image.shape[:2]
        out = np.zeros((len(self.masks), h, w), bool)
        for k, (m, (x0, y0, x1, y1)) in enumerate(zip(self.masks, self.placed)):
            out[k, y0:y1, x0:x1] = m > threshold
        return out

    def to_tensors(self, with_masks: bool = False, threshold: float = 0.0,
                   uint8: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(FloatTensor[3, S, S] in [0, 1], {"boxes": FloatTensor[N, 4], "labels": Int64Tensor[N]})``
        (plus ``"masks"`` uint8 ``[N, S, S]`` when ``with_masks``). ``uint8``: the image stays a
        ``ByteTensor[3, S, S]`` in [0, 255] (4x less to move between processes; divide by 255 on
        the consumer side, e.g. on the GPU)."""
        chw = np.ascontiguousarray(self.image.transpose(2, 0, 1))
        if uint8:
            image = torch.from_numpy(chw)
        else:  # numpy, single-threaded: torch's parallel elementwise kernels thrash on a busy CPU
            image = torch.from_numpy(np.divide(chw, np.float32(255.0), dtype=np.float32))
        target = {"boxes": torch.from_numpy(self.boxes).reshape(-1, 4),
                  "labels": torch.from_numpy(self.labels).reshape(-1)}
        if with_masks:
            target["masks"] = torch.from_numpy(self.full_masks(threshold).astype(np.uint8))
        return image, target


class SynthStream(torch.utils.data.IterableDataset):
    """Artificial detection samples ``start, start + 1, ...`` (endless when ``length`` is None).

    Yields the torchvision detector contract ``(FloatTensor[3, S, S] in [0, 1], {"boxes":
    FloatTensor[N, 4] XYXY, "labels": Int64Tensor[N]})``. :meth:`render` gives the full sample.
    ``with_masks`` adds ``"masks"`` (uint8 ``[N, S, S]``); ``uint8_images`` yields ``ByteTensor``
    images in [0, 255] instead (cheaper to move out of DataLoader workers; the consumer divides by
    255). ``box_prior``: the real boxes ``placement: fitted`` draws from; ``config.class_weights``
    re-weights the classes of ``objects``. ``distractors``: the unlabelled objects pasted when
    ``config.distractors`` is set (:func:`make_stream` builds it). Picklable; caches are per process.
    """

    def __init__(self, objects: ObjectSource, backgrounds: BackgroundSource, config: SynthConfig | None = None,
                 seed: int = 0, start: int = 0, length: int | None = None, block: int = 1,
                 with_masks: bool = False, uint8_images: bool = False, box_prior: BoxPrior | None = None,
                 distractors: ObjectSource | None = None) -> None:
        super().__init__()
        if block < 1:
            raise ValueError(f"SynthStream: block must be >= 1, got {block}")
        if length is not None and length < 0:
            raise ValueError(f"SynthStream: length must be >= 0, got {length}")
        self.config = config or SynthConfig()
        self.objects = _weighted(objects, self.config.class_weights)
        self.backgrounds = backgrounds
        if self.config.placement == "fitted" and box_prior is None:
            raise ValueError("SynthStream: placement 'fitted' needs box_prior (the real boxes; see "
                             "synthdet.synthesis.placement.load_box_prior)")
        self.box_prior = box_prior
        if self.config.distractors and distractors is None:
            raise ValueError(f"SynthStream: config.distractors is {self.config.distractors!r} but no distractor "
                             "source was given (build the stream with make_stream, or pass distractors=)")
        self.distractors = distractors
        self.seed = int(seed)
        self.start = int(start)
        self.length = length
        self.block = int(block)
        self.with_masks = with_masks
        self.uint8_images = uint8_images
        self.augmenter = ObjectAugmenter(self.config)
        self.stats: dict[str, int] = {"samples": 0, "objects": 0, "empty_masks": 0, "dropped": 0,
                                      "retries": 0, "rejected": 0, "distractors": 0}

    @property
    def class_names(self) -> list[str]:
        return list(self.objects.class_names)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless SynthStream has no length")
        return self.length

    def with_block(self, block: int) -> "SynthStream":
        """A shallow copy that shards by blocks of ``block`` indices (use the batch size)."""
        other = copy.copy(self)
        other.block = int(block)
        return other

    def render(self, index: int) -> SynthSample:
        """Render sample ``index``: a pure function of ``(config, seed, index)`` and the input files."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(index)])
        try:
            canvas = self.backgrounds.draw(rng, cfg.canvas_size, crop=cfg.background_crop,
                                           flip_p=cfg.background_flip_p)
            placed = place_boxes(cfg, rng, prior=self.box_prior)
            # blending has its own generator: every mode gives the same objects, positions and labels
            blend_rng = None if cfg.blend == "alpha" else np.random.default_rng([self.seed, int(index), 1])
            scene = paste_scene(canvas, placed, cfg, self.augmenter, self.objects, self.distractors, rng,
                                blend_rng)
        except (RuntimeError, ValueError, OSError, cv2.error) as e:
            raise RuntimeError(f"synthetic sample {index} (seed {self.seed}) failed: {e}") from e
        n = len(scene.labels)
        empty = np.asarray(scene.empty, bool).reshape(n)
        self.stats["samples"] += 1
        self.stats["objects"] += n
        self.stats["empty_masks"] += int(empty.sum())
        for name in ("dropped", "retries", "rejected", "distractors"):
            self.stats[name] += getattr(scene, name)
        return SynthSample(index=int(index), image=canvas, boxes=_rows(scene.boxes, np.float32),
                           labels=np.asarray(scene.labels, np.int64).reshape(n),
                           placed=_rows(scene.placed, np.int64), masks=scene.masks, empty=empty,
                           keys=scene.keys, amodal=_rows(scene.amodal, np.float32),
                           visible=np.asarray(scene.visible, np.float32).reshape(n))

    def sample(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample ``index`` as ``(image tensor, target)``."""
        return self.render(index).to_tensors(self.with_masks, self.config.binarize_threshold, self.uint8_images)

    def indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """The sample indices worker ``worker`` of ``num_workers`` renders, in order."""
        end = None if self.length is None else self.start + self.length
        blocks = itertools.count(worker, num_workers)
        for b in blocks:
            first = self.start + b * self.block
            for i in range(first, first + self.block):
                if end is not None and i >= end:
                    return
                yield i

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        info = torch.utils.data.get_worker_info()
        worker, num = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.indices(worker, num):
            yield self.sample(i)
            if self.stats["samples"] % 5000 == 0:
                self.log_stats()

    def log_stats(self) -> None:
        """Log the skipped-file, empty-mask, occlusion and distractor counts of this process."""
        st = self.stats
        parts = [f"{st['samples']} samples, {st['objects']} objects, {st['empty_masks']} empty masks (whole box used)"]
        if st["dropped"] or st["retries"] or st["rejected"]:
            parts.append(f"{st['dropped']} objects dropped as hidden, {st['retries']} positions redrawn, "
                         f"{st['rejected']} objects left out")
        if st["distractors"]:
            parts.append(f"{st['distractors']} distractors")
        for name, src in (("objects", self.objects), ("backgrounds", self.backgrounds)):
            st = getattr(src, "stats", None)
            if st and st.get("bad_files"):
                parts.append(f"{st['bad_files']} bad {name} files skipped")
        log.info("synthesis: %s", "; ".join(parts))


def _rows(values: list[np.ndarray], dtype: type) -> np.ndarray:
    """``[N, 4]`` array of ``dtype`` from N boxes (``[0, 4]`` for none)."""
    return np.asarray(values, dtype).reshape(-1, 4)


def _weighted(objects: ObjectSource, spec: str | dict | None) -> ObjectSource:
    """``objects`` drawing its classes by ``class_weights`` ``spec`` (a copy; as is for None)."""
    if spec is None or len(objects.class_names) < 2:
        return objects
    if not hasattr(objects, "with_class_weights"):
        raise ValueError(f"class_weights: the object source {type(objects).__name__} cannot weight its classes")
    return objects.with_class_weights(spec)


class SynthPool(torch.utils.data.Dataset):
    """A fixed pool: samples ``stream.start .. stream.start + count - 1`` of ``stream`` (map-style)."""

    def __init__(self, stream: SynthStream, count: int) -> None:
        if count < 1:
            raise ValueError(f"SynthPool: count must be >= 1, got {count}")
        self.stream = stream
        self.count = int(count)

    @property
    def class_names(self) -> list[str]:
        return self.stream.class_names

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= index < self.count:
            raise IndexError(f"SynthPool index {index} out of range [0, {self.count})")
        return self.stream.sample(self.stream.start + index)


def default_cache_dir() -> Path:
    """``$SYNTHDET_CACHE/masks`` or ``~/.cache/synthdet/masks``."""
    root = os.environ.get("SYNTHDET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthdet")
    return Path(root) / "masks"


def make_stream(objects: str | os.PathLike | ObjectSource,
                backgrounds: str | os.PathLike | Sequence[str | os.PathLike] | BackgroundSource,
                segmenter: str = "grabcut", segmenter_kwargs: dict[str, Any] | None = None,
                cache_dir: str | os.PathLike | None = None, config: SynthConfig | None = None, seed: int = 0,
                progress: bool = True, class_name: str | None = None, one_class: bool = False,
                distractors: str | os.PathLike | ObjectSource | None = None, **stream_kwargs: Any) -> SynthStream:
    """Build a stream from folders (or ready sources).

    ``objects``: a folder (class subfolders allowed) or an ObjectSource. For a folder, each image
    is segmented once with ``segmenter`` into a mask cache under ``cache_dir`` (default
    :func:`default_cache_dir`); ``none`` segments nothing: the objects have no mask and are pasted
    naively (whole frame, whole box; see :class:`~synthdet.sources.base.ObjectSample`).
    ``backgrounds``: a folder, a list of image paths or a BackgroundSource. ``class_name``/``one_class`` go to
    :class:`~synthdet.sources.objects.FolderObjectSource`. ``distractors`` (or
    ``config.distractors``): a folder of non-target images, segmented like the objects and pasted
    unlabelled (one class), or an ObjectSource. Extra keyword arguments go to :class:`SynthStream`.
    The images of folders and lists are checked up front (``precheck`` of the sources): bad ones
    are skipped, counted (the sources' ``skipped``) and warned about before any work.
    """
    from ..sources.objects import FolderObjectSource

    config = config or SynthConfig()

    def folder_source(folder: str | os.PathLike, **kwargs: Any) -> ObjectSource:
        masks = None
        if segmenter != "none":
            from ..segmentation import MaskCache, get_segmenter

            seg = get_segmenter(segmenter, **(segmenter_kwargs or {}))
            masks = MaskCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(), seg)
        src = FolderObjectSource(folder, masks=masks, size=config.object_size, **kwargs)
        src.precheck(progress=progress)  # bad files skipped and counted before any work
        if masks is not None:
            counts = masks.prepare(src.paths, progress=progress)
            log.info("mask cache for %s (%s): %s", folder, segmenter, counts)
            src.mask_counts = counts  # reported by `synthdet synth` (rejected: failed the quality gates)
        return src

    if isinstance(backgrounds, BackgroundSource):  # checked first: it is cheap, masks are not
        bg = backgrounds
    elif isinstance(backgrounds, (str, os.PathLike)):
        bg = BackgroundSource.from_folder(backgrounds)
        bg.precheck(progress=progress, where=f"backgrounds {backgrounds}")
    else:
        bg = BackgroundSource(list(backgrounds))
        bg.precheck(progress=progress)
    if isinstance(objects, (str, os.PathLike)):
        source: ObjectSource = folder_source(objects, class_name=class_name, one_class=one_class)
    else:
        source = objects
    if isinstance(distractors, (str, os.PathLike)):
        config = config.replace(distractors=str(distractors))
    if distractors is None and config.distractors:
        distractors = config.distractors
    if isinstance(distractors, (str, os.PathLike)):  # "~" allowed, e.g. in experiment YAML files
        distractors = folder_source(Path(distractors).expanduser(), class_name="distractor", one_class=True)
    return SynthStream(source, bg, config, seed=seed, distractors=distractors, **stream_kwargs)


def make_loader(dataset: SynthStream | SynthPool | torch.utils.data.Dataset, batch_size: int,
                num_workers: int = 0, shuffle: bool = False, seed: int = 0,
                **kwargs: Any) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`collate_detection` (lists of images and targets).

    A :class:`SynthStream` is re-blocked to ``batch_size`` so batches do not depend on
    ``num_workers``; ``shuffle`` (map-style datasets only) uses a ``torch.Generator`` seeded
    with ``seed``.
    """
    if isinstance(dataset, SynthStream):
        dataset = dataset.with_block(batch_size)
        shuffle = False
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", True)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       shuffle=shuffle, generator=gen, collate_fn=collate_detection, **kwargs)
