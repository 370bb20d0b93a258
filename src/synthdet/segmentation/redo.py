"""ReDO: unsupervised object segmentation by redrawing (Chen, Artieres, Denoyer, NeurIPS 2019).

A compact re-implementation (read from the paper and the authors' public PyTorch code).

* ``MaskNet`` splits an image into ``K`` soft regions (softmax over ``K`` logits per pixel).
* One ``RegionGenerator`` per region redraws that region from noise ``z_k`` (conditioned on the
  mask); region ``k`` of the image is replaced: ``x_k = G_k(m, z_k) * m_k + x * (1 - m_k)``.
* A spectral-norm ``Discriminator`` judges each redrawn image (hinge loss); the mask network is
  trained adversarially through the recomposition: a region that does not match an object's
  extent makes the redrawn image look fake.
* An ``Encoder`` must recover all ``z`` from the fully redrawn image (information conservation,
  weight ``w_info``), which rules out the degenerate "one region is everything" solution.

Images are squashed (not cropped) to ``resolution`` x ``resolution`` in training and inference,
as the synthesis pipeline does with object images; masks are resized back to each input size.

**Which region is the object** (no labels): the region whose mask occupies the *least of the
image border* (a strip ``max(1, R // 16)`` px wide), averaged over up to 512 training images, is
the object region; it is computed at every checkpoint and stored in it (``object_region``).
Classification images frame their object, so the background touches the border more.
``RedoSegmenter(region=k)`` overrides it.

Training (``fit_redo``, with the collapse guard and the best-checkpoint rule) lives in
:mod:`synthdet.segmentation.redo_train`, which builds on this module (never the other way).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ..utils.config import ConfigError, from_dict
from ..utils.device import resolve_device
from ..utils.files import file_digest
from ..utils.periodic import read_state
from .base import as_rgb, safe_key

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "synthdet-redo"
CHECKPOINT_VERSION = 1
RESOLUTIONS = (32, 64, 128)
# Settings that fix the network shapes: a resumed run must use the same values.
_ARCH_FIELDS = ("resolution", "num_regions", "z_dim", "mask_channels", "mask_res_blocks",
                "gen_channels", "disc_channels", "enc_channels")


@dataclass(frozen=True)
class RedoConfig:
    """ReDO settings; defaults follow the authors' code (CUB, 128 px, GPU).

    For a short CPU run use e.g. ``resolution=64``, channels 16-32, ``iterations`` ~ 1000.
    """

    resolution: int = 128          # 64 or 128 (32 for tests)
    num_regions: int = 2           # K
    z_dim: int = 32                # noise per region
    mask_channels: int = 64        # base width of the mask network
    mask_res_blocks: int = 3
    gen_channels: int = 64         # base width of each region generator
    disc_channels: int = 64
    enc_channels: int = 64         # latent-recovery encoder
    temperature: float = 1.0       # mask softmax temperature
    batch_size: int = 20
    iterations: int = 50_000
    lr_mask: float = 1e-5
    lr_gen: float = 1e-4
    lr_disc: float = 1e-4
    lr_enc: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay_mask: float = 1e-4
    w_info: float = 5.0            # information-conservation (z recovery) weight
    init_gain: float = 0.8         # orthogonal init gain
    hflip: bool = True             # random horizontal flips of training images
    max_images: int | None = None  # use at most this many training images
    time_limit_minutes: float | None = None  # stop (with a checkpoint) after this wall time
    checkpoint_every: int = 500
    log_every: int = 50            # history.json row: loss means over this many steps
    # Collapse guard (see synthdet.segmentation.redo_train): a log window whose smallest region wins
    # fewer than collapse_area of the pixels is collapsed; collapse_windows of them in a row restart
    # from the last good checkpoint with a new seed, at most max_restarts times.
    collapse_area: float = 0.05
    collapse_windows: int = 3
    max_restarts: int = 3
    preview_every: int = 500
    preview_images: int = 6
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"redo.resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.num_regions < 2:
            raise ConfigError("redo.num_regions must be >= 2")
        if min(self.mask_channels, self.gen_channels, self.disc_channels, self.enc_channels) < 4:
            raise ConfigError("redo channel widths must be >= 4")
        if self.mask_channels % 4:
            raise ConfigError("redo.mask_channels must be a multiple of 4")
        if self.batch_size < 1 or self.iterations < 0:
            raise ConfigError("redo.batch_size must be >= 1 and redo.iterations >= 0")
        if min(self.checkpoint_every, self.log_every, self.collapse_windows) < 1 or self.max_restarts < 0:
            raise ConfigError("redo.checkpoint_every, log_every and collapse_windows must be >= 1, "
                              "max_restarts >= 0")
        if not 0.0 <= self.collapse_area < 1.0 / self.num_regions:
            raise ConfigError(f"redo.collapse_area must be in [0, 1/num_regions), got {self.collapse_area}")


class RedoDivergedError(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is left in place."""


