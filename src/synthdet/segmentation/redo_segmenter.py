"""The ``redo`` segmenter: a trained ReDO mask network (:mod:`.redo`), which fits itself on a
class's images and caches the fit like ``cosegment`` (:func:`fit_cached`, also what
``synthdet segment fit --segmenter redo`` runs)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..utils.config import from_dict, to_dict
from ..utils.device import resolve_device
from ..utils.files import atomic_write_json, file_digest
from .base import as_rgb, safe_key
from .redo import RedoConfig, checkpoint_file, load_redo_checkpoint, to_square_tensor
from .redo_nets import FeatureMaskNet, build_mask_net, run_mask_net
from .redo_prior import FeatureFn, image_features
from .redo_train import fit_redo

log = logging.getLogger(__name__)

FIT_VERSION = 1  # of the cached fits (the digest of their folder)
# Settings that do not change what a fit learns (left out of the cache digest and of the done check).
_NOT_LEARNED = ("device", "preview_every", "preview_images")


def cache_root() -> Path:
    """``$SYNTHDET_CACHE/redo`` (default ``~/.cache/synthdet/redo``): where fits are cached."""
    root = os.environ.get("SYNTHDET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthdet")
    return Path(root) / "redo"


def _learned(cfg: RedoConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _NOT_LEARNED}


def fit_dir(cfg: RedoConfig, paths: Sequence[str | os.PathLike], state_dir: str | os.PathLike | None = None,
            injected_features: bool = False) -> Path:
    """The cache folder of a fit of ``paths`` with ``cfg``: ``state_dir`` (default
    :func:`cache_root`) / a digest of the settings and the images' contents."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((FIT_VERSION, sorted(_learned(cfg).items()), injected_features)).encode())
    for p in sorted(Path(p) for p in paths):
        h.update(file_digest(p).encode())
    return Path(state_dir if state_dir is not None else cache_root()) / h.hexdigest()


def fit_cached(images: str | os.PathLike | Sequence[str | os.PathLike], cfg: RedoConfig, out: str | os.PathLike,
               resume: bool = True, progress: bool = True, features: FeatureFn | None = None) -> tuple[Path, str]:
    """Train ReDO into ``out`` (:func:`~.redo_train.fit_redo`) unless a fit with the same settings
    finished there. Returns ``(checkpoint, "fitted" | "loaded")``. ``out/done.json`` marks a
    finished fit (its settings and checkpoint); a killed fit has none and is resumed; with other
    settings (e.g. more iterations) the fit is resumed, or refitted where the networks differ."""
    out = Path(out)
    done = out / "done.json"
    if resume and done.is_file():
        record = json.loads(done.read_text())
        if record.get("settings") == json.loads(json.dumps(_learned(cfg))) and (out / record["checkpoint"]).is_file():
            log.info("ReDO: reusing the finished fit in %s (%s)", out, record["checkpoint"])
            return out / record["checkpoint"], "loaded"
    ckpt = fit_redo(images, cfg, out, resume=resume, progress=progress, features=features)
    atomic_write_json(done, {"checkpoint": ckpt.name, "settings": _learned(cfg),
                             "step": int(load_redo_checkpoint(ckpt)["step"])})
    return ckpt, "fitted"


class RedoSegmenter:
    """``redo``: a trained ReDO mask network; the object region from the checkpoint (or ``region=``).

    With ``checkpoint`` (a file or a ``fit_redo`` folder) it segments at once. Without one it
    fits itself like ``cosegment``: :meth:`fit` trains ReDO on the class's images with the
    :class:`~.redo.RedoConfig` fields given as keyword ``settings`` (the CPU recipe by default)
    into :func:`fit_dir` (under ``state_dir``, default ``$SYNTHDET_CACHE/redo``), so a second fit
    of the same images is loaded, a killed one resumes and a changed folder is refitted. Each
    image is squashed to the working resolution (and to ``feature_size`` for the Lite0
    features), segmented, and the object region's soft mask is resized back to the image's
    ``HxW``. ``features``: a :data:`~.redo_prior.FeatureFn` replacing Lite0 (tests).
    """

    name = "redo"

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32,
                 region: int | None = None, resolution: int | None = None,
                 state_dir: str | os.PathLike | None = None, features: FeatureFn | None = None,
                 progress: bool = True, **settings: Any):
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.region_override = region
        self.features = features
        self.progress = progress
        self.state_dir = Path(state_dir) if state_dir is not None else cache_root()
        self.fit_config = from_dict(RedoConfig, {**settings, "device": str(self.device)}, where="redo settings")
        self.checkpoint: Path | None = None
        self._given = checkpoint is not None
        if checkpoint is not None:
            self._load(checkpoint, resolution)

    def _load(self, checkpoint: str | os.PathLike, resolution: int | None = None) -> None:
        path = checkpoint_file(checkpoint)
        state = load_redo_checkpoint(path, resolution=resolution)
        self.config = from_dict(RedoConfig, state["config"], where=f"{path} config")
        self.resolution = self.config.resolution
        self.region = int(state["object_region"] if self.region_override is None else self.region_override)
        if not 0 <= self.region < self.config.num_regions:
            raise ValueError(f"region {self.region} out of range for {self.config.num_regions} regions")
        self.net = build_mask_net(self.config)
        self.net.load_state_dict(state["mask"])
        self.net.to(self.device).eval()
        self.checkpoint = path
        self.step = int(state["step"])
        self._key = safe_key("redo", file_digest(path, 12), f"r{self.region}")

    @property
    def fitted(self) -> bool:
        return self.checkpoint is not None

    def fit_dir(self, paths: Sequence[str | os.PathLike]) -> Path:
        """The cache folder of a fit of these images with these settings (:func:`fit_dir`)."""
        return fit_dir(self.fit_config, paths, self.state_dir, self.features is not None)

    def fit(self, paths: Sequence[str | os.PathLike]) -> str:
        """Train ReDO on ``paths`` (or load that fit from the cache); ``"given"`` when a checkpoint
        was passed, else ``"loaded"`` or ``"fitted"``. Same settings and images -> same folder."""
        if self._given:
            return "given"
        out = self.fit_dir(paths)
        log.info("ReDO: fit on %d images in %s (budget %s min)", len(paths), out, self.fit_config.time_limit_minutes)
        ckpt, how = fit_cached(list(paths), self.fit_config, out, progress=self.progress, features=self.features)
        self._load(ckpt)
        return how

    def cache_key(self) -> str:
        return self._key if self.checkpoint is not None else "redo-unfitted"

    @torch.inference_mode()
    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        """Soft object masks, float32 ``HxW`` in [0, 1], one per uint8 RGB image."""
        if self.checkpoint is None:
            raise RuntimeError("redo has no checkpoint: pass checkpoint= or call fit(paths) on the class's images")
        out: list[np.ndarray] = []
        lite0 = isinstance(self.net, FeatureMaskNet)
        for i in range(0, len(images), self.batch_size):
            chunk = [as_rgb(im) for im in images[i : i + self.batch_size]]
            x = to_square_tensor(chunk, self.resolution).to(self.device)
            feats = None
            if lite0:
                f16, f32 = image_features(chunk, self.config.feature_size, self.features)
                feats = (torch.from_numpy(f16).to(self.device), torch.from_numpy(f32).to(self.device))
            masks = run_mask_net(self.net, x, feats)[:, self.region].float().cpu().numpy()
            for im, m in zip(chunk, masks):
                h, w = im.shape[:2]
                if (h, w) != m.shape:
                    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
                out.append(np.clip(m, 0.0, 1.0).astype(np.float32))
        return out
