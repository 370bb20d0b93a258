"""The ReDO networks (Chen, Artieres, Denoyer, NeurIPS 2019), read from the paper and the authors' code.

* :class:`MaskNet`: the official mask network on pixels (down-sampling, residual blocks, pyramid
  pooling, up-sampling); ``K`` soft regions by a softmax.
* :class:`FeatureMaskNet`: the CPU recipe's mask network on frozen EfficientNet-Lite0 ImageNet
  features (the offline weights ``cosegment`` uses): a small head on the stride-16 / stride-32
  maps gives a coarse logit, up-sampled to the working resolution and corrected by a few
  convolutions over the image's pixels (edges); two regions ``[m, 1 - m]``.
* :class:`RegionGenerator`: redraws one region from noise ``z`` conditioned on the mask.
* :class:`ResNetDown`: spectral-norm encoder, the discriminator and the information-conservation
  network (recovers every ``z`` from the fully redrawn image).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

if TYPE_CHECKING:
    from .redo import RedoConfig

# Channels of the Lite0 feature maps FeatureMaskNet reads (cosegment.lite0_features: blocks 10 and 14).
LITE0_CHANNELS = (112, 192)


def _film(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Feature-wise modulation: ``x * (1 + gamma) + beta`` with ``params = [gamma, beta]``."""
    gamma, beta = params.chunk(2, dim=1)
    return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, 1, 1),
        )
        self.post = nn.Sequential(nn.InstanceNorm2d(ch, affine=True), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(x + self.body(x))


def _in_relu(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.InstanceNorm2d(cout, affine=True), nn.ReLU()]


class MaskNet(nn.Module):
    """Image ``(B, 3, R, R)`` in [-1, 1] -> soft masks ``(B, K, R, R)`` summing to 1 over K.

    Down-sampling by 4, residual blocks, a pyramid-pooling context (bins 1, 2, 3, 6), up-sampling.
    """

    _BINS = (1, 2, 3, 6)

    def __init__(self, num_regions: int = 2, ch: int = 64, res_blocks: int = 3, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, ch // 4, 7, bias=False), nn.InstanceNorm2d(ch // 4, affine=True),
            nn.ReLU(), *_in_relu(ch // 4, ch // 2, 3, 2), *_in_relu(ch // 2, ch, 3, 2),
        )
        self.res = nn.Sequential(*[_ResBlock(ch) for _ in range(res_blocks)])
        self.pyramid = nn.ModuleList([nn.Conv2d(ch, 1, 1) for _ in self._BINS])
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2), *_in_relu(ch + len(self._BINS), ch // 2, 3),
            nn.Upsample(scale_factor=2), *_in_relu(ch // 2, ch // 4, 3),
            nn.ReflectionPad2d(3), nn.Conv2d(ch // 4, num_regions, 7),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.res(self.down(x))
        size = f.shape[-2:]
        ctx = [F.interpolate(conv(F.adaptive_avg_pool2d(f, b)), size=size, mode="bilinear", align_corners=False)
               for b, conv in zip(self._BINS, self.pyramid)]
        return torch.softmax(self.up(torch.cat([f, *ctx], 1)) / self.temperature, dim=1)


class FeatureMaskNet(nn.Module):
    """``(x (B, 3, R, R) in [-1, 1], f16 (B, 112, h, w), f32 (B, 192, h/2, w/2))`` -> soft masks
    ``(B, 2, R, R)``: region 0 ``sigmoid(logit / T)``, region 1 its complement.

    ``f16`` / ``f32``: frozen Lite0 features of the same image (any ``h``); the coarse logit from
    them is up-sampled to ``R`` and a pixel branch (``pixel_ch`` channels) adds a correction,
    zero at initialisation, so a warm start of the coarse head is what the network starts from.
    """

    def __init__(self, ch: int = 64, pixel_ch: int = 16, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.head = nn.Sequential(nn.Conv2d(sum(LITE0_CHANNELS), ch, 1), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU())
        self.coarse = nn.Conv2d(ch, 1, 1)
        self.context = nn.Conv2d(ch, 8, 1)
        self.pixels = nn.Sequential(nn.Conv2d(3, pixel_ch, 3, 1, 1), nn.ReLU(),
                                    nn.Conv2d(pixel_ch, pixel_ch, 3, 1, 1), nn.ReLU())
        self.fine = nn.Sequential(nn.Conv2d(pixel_ch + 9, pixel_ch, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(pixel_ch, 1, 3, 1, 1))

    def zero_correction(self) -> None:
        """Make the pixel branch's correction zero (after a generic initialisation)."""
        nn.init.zeros_(self.fine[-1].weight)
        nn.init.zeros_(self.fine[-1].bias)

    def logits(self, x: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        """Region-0 logits ``(B, 1, R, R)`` (before the temperature)."""
        f = torch.cat([f16, F.interpolate(f32, size=f16.shape[-2:], mode="bilinear", align_corners=False)], 1)
        h = self.head(f)
        size = x.shape[-2:]
        coarse = F.interpolate(self.coarse(h), size=size, mode="bilinear", align_corners=False)
        ctx = F.interpolate(self.context(h), size=size, mode="bilinear", align_corners=False)
        return coarse + self.fine(torch.cat([self.pixels(x), ctx, coarse], 1))

    def forward(self, x: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.logits(x, f16, f32) / self.temperature)
        return torch.cat([m, 1 - m], 1)


class _GenBlock(nn.Module):
    """Up-sampling residual block, modulated by z and conditioned on the region mask."""

    def __init__(self, cin: int, cout: int, z_dim: int):
        super().__init__()
        self.norm_a, self.film_a = nn.InstanceNorm2d(cin), nn.Linear(z_dim, 2 * cin)
        self.conv_a = spectral_norm(nn.Conv2d(cin + 1, cout, 3, 1, 1, bias=False))
        self.norm_b, self.film_b = nn.InstanceNorm2d(cout), nn.Linear(z_dim, 2 * cout)
        self.conv_b = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(_film(self.norm_a(x), self.film_a(z))), scale_factor=2)
        h = self.conv_a(torch.cat([h, m], 1))
        h = self.conv_b(F.relu(_film(self.norm_b(h), self.film_b(z))))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class RegionGenerator(nn.Module):
    """``(mask (B, 1, R, R), z (B, z_dim))`` -> redrawn region ``(B, 3, R, R)``, zero outside the mask."""

    def __init__(self, resolution: int = 128, z_dim: int = 32, ch: int = 64):
        super().__init__()
        n = int(math.log2(resolution)) - 2  # 4x4 -> R
        widths = [ch * 2 ** max(n - 1 - k, 0) for k in range(-1, n)]  # [start, block outputs...]
        self.fc = nn.Linear(z_dim, 16 * widths[0])
        self.blocks = nn.ModuleList([_GenBlock(widths[k], widths[k + 1], z_dim) for k in range(n)])
        self.norm_out, self.film_out = nn.InstanceNorm2d(ch), nn.Linear(z_dim, 2 * ch)
        self.conv_out = spectral_norm(nn.Conv2d(ch + 1, 3, 3, 1, 1))

    def forward(self, m: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        for blk in self.blocks:
            x = blk(x, F.adaptive_avg_pool2d(m, x.shape[-1] * 2), z)
        x = torch.tanh(self.conv_out(torch.cat([F.relu(_film(self.norm_out(x), self.film_out(z))), m], 1)))
        return x * m


class _DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool = True, first: bool = False):
        super().__init__()
        layers: list[nn.Module] = [] if first else [nn.ReLU()]
        layers += [spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1)), nn.ReLU(), spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))]
        if down:
            layers.append(nn.AvgPool2d(2))
        self.body = nn.Sequential(*layers)
        if down:
            self.skip: nn.Module = nn.Sequential(nn.AvgPool2d(2), spectral_norm(nn.Conv2d(cin, cout, 1)))
        else:
            self.skip = nn.Identity() if cin == cout else spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class ResNetDown(nn.Module):
    """Spectral-norm residual encoder ``(B, 3, R, R)`` -> ``(B, out_dim)``; R halves to 4x4.

    Used as the discriminator (``out_dim=1``) and as the latent-recovery encoder (``K * z_dim``).
    """

    def __init__(self, resolution: int = 128, ch: int = 64, out_dim: int = 1):
        super().__init__()
        n = int(math.log2(resolution)) - 2
        widths = [ch * 2**k for k in range(n)]
        blocks = [_DownBlock(3, widths[0], first=True)]
        blocks += [_DownBlock(widths[k - 1], widths[k]) for k in range(1, n)]
        blocks.append(_DownBlock(widths[-1], widths[-1], down=False))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.blocks(x)).sum(dim=(2, 3)))


