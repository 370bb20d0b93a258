"""Object augmentation: photometric (object only) and geometric (object and mask identically).

Everything draws from an explicit ``np.random.Generator`` so a sample is a pure function of the
generator's state. Two geometric back-ends give the same operations (paper: horizontal flip,
crop 0-10 % per side, affine scale/translate/rotate/shear, in random order, then resize to the
box):

- ``"affine"`` (default): the operations are composed, with the final resize to the box, into
  ONE 2x3 matrix and applied with a single ``cv2.warpAffine`` to the object and to the mask.
- ``"albumentations"``: albumentations 2.x transforms (``HorizontalFlip``, ``CropAndPad``,
  ``Affine`` inside ``SomeOf(n=3)`` for a random order) driven by the same generator through
  ``set_random_state``, then ``cv2.resize`` to the box. Slower; kept as the reference path.

Photometric augmentation follows imgaug's semantics used by the authors (random order): Gaussian
blur (sigma in ``blur_sigma``, p=``blur_p``), linear contrast around 128, additive Gaussian noise
(per channel with p=``noise_per_channel_p``; normals sliced from a fixed table at a random offset,
see :func:`_gaussian_noise`), brightness multiply (per channel with p=``brightness_per_channel_p``).
It is vectorised numpy/OpenCV on the small object image.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from .config import SynthConfig

# ----------------------------------------------------------------------------- photometric

_NOISE_BANK_SIZE = 1 << 21
_noise_bank: np.ndarray | None = None


def _gaussian_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 noise of ``shape``: a slice at a random offset of a fixed table.

    Drawing ~50k fresh normals costs about a millisecond, more than the rest of the object's
    augmentation; a slice of a constant 2M-value table (seeded once, 8 MB per process) is as
    random for augmentation purposes and still a pure function of ``rng``.
    """
    global _noise_bank
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _noise_bank is None:
        _noise_bank = np.random.default_rng(20191208).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_BANK_SIZE - n + 1))
    return _noise_bank[start : start + n].reshape(shape)