# --------------------------------------------------------------------------- networks


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

    def __init__(self, cfg: RedoConfig):
        super().__init__()
        self.cfg = cfg
        self.mask = MaskNet(cfg.num_regions, cfg.mask_channels, cfg.mask_res_blocks, cfg.temperature)
        self.gens = nn.ModuleList([RegionGenerator(cfg.resolution, cfg.z_dim, cfg.gen_channels)
                                   for _ in range(cfg.num_regions)])
        self.disc = ResNetDown(cfg.resolution, cfg.disc_channels, 1)
        self.enc = ResNetDown(cfg.resolution, cfg.enc_channels, cfg.num_regions * cfg.z_dim)

    def redraw(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x (B, 3, R, R)`` in [-1, 1], ``z (B, K, z_dim)`` -> masks ``(B, K, R, R)``,
        region drawings ``h (B, K, 3, R, R)`` and redrawn images ``(B, K, 3, R, R)`` (region k replaced).
        """
        m = self.mask(x)
        h = torch.stack([g(m[:, k : k + 1], z[:, k]) for k, g in enumerate(self.gens)], 1)
        return m, h, h + (1 - m.unsqueeze(2)) * x.unsqueeze(1)

    def recover_z(self, h: torch.Tensor) -> torch.Tensor:
        """Fully redrawn image ``h.sum(1)`` -> recovered noise ``(B, K, z_dim)``."""
        return self.enc(h.sum(1)).view(h.shape[0], self.cfg.num_regions, self.cfg.z_dim)


def build_redo(cfg: RedoConfig) -> Redo:
    """The ReDO networks with orthogonal init (gain ``cfg.init_gain``), seeded by ``cfg.seed``.

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
    return model


# --------------------------------------------------------------------------- data


def to_square_tensor(images: Sequence[np.ndarray], resolution: int) -> torch.Tensor:
    """uint8 HxWx3 images -> float ``(B, 3, R, R)`` in [-1, 1], each squashed to R x R."""
    out = []
    for im in images:
        im = as_rgb(im)
        h, w = im.shape[:2]
        interp = cv2.INTER_AREA if min(h, w) > resolution else cv2.INTER_LINEAR
        out.append(cv2.resize(im, (resolution, resolution), interpolation=interp))
    arr = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return arr / 127.5 - 1.0


def border_occupancy(masks: torch.Tensor) -> torch.Tensor:
    """Mean mask value of each region on the image border: masks ``(B, K, R, R)`` -> ``(K,)``."""
    r = masks.shape[-1]
    b = max(1, r // 16)
    border = torch.ones(r, r, dtype=torch.bool, device=masks.device)
    border[b:-b, b:-b] = False
    return masks[:, :, border].mean(dim=(0, 2))


@torch.inference_mode()
def choose_object_region(mask_net: MaskNet, data: torch.Tensor, device: torch.device, limit: int = 512,
                         batch_size: int = 64) -> tuple[int, list[float]]:
    """The object region: the one with the least border occupancy over ``data[:limit]``."""
    occ = []
    for i in range(0, min(len(data), limit), batch_size):
        x = data[i : min(i + batch_size, limit)].float().to(device) / 127.5 - 1.0
        occ.append(border_occupancy(mask_net(x)) * len(x))
    total = torch.stack(occ).sum(0) / min(len(data), limit)
    return int(total.argmin()), [round(float(v), 4) for v in total]


# --------------------------------------------------------------------------- checkpoints and collapse guard


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a :func:`~.redo_train.fit_redo` folder its ``best.pt`` (else its ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    return path


def load_redo_checkpoint(path: str | os.PathLike, resolution: int | None = None) -> dict[str, Any]:
    """Read and validate a ReDO checkpoint (a file, or a :func:`~.redo_train.fit_redo` folder: its ``best.pt``,
    else its ``last.pt``), weights-only.

    Raises ``ValueError`` with a clear message for a file that is not a synthdet ReDO
    checkpoint, one written by another format version, or one of another ``resolution``.
    """
    path = checkpoint_file(path)
    state = read_state(path, CHECKPOINT_FORMAT, "ReDO")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: ReDO checkpoint format version {state.get('version')}, but this synthdet "
                         f"reads version {CHECKPOINT_VERSION}; retrain with `synthdet segment fit`")
    if resolution is not None and state["resolution"] != resolution:
        raise ValueError(f"{path}: ReDO checkpoint is for {state['resolution']} px images, "
                         f"but {resolution} px was requested")
    return state


# --------------------------------------------------------------------------- inference


class RedoSegmenter:
    """``redo``: the trained mask network; object region from the checkpoint (or ``region=``).

    Each image is squashed to the checkpoint's resolution, segmented, and the object region's
    soft mask is resized back to the image's ``HxW``.
    """

    name = "redo"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu", batch_size: int = 32,
                 region: int | None = None, resolution: int | None = None):
        path = checkpoint_file(checkpoint)
        state = load_redo_checkpoint(path, resolution=resolution)
        self.config = from_dict(RedoConfig, state["config"], where=f"{path} config")
        self.resolution = self.config.resolution
        self.region = int(state["object_region"] if region is None else region)
        if not 0 <= self.region < self.config.num_regions:
            raise ValueError(f"region {self.region} out of range for {self.config.num_regions} regions")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.net = MaskNet(self.config.num_regions, self.config.mask_channels, self.config.mask_res_blocks,
                           self.config.temperature)
        self.net.load_state_dict(state["mask"])
        self.net.to(self.device).eval()
        self.checkpoint = path
        self.step = int(state["step"])
        self._key = safe_key("redo", file_digest(path, 12), f"r{self.region}")

    def cache_key(self) -> str:
        return self._key

    @torch.inference_mode()
    def segment(self, images: Sequence[np.ndarray], paths: Sequence[Path] | None = None) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(images), self.batch_size):
            chunk = [as_rgb(im) for im in images[i : i + self.batch_size]]
            x = to_square_tensor(chunk, self.resolution).to(self.device)
            masks = self.net(x)[:, self.region].float().cpu().numpy()
            for im, m in zip(chunk, masks):
                h, w = im.shape[:2]
                if (h, w) != m.shape:
                    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
                out.append(np.clip(m, 0.0, 1.0).astype(np.float32))
        return out


def redo_config_with(cfg: RedoConfig, **changes: Any) -> RedoConfig:
    """``cfg`` with some fields replaced (``None`` values ignored), validated."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})

