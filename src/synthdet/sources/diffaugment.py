"""DiffAugment (Zhao et al., 2020) for the GAN of :mod:`.gan`: the same random, differentiable
colour / translation / cutout transforms applied to real *and* fake images before every
discriminator call, so the discriminator cannot memorise a few hundred images and the generator
does not learn the augmentations."""

from __future__ import annotations

from typing import Sequence

import torch

_AUGMENTS = ("color", "translation", "cutout")


def _parse_augment(spec: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [n for n in names if n not in _AUGMENTS]
    if bad:
        raise ValueError(f"unknown diffaugment policy {bad}; choose from {list(_AUGMENTS)}")
    return names


def diff_augment(x: torch.Tensor, policy: str | Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Apply the ``policy`` transforms (``color``, ``translation``, ``cutout``) to ``x [B, 3, H, W]``.

    Images are in [-1, 1]; randomness comes from ``generator`` only (same device as ``x``).
    Translation shifts by up to 1/8 of the side with zero padding; cutout zeroes one square of
    half the side. Differentiable with respect to ``x``.
    """
    names = _parse_augment(policy) if isinstance(policy, str) else tuple(policy)
    for name in names:
        x = _AUGMENT_FNS[name](x, generator)
    return x


def _rand(shape: Sequence[int], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(*shape, generator=g, device=x.device, dtype=x.dtype)


def _aug_color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, g) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1), x, g) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, g) + 0.5) + mean  # contrast


def _aug_translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (b,), generator=g, device=x.device)
    dx = torch.randint(-sx, sx + 1, (b,), generator=g, device=x.device)
    # Gather-based integer shift with zero padding: out[y, x] = in[y - dy, x - dx].
    ys = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # [B, H]
    xs = torch.arange(w, device=x.device)[None, :] - dx[:, None]  # [B, W]
    valid = ((ys >= 0) & (ys < h))[:, None, :, None] & ((xs >= 0) & (xs < w))[:, None, None, :]
    ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    out = x.gather(2, ys[:, None, :, None].expand(b, x.shape[1], h, w))
    out = out.gather(3, xs[:, None, None, :].expand(b, x.shape[1], h, w))
    return out * valid.to(x.dtype)


def _aug_cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b,), generator=g, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b,), generator=g, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])
    in_x = (xs >= (cx - cw // 2)[:, None]) & (xs < (cx - cw // 2 + cw)[:, None])
    cut = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x * (~cut).to(x.dtype)


_AUGMENT_FNS = {"color": _aug_color, "translation": _aug_translation, "cutout": _aug_cutout}