class Redo(nn.Module):
    """All four ReDO networks; :meth:`redraw` is the forward pass shared by training and previews."""

    def __init__(self, cfg: "RedoConfig"):
        super().__init__()
        self.cfg = cfg
        self.mask = build_mask_net(cfg)
        self.gens = nn.ModuleList([RegionGenerator(cfg.resolution, cfg.z_dim, cfg.gen_channels)
                                   for _ in range(cfg.num_regions)])
        self.disc = ResNetDown(cfg.resolution, cfg.disc_channels, 1)
        self.enc = ResNetDown(cfg.resolution, cfg.enc_channels, cfg.num_regions * cfg.z_dim)

    def masks(self, x: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Soft masks ``(B, K, R, R)`` of ``x``; ``feats``: its Lite0 ``(f16, f32)`` for :class:`FeatureMaskNet`."""
        return run_mask_net(self.mask, x, feats)

    def redraw(self, x: torch.Tensor, z: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, 3, R, R)`` in [-1, 1], ``z (B, K, z_dim)`` -> masks ``(B, K, R, R)``,
        region drawings ``h (B, K, 3, R, R)`` and redrawn images ``(B, K, 3, R, R)`` (region k replaced).
        """
        m = self.masks(x, feats)
        h = torch.stack([g(m[:, k : k + 1], z[:, k]) for k, g in enumerate(self.gens)], 1)
        return m, h, h + (1 - m.unsqueeze(2)) * x.unsqueeze(1)

    def recover_z(self, h: torch.Tensor) -> torch.Tensor:
        """Fully redrawn image ``h.sum(1)`` -> recovered noise ``(B, K, z_dim)``."""
        return self.enc(h.sum(1)).view(h.shape[0], self.cfg.num_regions, self.cfg.z_dim)


def build_mask_net(cfg: "RedoConfig") -> nn.Module:
    """The mask network ``cfg.mask_net`` names (``lite0``: :class:`FeatureMaskNet`, ``pixels``: :class:`MaskNet`)."""
    if cfg.mask_net == "lite0":
        return FeatureMaskNet(cfg.mask_channels, cfg.pixel_channels, cfg.temperature)
    return MaskNet(cfg.num_regions, cfg.mask_channels, cfg.mask_res_blocks, cfg.temperature)


def run_mask_net(net: nn.Module, x: torch.Tensor, feats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Soft masks of either mask network (``feats`` is required by :class:`FeatureMaskNet`)."""
    if isinstance(net, FeatureMaskNet):
        if feats is None:
            raise ValueError("the lite0 mask network needs the images' Lite0 features")
        return net(x, *feats)
    return net(x)


def build_redo(cfg: "RedoConfig") -> Redo:
    """The ReDO networks with orthogonal init (gain ``cfg.init_gain``), seeded by ``cfg.seed``;
    a :class:`FeatureMaskNet` starts with a zero pixel correction.

    The global torch RNG is forked, so building a model does not disturb the caller's RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Redo(cfg)
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                weight = mod.parametrizations.weight.original if hasattr(mod, "parametrizations") else mod.weight
                nn.init.orthogonal_(weight, cfg.init_gain)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        if isinstance(model.mask, FeatureMaskNet):
            model.mask.zero_correction()
    return model
