"""Run a trained synthdet detector on images: :class:`Detector` and the inputs it reads.

``Detector.from_checkpoint("best.pt").predict(images)`` returns one ``{"boxes", "scores",
"labels"}`` dict of numpy arrays per image: boxes ``float32 [D, 4]`` XYXY pixels of that image
(exclusive end, the package's convention), scores ``float32 [D]`` in [0, 1], labels ``int64 [D]``
(1..K; the checkpoint's class ids). Images are resized inside the model (longer side to the
checkpoint's ``image_size``) and the boxes mapped back to the image.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Container, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..utils.device import resolve_device
from ..utils.files import IMAGE_EXTENSIONS, list_images
from ..utils.image import BadImageError, read_image
from ..utils.inputs import BadFile

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
Detections = dict[str, np.ndarray]


class Detector:
    """A trained detector ready for inference (eval mode, on one device).

    ``model``: a synthdet/torchvision detector (the contract of :mod:`synthdet.models.detectors`).
    ``class_names``: ``{label: name}`` for drawing (default ``{k: "class<k>"}``).
    ``score_threshold``: detections below it are dropped; a threshold under the model's own
    (0.01 for synthdet's detectors) lowers the model's, so every score it asks for is reachable.
    """

    def __init__(self, model: nn.Module, class_names: Mapping[int, str] | None = None,
                 score_threshold: float = 0.25, device: str | torch.device = "auto") -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.eval().to(self.device)
        if score_threshold < getattr(model, "score_thresh", 0.0):
            model.score_thresh = float(score_threshold)
        meta = getattr(model, "synthdet_meta", None) or {}
        k = int(meta.get("num_classes", 1))
        self.class_names = dict(class_names) if class_names else {i: f"class{i}" for i in range(1, k + 1)}
        self.score_threshold = float(score_threshold)
        self.image_size = meta.get("image_size")

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, trust: bool = False, image_size: int | None = None,
                        class_names: Mapping[int, str] | Sequence[str] | None = None, **kwargs: Any) -> "Detector":
        """Load a synthdet checkpoint (weights-only unless ``trust``) with :func:`synthdet.models.load_detector`.

        ``class_names``: ``{label: name}`` or a list for labels 1..K; None: the names the checkpoint
        stores (``config.class_names``, written by finetune / mixed runs), else ``class<k>``. ``kwargs`` go to :class:`Detector`.
        """
        from ..models import load_detector
        from ..training.checkpoint import load_checkpoint

        model = load_detector(path, trust=trust, image_size=image_size)
        if class_names is None:
            stored = (load_checkpoint(path, trust).get("config") or {}).get("class_names")
            class_names = {int(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else None
        elif not isinstance(class_names, Mapping):
            class_names = {i + 1: str(n) for i, n in enumerate(class_names)}
        return cls(model, class_names=class_names, **kwargs)

    @torch.inference_mode()
    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for a batch of ``HxWx3 uint8 RGB`` arrays (one forward pass)."""
        if not images:
            return []
        tensors = [_to_tensor(im).to(self.device) for im in images]
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            out = self.model(tensors)
        dets = []
        for o in out:
            keep = o["scores"] >= self.score_threshold
            dets.append({"boxes": o["boxes"][keep].float().cpu().numpy().reshape(-1, 4),
                         "scores": o["scores"][keep].float().cpu().numpy(),
                         "labels": o["labels"][keep].cpu().numpy().astype(np.int64)})
        return dets

    def predict(self, images: Iterable[Any], batch_size: int = 8) -> list[Detections]:
        """Detections for each image: ``HxWx3 uint8 RGB`` arrays or image file paths (read as RGB)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        arrays = (read_image(im) if isinstance(im, (str, os.PathLike)) else np.asarray(im) for im in images)
        return [d for chunk in _chunks(arrays, batch_size) for d in self.predict_arrays(chunk)]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    """One input: an image file, or a video file read frame by frame (every ``stride``-th frame)."""

    path: Path
    video: bool = False


@dataclass
class Frame:
    """One image to predict on. ``name``: unique output stem; ``source``: file (``#frame`` for videos)."""

    name: str
    source: str
    image: np.ndarray


def collect_sources(inputs: Sequence[str]) -> list[Source]:
    """Expand folders (images inside, recursively), glob patterns and files into sources, in order.

    Raises ``FileNotFoundError`` for an input that matches nothing and ``ValueError`` for a file
    that is neither an image nor a video (by extension).
    """
    out: list[Source] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += [Source(f) for f in list_images(p)]
        elif p.is_file():
            out.append(_source(p))
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            media = [m for m in matches if m.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS]
            if not media:
                raise FileNotFoundError(f"{item}: no image or video file matches this pattern")
            out += [_source(m) for m in media]
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not out:
        raise FileNotFoundError(f"no images found in {', '.join(inputs)}")
    return out


def _source(path: Path) -> Source:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return Source(path)
    if ext in VIDEO_EXTENSIONS:
        return Source(path, video=True)
    raise ValueError(f"{path}: not an image or video file (extensions: {' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")


def iter_frames(sources: Sequence[Source], video_stride: int = 1, skipped: list[BadFile] | None = None,
                bad: Mapping[str, str] | None = None, done: Container[str] = ()) -> Iterator[Frame]:
    """Frames of ``sources`` with unique output names (image stem; ``<video stem>_<frame:06d>``).

    With ``skipped`` (a list), a file that cannot be read is appended to it and left out, and the
    others go on; without it the first bad file raises. ``bad``: ``{path: problem}`` of files
    already known to be bad (the up-front check), left out unread. ``done``: sources (``Frame.source``)
    not to yield again (a resumed run); names stay those of the full list either way."""
    used: set[str] = set()
    bad = bad or {}
    for src in sources:
        if str(src.path) in bad and skipped is not None:
            _unique(src.path.stem, used)
            skipped.append(BadFile(str(src.path), bad[str(src.path)]))
            continue
        if not src.video:
            name = _unique(src.path.stem, used)
            if str(src.path) in done:
                continue
            try:
                image = read_image(src.path)
            except BadImageError as e:
                if skipped is None:
                    raise
                skipped.append(BadFile(str(src.path), e.reason))
                continue
            yield Frame(name, str(src.path), image)
            continue
        try:
            for k, image in _video_frames(src.path, video_stride):
                name, source = _unique(f"{src.path.stem}_{k:06d}", used), f"{src.path}#{k}"
                if source not in done:
                    yield Frame(name, source, image)
        except ValueError as e:
            if skipped is None:
                raise
            skipped.append(BadFile(str(src.path), str(e).removeprefix(f"{src.path}: ")))


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 1
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out


def _video_frames(path: Path, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open this video (OpenCV could not decode it)")
    try:
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if k % stride == 0:
                yield k, np.ascontiguousarray(bgr[:, :, ::-1])
            k += 1
        if k == 0:
            raise ValueError(f"{path}: the video has no readable frame")
    finally:
        cap.release()


def count_frames(sources: Sequence[Source], video_stride: int = 1) -> int | None:
    """How many frames :func:`iter_frames` yields (videos: from their header), for the progress bar."""
    import cv2

    total = 0
    for src in sources:
        if not src.video:
            total += 1
            continue
        cap = cv2.VideoCapture(str(src.path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if n <= 0:
            return None
        total += (n + video_stride - 1) // video_stride
    return total