def photometric(image: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply the paper's photometric augmentation to ``image`` (uint8 HxWx3) in random order.

    Returns a new uint8 HxWx3 array; values are clipped to [0, 255] after every operation.
    """
    x = image.astype(np.float32)
    for op in rng.permutation(4):
        if op == 0:  # blur
            if rng.random() < cfg.blur_p:
                sigma = float(rng.uniform(*cfg.blur_sigma))
                if sigma > 1e-3:
                    x = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma)
        elif op == 1:  # linear contrast around the middle grey
            alpha = float(rng.uniform(*cfg.contrast))
            x = (x - 128.0) * alpha + 128.0
        elif op == 2:  # additive gaussian noise, per channel with some probability
            per_channel = rng.random() < cfg.noise_per_channel_p
            sigma = float(rng.uniform(*cfg.noise_sigma))
            if sigma > 0:
                shape = x.shape if per_channel else x.shape[:2] + (1,)
                x = x + _gaussian_noise(shape, rng) * np.float32(sigma)
        else:  # brightness multiply, per channel with some probability
            per_channel = rng.random() < cfg.brightness_per_channel_p
            mul = rng.uniform(*cfg.brightness, size=3 if per_channel else 1).astype(np.float32)
            x = x * mul
        np.clip(x, 0.0, 255.0, out=x)
    return (x + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- geometric (one warp)


def _flip_matrix(w: int, h: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _resize_matrix(w: float, h: float, out_w: float, out_h: float, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """Map the rectangle [x0, x0+w) x [y0, y0+h) onto [0, out_w) x [0, out_h) (pixel centres)."""
    sx, sy = out_w / w, out_h / h
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5], [0.0, 0.0, 1.0]])


def _crop_matrix(w: int, h: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    left, right, top, bottom = rng.uniform(*cfg.crop, size=4)
    cw, ch = w * (1.0 - left - right), h * (1.0 - top - bottom)
    return _resize_matrix(cw, ch, w, h, x0=left * w, y0=top * h)


def _affine_matrix(w: int, h: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    sx, sy = rng.uniform(*cfg.scale, size=2)
    tx, ty = rng.uniform(*cfg.translate, size=2)
    angle = math.radians(float(rng.uniform(*cfg.rotate)))
    shear = math.radians(float(rng.uniform(*cfg.shear)))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    scale = np.diag([sx, sy, 1.0])
    shear_m = np.array([[1.0, math.tan(shear), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + tx * w], [0.0, 1.0, cy + ty * h], [0.0, 0.0, 1.0]])
    return back @ rot @ shear_m @ scale @ to_origin


def geometric_matrix(w: int, h: int, out_w: int, out_h: int, cfg: SynthConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """The 2x3 matrix mapping a ``w x h`` object frame to the ``out_w x out_h`` box.

    Flip (p=``hflip_p``), crop and affine are drawn from ``rng`` and composed in a random order
    (each maps the frame onto itself), followed by the resize to the box. With
    ``cfg.geometric=False`` it is the plain resize.
    """
    m = np.eye(3)
    if cfg.geometric:
        for op in rng.permutation(3):
            if op == 0:
                if rng.random() < cfg.hflip_p:
                    m = _flip_matrix(w, h) @ m
            elif op == 1:
                m = _crop_matrix(w, h, cfg, rng) @ m
            else:
                m = _affine_matrix(w, h, cfg, rng) @ m
    m = _resize_matrix(w, h, out_w, out_h) @ m
    return m[:2].astype(np.float64)


def warp_object(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray, out_w: int,
                out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp object (uint8 HxWx3) and mask (float32 HxW) with one 2x3 ``matrix`` into ``out_h x out_w``.

    Pixels mapped from outside the object frame get mask 0 (the image edge is replicated there).
    """
    flags = cv2.INTER_LINEAR
    # The image edge is replicated (the mask alone decides what is visible), so frame borders are
    # not darkened by interpolating with black; the mask is 0 outside the frame.
    img = cv2.warpAffine(image, matrix, (out_w, out_h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    msk = cv2.warpAffine(mask, matrix, (out_w, out_h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    return img, msk


def _shrink_for(image: np.ndarray, mask: np.ndarray, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale the square object first when the box is much smaller (avoids aliasing)."""
    side = image.shape[0]
    target = max(out_w, out_h)
    if target * 2 <= side:
        size = (target, target)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
    return image, mask


# ----------------------------------------------------------------------------- albumentations path


class AlbumentationsGeometric:
    """The paper's geometric augmentation as albumentations 2.x transforms (reference back-end).

    ``__call__(image, mask, out_w, out_h, rng)`` returns the augmented object and mask resized to
    the box; the transforms draw from ``rng`` only (via ``set_random_state``). Picklable.
    """

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self._pipeline = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_pipeline": None}

    def _build(self):  # noqa: ANN202 - albumentations type
        import albumentations as A

        cfg = self.cfg
        lin = cv2.INTER_LINEAR
        ops = [
            A.HorizontalFlip(p=cfg.hflip_p),
            A.CropAndPad(percent=(-cfg.crop[1], -cfg.crop[0]), keep_size=True, sample_independently=True,
                         interpolation=lin, mask_interpolation=lin, p=1.0),
            A.Affine(scale={"x": cfg.scale, "y": cfg.scale},
                     translate_percent={"x": cfg.translate, "y": cfg.translate},
                     rotate=cfg.rotate, shear={"x": cfg.shear, "y": (0.0, 0.0)}, interpolation=lin,
                     mask_interpolation=lin, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0),
        ]
        return A.Compose([A.SomeOf(ops, n=3, replace=False, p=1.0)], strict=False)

    def __call__(self, image: np.ndarray, mask: np.ndarray, out_w: int, out_h: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.cfg.geometric:
            if self._pipeline is None:
                self._pipeline = self._build()
            self._pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            out = self._pipeline(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        interp = cv2.INTER_AREA if out_w * out_h < image.shape[0] * image.shape[1] else cv2.INTER_LINEAR
        image = cv2.resize(image, (out_w, out_h), interpolation=interp)
        mask = cv2.resize(np.ascontiguousarray(mask, dtype=np.float32), (out_w, out_h), interpolation=interp)
        return image, mask


# ----------------------------------------------------------------------------- both


class ObjectAugmenter:
    """Photometric + geometric augmentation of one object, resized to its box.

    ``__call__(image uint8 SxSx3, mask float32 SxS, out_w, out_h, rng) -> (uint8 out_h x out_w x 3,
    float32 out_h x out_w mask in [0, 1])``. Holds only the config, so it pickles cheaply.
    """

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self._alb = AlbumentationsGeometric(cfg) if cfg.geometric_backend == "albumentations" else None

    def __call__(self, image: np.ndarray, mask: np.ndarray, out_w: int, out_h: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        if cfg.photometric:
            image = photometric(image, cfg, rng)
        if self._alb is not None:
            img, msk = self._alb(image, mask, out_w, out_h, rng)
        else:
            image, mask = _shrink_for(image, mask, out_w, out_h)
            h, w = image.shape[:2]
            matrix = geometric_matrix(w, h, out_w, out_h, cfg, rng)
            img, msk = warp_object(image, mask, matrix, out_w, out_h)
        np.clip(msk, 0.0, 1.0, out=msk)
        return img, msk
