"""A compact unconditional image GAN trained on classification images (the paper's object source).

The paper starts from GAN-generated object images so that no instance is seen twice. This module
trains a small DCGAN-style model suited to small datasets (hundreds to thousands of images):

- **Generator**: latent ``z [B, latent_dim]`` -> linear -> 4x4 feature map -> (nearest 2x upsample,
  3x3 conv, BatchNorm, ReLU) per octave -> 3x3 conv -> ``tanh``: images ``[B, 3, R, R]`` in [-1, 1],
  ``R`` in {32, 64, 128}.
- **Discriminator**: spectral-normalised convolutions (3x3, then 4x4 stride 2 per octave, LeakyReLU
  0.2, no normalisation layers) -> linear score. Hinge loss by default.
- **DiffAugment** (Zhao et al., 2020): the same random, differentiable colour / translation / cutout
  transforms are applied to real *and* fake images before every discriminator call, so the
  discriminator cannot memorise a few hundred images and the generator does not learn the
  augmentations.
- An exponential moving average (EMA) of the generator weights is what gets sampled; its
  BatchNorm statistics are recomputed ("standing statistics") on fixed latents before each use, so
  sampling is a deterministic function of the latent.

Quality tracking (``fid_every``): a Frechet distance of ImageNet features, not the standard FID;
what it is and its limits: :mod:`.fid`. DiffAugment: :mod:`.diffaugment`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..utils.config import ConfigError, dump_yaml, from_dict, to_dict
from ..utils.device import resolve_device
from ..utils.files import list_images
from ..utils.image import BadImageError, read_image, write_image
from ..utils.periodic import Periodic, read_state
from ..utils.viz import make_grid
from .diffaugment import _parse_augment, diff_augment
from .fid import feature_network, frechet_distance, image_features

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "synthdet-gan-v1"
CHECKPOINT_NAME = "checkpoint.pt"
_FID_MAX_REAL = 5000
_STANDING_BATCHES = 8
_STANDING_BATCH = 64


@dataclass(frozen=True)
class GanConfig:
    """Settings of :func:`fit_gan`. Defaults suit a GPU; on a CPU use ``channels=32`` or less."""

    resolution: int = 64  # output side: 32, 64 or 128
    latent_dim: int = 128
    channels: int = 64  # width multiplier: stage width at side s is max(channels*32//s, channels//2)
    batch_size: int = 32
    iterations: int = 20000  # discriminator + generator updates
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    diffaugment: str = "color,translation,cutout"  # comma list; "" disables
    flip: bool = True  # random horizontal flips of the real images
    ema_decay: float = 0.999  # 0 = sample the raw generator
    seed: int = 0
    device: str = "auto"
    log_every: int = 50  # loss averages written to the history
    sample_every: int = 500  # sample grid PNG; 0 = only at the end
    checkpoint_every: int = 500
    fid_every: int = 2000  # 0 disables the quality metric
    fid_samples: int = 500
    fid_features: Literal["efficientnet_lite0", "random"] = "efficientnet_lite0"
    grid_samples: int = 64

    def __post_init__(self) -> None:
        if self.resolution not in (32, 64, 128):
            raise ValueError(f"resolution must be 32, 64 or 128, got {self.resolution}")
        for name in ("latent_dim", "channels", "batch_size", "grid_samples", "fid_samples", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.channels < 2:
            raise ValueError(f"channels must be >= 2, got {self.channels}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _parse_augment(self.diffaugment)


def _widths(resolution: int, channels: int) -> dict[int, int]:
    """Feature width at each spatial side 4, 8, ..., resolution."""
    sides = [4 * 2**i for i in range(int(math.log2(resolution // 4)) + 1)]
    return {s: max(channels * 32 // s, channels // 2, 1) for s in sides}


class Generator(nn.Module):
    """``z [B, latent_dim]`` -> images ``[B, 3, resolution, resolution]`` in [-1, 1]."""

    def __init__(self, latent_dim: int, resolution: int, channels: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.resolution = resolution
        w = _widths(resolution, channels)
        sides = sorted(w)
        self.fc = nn.Linear(latent_dim, w[4] * 16, bias=False)
        self.bn0 = nn.BatchNorm2d(w[4])
        blocks: list[nn.Module] = []
        for prev, s in zip(sides[:-1], sides[1:]):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(w[prev], w[s], 3, padding=1, bias=False),
                nn.BatchNorm2d(w[s]),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(w[resolution], 3, 3, padding=1)
        self.first_width = w[4]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.first_width, 4, 4)
        x = F.relu(self.bn0(x))
        return torch.tanh(self.to_rgb(self.blocks(x)))


class Discriminator(nn.Module):
    """Images ``[B, 3, R, R]`` in [-1, 1] -> real/fake scores ``[B]``; all layers spectral-normalised."""

    def __init__(self, resolution: int, channels: int):
        super().__init__()
        w = _widths(resolution, channels)
        sides = sorted(w, reverse=True)
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, w[resolution], 3, padding=1)), nn.LeakyReLU(0.2)]
        for s, nxt in zip(sides[:-1], sides[1:]):
            layers += [
                spectral_norm(nn.Conv2d(w[s], w[s], 3, padding=1)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(w[s], w[nxt], 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(w[4] * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def build_gan(cfg: GanConfig) -> tuple[Generator, Discriminator]:
    """Generator and discriminator initialised from ``cfg.seed`` only (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = Generator(cfg.latent_dim, cfg.resolution, cfg.channels)
        disc = Discriminator(cfg.resolution, cfg.channels)
    return gen, disc


# ---------------------------------------------------------------------------------------------
# Data, EMA, standing statistics.


def load_training_images(images_dir: str | Path, resolution: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Every image under ``images_dir`` centre-cropped to a square and resized: uint8 ``[N, 3, R, R]``.

    Unreadable images are skipped and counted (``info["skipped"]``); raises if none is usable.
    """
    paths = list_images(images_dir)
    arrays, skipped = [], []
    for p in paths:
        try:
            img = read_image(p, min_size=8)
        except BadImageError as e:
            skipped.append(str(e))
            continue
        h, w = img.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        img = img[y0 : y0 + s, x0 : x0 + s]
        interp = cv2.INTER_AREA if s > resolution else cv2.INTER_LINEAR
        arrays.append(cv2.resize(img, (resolution, resolution), interpolation=interp))
    if skipped:
        logger.warning("skipped %d unreadable image(s) in %s, e.g. %s", len(skipped), images_dir, skipped[0])
    if not arrays:
        raise ValueError(f"{images_dir}: no usable images ({len(paths)} files found, {len(skipped)} unreadable)")
    data = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    info = {"images_dir": str(images_dir), "num_images": len(arrays), "skipped": len(skipped)}
    logger.info("loaded %d training images from %s at %dx%d", len(arrays), images_dir, resolution, resolution)
    return data, info


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)


@torch.no_grad()
def standing_stats(gen: Generator, seed: int, device: torch.device) -> None:
    """Recompute BatchNorm running statistics of ``gen`` on fixed latents; leaves it in eval mode."""
    bns = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    gen.train()
    g = torch.Generator(device=device).manual_seed(seed)
    for _ in range(_STANDING_BATCHES):
        gen(torch.randn(_STANDING_BATCH, gen.latent_dim, generator=g, device=device))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    gen.eval()


def _step_seed(seed: int, step: int, salt: int) -> int:
    h = hashlib.blake2b(f"{seed}:{step}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def to_uint8_images(x: torch.Tensor, output_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Float images ``[B, 3, H, W]`` in ``output_range`` -> uint8 ``[B, H, W, 3]``."""
    lo, hi = output_range
    x = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@torch.no_grad()
def generate_uint8(gen: Generator, count: int, seed: int, device: torch.device, batch: int = 100) -> torch.Tensor:
    """``count`` images from ``gen`` (eval mode) with latents from ``seed``: uint8 ``[N, 3, R, R]``."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, count, batch):
        z = torch.randn(min(batch, count - i), gen.latent_dim, generator=g, device=device)
        out.append(torch.from_numpy(to_uint8_images(gen(z))).permute(0, 3, 1, 2))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Training.


@dataclass
class GanResult:
    """Outcome of :func:`fit_gan`; ``history`` rows have ``step``, ``seconds``, losses and ``fid``."""

    checkpoint: Path
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    last_grid: Path | None = None
    fid: float | None = None
    stopped_early: bool = False
    fid_features: str | None = None  # feature network the FID used ("random" after a fallback)


def _checkpoint_dict(cfg, step, gen, disc, ema, opt_g, opt_d, data_info) -> dict[str, Any]:
    """The GAN state; :meth:`Periodic.save` adds ``seconds`` and ``history``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": to_dict(cfg),
        "step": step,
        "generator": gen.state_dict(),
        "discriminator": disc.state_dict(),
        "generator_ema": ema.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "data": data_info,
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a :func:`fit_gan` checkpoint dict (weights-only, on the CPU); a clear error names the
    file if it is not one."""
    return read_state(path, CHECKPOINT_FORMAT, "GAN")


def load_gan(path: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, GanConfig]:
    """The EMA generator of a :func:`fit_gan` checkpoint (eval mode, on ``device``) and its config."""
    ckpt = read_checkpoint(path)
    cfg = from_dict(GanConfig, ckpt["config"], where=f"{path}: config")
    gen, _ = build_gan(cfg)
    gen.load_state_dict(ckpt["generator_ema"])
    return gen.to(device).eval(), cfg


def gan_fid(
    checkpoint: str | Path,
    images_dir: str | Path,
    samples: int = 500,
    features: Literal["efficientnet_lite0", "random"] = "efficientnet_lite0",
    device: str = "cpu",
) -> float:
    """The quality metric of :func:`fit_gan` (see the module docstring) for a saved checkpoint.

    ``samples`` images from the EMA generator (fixed latents) against every image (up to 5000) under
    ``images_dir`` at the checkpoint's resolution. Lower is better; compare only like with like.
    """
    dev = resolve_device(device)
    gen, cfg = load_gan(checkpoint, device=dev)
    data, _ = load_training_images(images_dir, cfg.resolution)
    if len(data) > _FID_MAX_REAL:
        data = data[np.random.default_rng(cfg.seed).choice(len(data), _FID_MAX_REAL, replace=False)]
    net = feature_network(features).to(dev)
    fake = generate_uint8(gen, samples, seed=cfg.seed + 104729, device=dev)
    fid = frechet_distance(image_features(net, fake, dev), image_features(net, data, dev))
    logger.info("FID-%s = %.2f", net.feature_name, fid)
    return fid


def _save_grid(gen: Generator, cfg: GanConfig, device: torch.device, path: Path) -> Path:
    imgs = generate_uint8(gen, cfg.grid_samples, seed=cfg.seed + 7919, device=device)
    ncols = int(math.ceil(math.sqrt(len(imgs))))
    write_image(path, make_grid(list(imgs.permute(0, 2, 3, 1).numpy()), ncols=ncols))
    return path


def fit_gan(
    images_dir: str | Path,
    cfg: GanConfig,
    out_dir: str | Path,
    resume: bool = True,
    max_seconds: float | None = None,
    progress: bool = True,
) -> GanResult:
    """Train the GAN on every image under ``images_dir``; outputs go to ``out_dir``.

    Writes ``checkpoint.pt`` (atomic; generator, EMA generator, discriminator, optimisers, step,
    resolved config, history), ``config.yaml``, ``history.json`` and sample grids
    ``samples/step_XXXXXX.png`` (+ ``samples/real.png``). With ``resume`` an existing checkpoint is
    continued (its resolution/latent_dim/channels must match ``cfg``); step ``t`` draws its batch,
    latents and augmentations from ``(cfg.seed, t)`` only, so a resumed run equals an uninterrupted
    one. ``max_seconds`` stops early (after a checkpoint) once that much wall time is spent.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    device = resolve_device(cfg.device)
    policy = _parse_augment(cfg.diffaugment)

    data, data_info = load_training_images(images_dir, cfg.resolution)
    if len(data) < cfg.batch_size:
        logger.warning("only %d images for batch size %d: batches repeat images", len(data), cfg.batch_size)
    gen, disc = build_gan(cfg)
    gen, disc = gen.to(device), disc.to(device)
    ema = copy.deepcopy(gen).requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    run = Periodic(out_dir, cfg.checkpoint_every, cfg.log_every, max_seconds)
    step = 0

    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        old = ckpt["config"]
        for key in ("resolution", "latent_dim", "channels"):
            if old.get(key) != getattr(cfg, key):
                raise ConfigError(
                    f"{ckpt_path}: checkpoint has {key}={old.get(key)} but the config says "
                    f"{getattr(cfg, key)}; use another --out folder or resume=False"
                )
        gen.load_state_dict(ckpt["generator"])
        disc.load_state_dict(ckpt["discriminator"])
        ema.load_state_dict(ckpt["generator_ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step = run.resume(ckpt)
        logger.info("resumed %s at step %d", ckpt_path, step)
    dump_yaml(cfg, out_dir / "config.yaml")
    (out_dir / "samples").mkdir(exist_ok=True)
    real_grid = data[: cfg.grid_samples].permute(0, 2, 3, 1).numpy()
    write_image(out_dir / "samples" / "real.png", make_grid(list(real_grid), ncols=int(math.ceil(math.sqrt(len(real_grid))))))

    fid_net, real_feats = None, None
    if cfg.fid_every > 0:
        fid_net = feature_network(cfg.fid_features).to(device)
        sel = data
        if len(data) > _FID_MAX_REAL:
            sel = data[np.random.default_rng(cfg.seed).choice(len(data), _FID_MAX_REAL, replace=False)]
        real_feats = image_features(fid_net, sel, device)

    def save(step_now: int, grid: bool) -> Path | None:
        standing_stats(ema, cfg.seed + 1, device)
        grid_path = _save_grid(ema, cfg, device, out_dir / "samples" / f"step_{step_now:06d}.png") if grid else None
        run.save(ckpt_path, _checkpoint_dict(cfg, step_now, gen, disc, ema, opt_g, opt_d, data_info))
        return grid_path

    last_grid: Path | None = None
    stopped_early = False
    bar = tqdm(range(step, cfg.iterations), initial=step, total=cfg.iterations, desc="gan", disable=not progress)
    gen.train()
    disc.train()
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step])
        idx = torch.from_numpy(rng.integers(0, len(data), cfg.batch_size))
        real = data[idx].to(device).float() / 127.5 - 1.0
        if cfg.flip:
            flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5).to(device)
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        tg = torch.Generator(device=device).manual_seed(_step_seed(cfg.seed, step, 0))

        # Discriminator update.
        disc.requires_grad_(True)
        with torch.no_grad():
            fake = gen(torch.randn(cfg.batch_size, cfg.latent_dim, generator=tg, device=device))
        d_real = disc(diff_augment(real, policy, tg))
        d_fake = disc(diff_augment(fake, policy, tg))
        if cfg.loss == "hinge":
            loss_d = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        else:
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator update.
        disc.requires_grad_(False)
        fake = gen(torch.randn(cfg.batch_size, cfg.latent_dim, generator=tg, device=device))
        g_out = disc(diff_augment(fake, policy, tg))
        loss_g = -g_out.mean() if cfg.loss == "hinge" else F.softplus(-g_out).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise RuntimeError(
                f"non-finite GAN loss at step {step} (d={loss_d.item()}, g={loss_g.item()}); "
                f"the last good checkpoint is {ckpt_path}; try a lower learning rate"
            )
        decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
        _ema_update(ema, gen, decay)

        vals = {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
        run.add(vals)
        bar.set_postfix(d=f"{vals['loss_d']:.3f}", g=f"{vals['loss_g']:.3f}", refresh=False)

        done = step + 1
        out_of_time = run.out_of_time()
        last = done == cfg.iterations or out_of_time
        extra: dict[str, Any] = {}
        if fid_net is not None and (done % cfg.fid_every == 0 or last):
            standing_stats(ema, cfg.seed + 1, device)
            fake_u8 = generate_uint8(ema, cfg.fid_samples, seed=cfg.seed + 104729, device=device)
            extra = {"fid": frechet_distance(image_features(fid_net, fake_u8, device), real_feats),
                     "fid_features": fid_net.feature_name}
            logger.info("step %d: FID-%s = %.2f", done, fid_net.feature_name, extra["fid"])
        run.end_step(done, last, **extra)
        grid_now = (cfg.sample_every > 0 and done % cfg.sample_every == 0) or last
        if grid_now or run.checkpoint_due(done, last):
            last_grid = save(done, grid_now) or last_grid
        if out_of_time and done < cfg.iterations:
            logger.info("time budget of %.0f s spent at step %d/%d; checkpoint saved", max_seconds, done, cfg.iterations)
            stopped_early = True
            break
    bar.close()
    if ckpt_path.is_file():
        final_step = int(read_checkpoint(ckpt_path)["step"])
    else:  # iterations == 0: save the initial model so that it can be sampled
        final_step = 0
        last_grid = save(0, True)
    history = run.history
    fids = [r["fid"] for r in history if "fid" in r]
    return GanResult(
        checkpoint=ckpt_path,
        steps=final_step,
        seconds=run.elapsed(),
        history=history,
        last_grid=last_grid,
        fid=fids[-1] if fids else None,
        stopped_early=stopped_early,
        fid_features=next((r["fid_features"] for r in reversed(history) if "fid_features" in r), None),
    )


def gan_config_from_args(base: dict[str, Any] | None = None, **overrides: Any) -> GanConfig:
    """``GanConfig`` from a YAML mapping plus non-None CLI overrides (unknown keys rejected)."""
    data = dict(base or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(GanConfig, data, where="gan config")


__all__ = [
    "GanConfig", "Generator", "Discriminator", "GanResult", "build_gan", "diff_augment", "fit_gan",
    "load_gan", "gan_fid", "read_checkpoint", "standing_stats", "to_uint8_images", "frechet_distance",
    "feature_network", "image_features", "generate_uint8", "load_training_images",
    "gan_config_from_args",
]
