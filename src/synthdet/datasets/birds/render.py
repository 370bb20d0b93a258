"""Rendering of the benchmark's "real" images: its own code, deliberately unlike the synthesis pipeline.

The real photographs of the paper (CUB) are imitated by compositing real bird cut-outs on
crops of real photos with a process the synthesis pipeline does not share:

- per-instance lighting matched to the surrounding background (the bird's LAB mean/std move
  part-way toward those of the background around it),
- softened alpha edges (Gaussian blur of the alpha, colours bled outward so no fringe shows),
- partial overlaps: the box of a bird is the extent of its *visible* alpha after the birds
  pasted later occlude it; a placement that would leave an earlier bird less than
  ``min_visible`` visible is rejected, so no mostly-hidden unlabelled bird remains,
- mild sensor noise, and JPEG re-encoding at a random quality (done by the writer).

Boxes are ``XYXY`` pixels with an exclusive end (see :mod:`synthdet`): the tight box of the
visible alpha > 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...utils.image import BadImageError, read_image_rgba


@dataclass
class Cutout:
    """A bird photo cut out by its alpha: ``rgb`` uint8 ``HxWx3``, ``alpha`` float32 ``HxW`` in [0, 1]
    (cropped to the alpha's extent, colours bled outward under transparent pixels)."""

    name: str
    rgb: np.ndarray
    alpha: np.ndarray


@dataclass
class RenderedImage:
    """One rendered image before JPEG encoding.

    ``image`` uint8 ``SxSx3``; ``boxes`` float32 ``[N, 4]`` XYXY exclusive (visible extent);
    ``masks`` bool ``[N, S, S]`` visible alpha > 0.5; ``identities`` the N cut-out names.
    """

    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    identities: list[str]


def load_cutout(path: str | Path) -> Cutout:
    """Read an RGBA cut-out; raises :class:`BadImageError` if it has no usable alpha."""
    rgb, alpha = read_image_rgba(path)
    if alpha is None:
        raise BadImageError(path, "no alpha channel (a bird cut-out must be an RGBA image)")
    return make_cutout(Path(path).stem, rgb, alpha)


def make_cutout(name: str, rgb: np.ndarray, alpha: np.ndarray) -> Cutout:
    """Crop ``rgb``/``alpha`` to the alpha's extent and bleed colours under transparent pixels."""
    alpha = np.asarray(alpha, np.float32)
    box = alpha_box(alpha, 0.02)
    if box is None or (alpha > 0.5).sum() < 4:
        raise ValueError(f"cut-out {name!r}: alpha is (almost) empty")
    x0, y0, x1, y1 = (int(v) for v in box)
    rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    return Cutout(name, bleed_colors(rgb, alpha), alpha.copy())


def bleed_colors(rgb: np.ndarray, alpha: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Replace colours under (partly) transparent pixels by the nearby opaque colours.

    Cut-outs often hold black or white junk where alpha is 0; once the alpha is blurred
    those pixels would show as a dark/bright fringe.
    """
    a = alpha.astype(np.float32)[..., None]
    pm = rgb.astype(np.float32) * a
    num = cv2.GaussianBlur(pm, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    fill = num / np.maximum(den, 1e-4)[..., None]
    fill = np.where(den[..., None] > 1e-4, fill, pm.sum((0, 1)) / max(float(a.sum()), 1e-4))
    out = rgb.astype(np.float32) * a + fill * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def alpha_box(alpha: np.ndarray, thresh: float = 0.5) -> np.ndarray | None:
    """Tight XYXY box (exclusive end, float32 ``[4]``) of ``alpha > thresh``; None if empty."""
    m = np.asarray(alpha) > thresh
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator,
                scale: tuple[float, float] = (0.35, 1.0)) -> np.ndarray:
    """A random square crop (side = ``scale`` x the photo's short side), random h-flip, resized to
    ``size`` x ``size``. ``photo`` uint8 ``HxWx3`` -> uint8 ``size x size x 3``."""
    h, w = photo.shape[:2]
    side = max(1, int(round(min(h, w) * rng.uniform(*scale))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)


def resize_cutout(cut: Cutout, longest: int, flip: bool, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``cut`` so its longer side is ``longest`` px, optionally mirror it, pad by ``pad`` px
    (alpha 0, colours replicated). Returns ``(rgb uint8, alpha float32)``."""
    h, w = cut.alpha.shape
    s = longest / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(cut.rgb, (nw, nh), interpolation=interp)
    alpha = np.clip(cv2.resize(cut.alpha, (nw, nh), interpolation=interp), 0, 1)
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    if pad:
        rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        alpha = cv2.copyMakeBorder(np.ascontiguousarray(alpha), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)


def soften_alpha(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-blur the alpha (``sigma`` px; 0 = unchanged). float32 ``HxW`` in [0, 1]."""
    if sigma <= 0:
        return alpha.astype(np.float32)
    return np.clip(cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma,
                                    borderType=cv2.BORDER_CONSTANT), 0, 1)


def match_lighting(rgb: np.ndarray, alpha: np.ndarray, reference: np.ndarray, strength: float,
                   color_strength: float | None = None) -> np.ndarray:
    """Move the bird's per-channel LAB mean/std part-way toward ``reference``'s.

    ``strength`` in [0, 1] for lightness (0 = unchanged, 1 = same statistics as the reference),
    ``color_strength`` for the a/b channels (default half of ``strength``). The statistics of
    the bird are taken over ``alpha > 0.5``. uint8 ``HxWx3`` in and out.
    """
    if strength <= 0 and not color_strength:
        return rgb
    inside = alpha > 0.5
    if inside.sum() < 4 or reference.size == 0:
        return rgb
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(np.ascontiguousarray(reference), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    cs = strength / 2 if color_strength is None else color_strength
    for c, t in zip(range(3), (strength, cs, cs)):
        mu_b, sd_b = float(lab[..., c][inside].mean()), float(lab[..., c][inside].std()) + 1e-3
        mu_r, sd_r = float(ref[:, c].mean()), float(ref[:, c].std()) + 1e-3
        mu = mu_b + t * (mu_r - mu_b)
        sd = sd_b * float(np.clip(sd_r / sd_b, 0.5, 2.0)) ** t
        lab[..., c] = (lab[..., c] - mu_b) * (sd / sd_b) + mu
    lab = np.clip(lab + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def visible_alphas(alphas: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each layer (paste order, later on top): ``a_i * prod_{j>i} (1 - a_j)``."""
    out: list[np.ndarray] = []
    cover = np.ones_like(alphas[0]) if alphas else None
    for a in reversed(alphas):
        out.append(a * cover)
        cover = cover * (1.0 - a)
    return out[::-1]


def _place(canvas_size: int, cut: Cutout, longest: int, rng: np.random.Generator, sigma: float,
           center: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]] | None:
    """Resize + soften ``cut`` and place it; returns (rgb, alpha, (x, y, w, h) on the canvas)."""
    pad = int(math.ceil(3 * sigma)) + 1
    rgb, alpha = resize_cutout(cut, longest, flip=bool(rng.random() < 0.5), pad=pad)
    alpha = soften_alpha(alpha, sigma)
    h, w = alpha.shape
    S = canvas_size
    core_w, core_h = w - 2 * pad, h - 2 * pad
    if core_w > S or core_h > S:
        return None
    if center is None:
        x = int(rng.integers(0, S - core_w + 1)) - pad
        y = int(rng.integers(0, S - core_h + 1)) - pad
    else:
        x = int(round(min(max(center[0] - core_w / 2, 0), S - core_w))) - pad
        y = int(round(min(max(center[1] - core_h / 2, 0), S - core_h))) - pad
    return rgb, alpha, (x, y, w, h)


def _paste_full(rgb: np.ndarray, alpha: np.ndarray, xywh: tuple[int, int, int, int], S: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Put a placed layer on an ``S x S`` canvas (clipping the padding that falls outside)."""
    x, y, w, h = xywh
    full_rgb = np.zeros((S, S, 3), np.float32)
    full_a = np.zeros((S, S), np.float32)
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + w, S), min(y + h, S)
    full_rgb[cy0:cy1, cx0:cx1] = rgb[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
    full_a[cy0:cy1, cx0:cx1] = alpha[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
    return full_rgb, full_a


def _lit(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray, xywh: tuple[int, int, int, int],
         strength: float) -> np.ndarray:
    """Lighting-match a placed layer to the background around it (margin = half its size)."""
    x, y, w, h = xywh
    S = background.shape[0]
    m = max(w, h) // 2
    ref = background[max(y - m, 0) : min(y + h + m, S), max(x - m, 0) : min(x + w + m, S)]
    return match_lighting(rgb, alpha, ref, strength)


def _finish(canvas: np.ndarray, rng: np.random.Generator, noise_std: tuple[float, float]) -> np.ndarray:
    sigma = rng.uniform(*noise_std)
    if sigma > 0:
        canvas = canvas + rng.normal(0.0, sigma, canvas.shape).astype(np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def render_classification(
    background: np.ndarray,
    cut: Cutout,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.4, 0.8),
    center_jitter: float = 0.05,
    lighting: tuple[float, float] = (0.15, 0.45),
    edge_blur: tuple[float, float] = (0.5, 1.2),
    noise_std: tuple[float, float] = (0.0, 3.0),
) -> RenderedImage:
    """One bird centred on ``background`` (uint8 ``SxSx3``, the background is kept).

    The bird's longer side is ``scale`` x S; its centre is jittered by ``center_jitter`` x S.
    Returns one box/mask (the true mask is for scoring segmentation only).
    """
    S = background.shape[0]
    sigma = rng.uniform(*edge_blur)
    longest = max(2, int(round(rng.uniform(*scale) * S)))
    c = (S / 2 + rng.uniform(-center_jitter, center_jitter) * S,
         S / 2 + rng.uniform(-center_jitter, center_jitter) * S)
    placed = _place(S, cut, longest, rng, sigma, center=c)
    assert placed is not None  # scale <= 1 always fits
    rgb, alpha, xywh = placed
    rgb = _lit(rgb, alpha, background, xywh, rng.uniform(*lighting))
    full_rgb, full_a = _paste_full(rgb, alpha, xywh, S)
    canvas = background.astype(np.float32) * (1 - full_a[..., None]) + full_rgb * full_a[..., None]
    image = _finish(canvas, rng, noise_std)
    mask = full_a > 0.5
    box = alpha_box(full_a)
    return RenderedImage(image, np.asarray([box], np.float32).reshape(-1, 4), mask[None], [cut.name])


def render_scene(
    background: np.ndarray,
    cuts: list[Cutout],
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.15, 0.6),
    min_visible: float = 0.3,
    tries: int = 30,
    lighting: tuple[float, float] = (0.15, 0.45),
    edge_blur: tuple[float, float] = (0.5, 1.2),
    noise_std: tuple[float, float] = (0.0, 3.0),
) -> RenderedImage:
    """Paste ``cuts`` (in order, later on top) at random places/sizes on ``background`` (uint8 SxSx3).

    Each bird's longer side is ``scale`` x S. A placement is redrawn (up to ``tries`` times) if it
    would leave any bird less than ``min_visible`` of its area visible; a bird that cannot be
    placed is left out. Boxes/masks are of the visible alpha > 0.5.
    """
    S = background.shape[0]
    layers: list[tuple[np.ndarray, np.ndarray]] = []  # (full rgb, full alpha)
    names: list[str] = []
    for cut in cuts:
        for _ in range(tries):
            sigma = rng.uniform(*edge_blur)
            longest = max(2, int(round(rng.uniform(*scale) * S)))
            placed = _place(S, cut, longest, rng, sigma)
            if placed is None:
                continue
            rgb, alpha, xywh = placed
            full_rgb, full_a = _paste_full(rgb, alpha, xywh, S)
            alphas = [a for _, a in layers] + [full_a]
            vis = visible_alphas(alphas)
            if all(((v > 0.5).sum() >= min_visible * max((a > 0.5).sum(), 1)) and (a > 0.5).any()
                   for v, a in zip(vis, alphas)):
                rgb = _lit(rgb, alpha, background, xywh, rng.uniform(*lighting))
                full_rgb, _ = _paste_full(rgb, alpha, xywh, S)
                layers.append((full_rgb, full_a))
                names.append(cut.name)
                break
    canvas = background.astype(np.float32)
    for full_rgb, full_a in layers:
        canvas = canvas * (1 - full_a[..., None]) + full_rgb * full_a[..., None]
    image = _finish(canvas, rng, noise_std)
    vis = visible_alphas([a for _, a in layers]) if layers else []
    boxes, masks = [], []
    for v in vis:
        box = alpha_box(v)
        assert box is not None  # guaranteed by the visibility check
        boxes.append(box)
        masks.append(v > 0.5)
    return RenderedImage(
        image,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(masks, bool).reshape(-1, S, S),
        names,
    )
