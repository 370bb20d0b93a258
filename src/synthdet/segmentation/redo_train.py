"""ReDO training (:func:`fit_redo`) with its collapse guard; the networks and the segmenter are in
:mod:`synthdet.segmentation.redo`.

**Collapse guard.** ReDO can collapse to one region covering (almost) the whole image and the other
(almost) nothing: the official code restarts such runs (its ``--autoRestart``) and users report
the failure (its issue 3). Every ``log_every`` steps the history gets the window's mean of
``min_region_area``, the fraction of pixels the smallest region wins (argmax over regions); a
window whose value is below ``collapse_area`` (default 0.05: one region holds more than 95 % of the
pixels, with two regions) is collapsed, and ``collapse_windows`` (default 3) collapsed windows in
a row restart training from ``good.pt`` (the last checkpoint taken outside a collapse) with the
seed :func:`restart_seed` ``(seed, restart count)``; a ``good.pt`` is tried once: when the run
collapses again before writing a new one (or there is none), the restart is a fresh initialisation
with the new seed, as the official code's. At most ``max_restarts`` (default 3) restarts; a
further collapse stops training. Restarts (``from_step`` 0 = fresh) and the stop are rows of
``history.json`` (``"event": "restart"`` / ``"stopped"``).

**Best checkpoint.** ``best.pt`` is the checkpoint taken outside a collapse with the lowest
window-mean information-conservation loss ``loss_info`` (the error of recovering every region's
noise ``z`` from the fully redrawn image): it needs no labels, it is the term ReDO adds against the
one-region solution (a region that covers nothing cannot carry its ``z``, so the error rises), and
unlike the adversarial losses it is not a moving target set by the discriminator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..utils.checkpoint import read_torch_file
from ..utils.config import dump_yaml, to_dict
from ..utils.device import resolve_device
from ..utils.files import list_images
from ..utils.image import BadImageError, read_image, write_image
from ..utils.periodic import Periodic
from ..utils.viz import make_grid
from .redo import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _ARCH_FIELDS, Redo, RedoConfig, RedoDivergedError,
                   build_redo, choose_object_region, load_redo_checkpoint)

log = logging.getLogger(__name__)


def load_training_images(images_dir: str | os.PathLike, resolution: int, max_images: int | None = None,
                         progress: bool = True) -> torch.Tensor:
    """All images under ``images_dir`` squashed to R x R: uint8 ``(N, 3, R, R)``; bad files skipped."""
    paths = list_images(images_dir)
    if max_images is not None:
        paths = paths[:max_images]
    data, skipped = [], 0
    for p in tqdm(paths, desc="loading images", unit="img", disable=not progress):
        try:
            im = read_image(p)
        except BadImageError as e:
            skipped += 1
            log.warning("skipping %s", e)
            continue
        h, w = im.shape[:2]
        interp = cv2.INTER_AREA if min(h, w) > resolution else cv2.INTER_LINEAR
        data.append(cv2.resize(im, (resolution, resolution), interpolation=interp))
    if skipped:
        log.warning("skipped %d of %d images in %s", skipped, len(paths), images_dir)
    if len(data) < 2:
        raise ValueError(f"ReDO needs at least 2 readable images in {images_dir}, found {len(data)}")
    return torch.from_numpy(np.stack(data)).permute(0, 3, 1, 2).contiguous()


def _batch(data: torch.Tensor, size: int, gen: torch.Generator, hflip: bool, device: torch.device) -> torch.Tensor:
    idx = torch.randint(len(data), (size,), generator=gen)
    x = data[idx].float() / 127.5 - 1.0
    if hflip:
        flip = torch.rand(size, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
    return x.to(device)


def restart_seed(seed: int, restarts: int) -> int:
    """Seed of the training stream after ``restarts`` collapse restarts (``seed`` itself for 0)."""
    if restarts == 0:
        return int(seed)
    digest = hashlib.blake2b(f"redo-restart:{seed}:{restarts}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def region_areas(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of the pixels each region wins (argmax): soft masks ``(B, K, R, R)`` -> ``(K,)``."""
    return F.one_hot(masks.argmax(1), masks.shape[1]).float().mean(dim=(0, 1, 2))


@dataclass
class CollapseGuard:
    """Watches the history rows of :func:`fit_redo` for a collapse (see :class:`RedoConfig`).

    ``streak``: consecutive collapsed windows; ``restarts``: restarts done; ``best``: lowest
    window-mean ``loss_info`` of a checkpoint taken outside a collapse (the ``best.pt`` score);
    ``used``: ``"<restarts>:<step>"`` of the ``good.pt`` the last restart found (tried once).
    """

    streak: int = 0
    restarts: int = 0
    best: float = math.inf
    used: str = ""

    def update(self, row: dict[str, Any], cfg: RedoConfig) -> str:
        """``"ok"``, ``"restart"`` (collapsed for ``collapse_windows`` windows, restarts left) or
        ``"give_up"`` (collapsed, no restart left) after history row ``row``."""
        collapsed = row.get("min_region_area", 1.0) < cfg.collapse_area
        self.streak = self.streak + 1 if collapsed else 0
        if self.streak < cfg.collapse_windows:
            return "ok"
        return "restart" if self.restarts < cfg.max_restarts else "give_up"

    def exhausted(self, cfg: RedoConfig) -> bool:
        """Training stopped collapsed with no restart left (a resumed run does not go on)."""
        return self.streak >= cfg.collapse_windows and self.restarts >= cfg.max_restarts


class _Training:
    """The ReDO networks, their optimisers and the batch/noise generator of one run."""

    def __init__(self, cfg: RedoConfig, device: torch.device, seed: int | None = None):
        self.cfg, self.device = cfg, device
        seed = cfg.seed if seed is None else seed
        self.model = build_redo(dataclasses.replace(cfg, seed=seed)).to(device)
        m, c = self.model, cfg
        self.opts = {
            "mask": torch.optim.Adam(m.mask.parameters(), lr=c.lr_mask, betas=c.betas,
                                     weight_decay=c.weight_decay_mask),
            "gen": torch.optim.Adam([{"params": m.gens.parameters(), "lr": c.lr_gen},
                                     {"params": m.enc.parameters(), "lr": c.lr_enc}], betas=c.betas),
            "disc": torch.optim.Adam(m.disc.parameters(), lr=c.lr_disc, betas=c.betas),
        }
        self.gen = torch.Generator().manual_seed(seed)

    def state(self, step: int, data: torch.Tensor, guard: CollapseGuard, losses: dict) -> dict[str, Any]:
        object_region, occupancy = choose_object_region(self.model.mask, data, self.device)
        m = self.model
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "resolution": self.cfg.resolution,
                "config": to_dict(self.cfg), "step": step, "mask": m.mask.state_dict(),
                "gens": m.gens.state_dict(), "disc": m.disc.state_dict(), "enc": m.enc.state_dict(),
                "optim": {k: o.state_dict() for k, o in self.opts.items()}, "rng": self.gen.get_state(),
                "object_region": object_region, "border_occupancy": occupancy, "losses": losses,
                "guard": dataclasses.asdict(guard)}

    def load(self, state: dict[str, Any], rng: bool = True) -> None:
        for name in ("mask", "gens", "disc", "enc"):
            getattr(self.model, name).load_state_dict(state[name])
        for k, o in self.opts.items():
            o.load_state_dict(state["optim"][k])
        if rng:
            self.gen.set_state(state["rng"])

    def step(self, data: torch.Tensor, step: int, ckpt: Path) -> dict[str, float]:
        """One update of all four networks; returns the step's losses and smallest region area."""
        cfg, model, opts, gen, device = self.cfg, self.model, self.opts, self.gen, self.device
        B, K = cfg.batch_size, cfg.num_regions
        x = _batch(data, B, gen, cfg.hflip, device)
        x_real = _batch(data, B, gen, cfg.hflip, device)
        z = torch.randn(B, K, cfg.z_dim, generator=gen).to(device)
        # Mask network, generators and encoder: fool D and keep z recoverable.
        model.disc.requires_grad_(False)
        m, h, x_gen = model.redraw(x, z)
        loss_adv = -model.disc(x_gen.flatten(0, 1)).mean()
        loss_info = F.mse_loss(model.recover_z(h), z)
        loss_g = loss_adv + cfg.w_info * loss_info
        # Discriminator: hinge loss on real images vs the (detached) redrawn ones.
        model.disc.requires_grad_(True)
        loss_d = (F.relu(1 - model.disc(x_real)).mean() + F.relu(1 + model.disc(x_gen.detach().flatten(0, 1))).mean())
        if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
            where = (f"the last checkpoint is {ckpt} (step {_ckpt_step(ckpt)})" if ckpt.is_file()
                     else "no checkpoint was written yet")
            raise RedoDivergedError(f"ReDO training diverged at step {step} (loss_g={loss_g.item()}, "
                                    f"loss_d={loss_d.item()}); {where}. Try lower learning rates.")
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss_g.backward()
        opts["mask"].step()
        opts["gen"].step()
        opts["disc"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["disc"].step()
        return {"loss_d": loss_d.item(), "loss_g_adv": loss_adv.item(), "loss_info": loss_info.item(),
                "min_region_area": float(region_areas(m.detach()).min())}


# --------------------------------------------------------------------------- training


@torch.no_grad()
def _preview(model: Redo, x: torch.Tensor, z: torch.Tensor, path: Path) -> None:
    """One row per image: input, K masks, K redrawn images, the fully redrawn image."""
    was_training = model.training
    model.eval()
    m, h, xr = model.redraw(x, z)

    def u8(t: torch.Tensor) -> np.ndarray:
        return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    tiles = []
    for i in range(len(x)):
        tiles.append(u8(x[i]))
        tiles += [(m[i, k] * 255).round().byte().cpu().numpy() for k in range(m.shape[1])]
        tiles += [u8(xr[i, k]) for k in range(m.shape[1])]
        tiles.append(u8(h[i].sum(0)))
    write_image(path, make_grid(tiles, ncols=2 + 2 * m.shape[1]))
    model.train(was_training)


def _resume(path: Path, cfg: RedoConfig) -> dict[str, Any]:
    state = load_redo_checkpoint(path, resolution=cfg.resolution)
    old = state["config"]
    diff = [f for f in _ARCH_FIELDS if old.get(f) != getattr(cfg, f)]
    if diff:
        raise ValueError(f"{path}: cannot resume, network settings differ: "
                         + ", ".join(f"{f}={old.get(f)} (checkpoint) vs {getattr(cfg, f)}" for f in diff)
                         + "; use another --out or resume=False")
    return state


def _restart(tr: _Training, guard: CollapseGuard, out: Path, step: int, run: Periodic) -> tuple[_Training, int]:
    """Collapse: go back to ``good.pt`` with the next restart seed; when an earlier restart already
    went back to that same checkpoint (the run collapsed again from it) or there is none, start
    from a fresh initialisation with that seed instead, as the official code always does."""
    guard.restarts, guard.streak = guard.restarts + 1, 0
    seed = restart_seed(tr.cfg.seed, guard.restarts)
    good = out / "good.pt"
    new = _Training(tr.cfg, tr.device, seed)
    state = load_redo_checkpoint(good) if good.is_file() else None
    tag = f"{state.get('guard', {}).get('restarts', 0)}:{state['step']}" if state is not None else ""
    back_to = 0
    if state is not None and tag != guard.used:
        new.load(state, rng=False)
        back_to = int(state["step"])
    guard.used = tag
    log.warning("ReDO collapsed at step %d (smallest region < %.3f for %d windows): restart %d/%d from %s "
                "with seed %d", step, tr.cfg.collapse_area, tr.cfg.collapse_windows, guard.restarts,
                tr.cfg.max_restarts, f"step {back_to} ({good.name})" if back_to else "a fresh initialisation",
                seed)
    run.note(step, event="restart", restart=guard.restarts, seed=seed, from_step=back_to)
    return new, back_to


def _checkpoint(tr: _Training, run: Periodic, out: Path, step: int, data: torch.Tensor, guard: CollapseGuard,
                row: dict[str, Any] | None) -> None:
    """``last.pt``; ``good.pt`` outside a collapse; ``best.pt`` when the window's ``loss_info`` is the lowest."""
    losses = {k: v for k, v in (row or {}).items() if k not in ("step", "seconds")}
    score = losses.get("loss_info", math.inf)
    good = guard.streak == 0 and losses.get("min_region_area", 0.0) >= tr.cfg.collapse_area
    best = good and score < guard.best
    if best:
        guard.best = score
    state = tr.state(step, data, guard, losses)
    if best:
        run.save(out / "best.pt", state, write_history=False)
    if good:
        run.save(out / "good.pt", state, write_history=False)
    run.save(out / "last.pt", state)


def fit_redo(images_dir: str | os.PathLike, cfg: RedoConfig, out_dir: str | os.PathLike, resume: bool = True,
             progress: bool = True) -> Path:
    """Train ReDO on the (unlabelled) images under ``images_dir``; returns ``best.pt`` (else ``last.pt``).

    Writes into ``out_dir``: ``last.pt`` every ``cfg.checkpoint_every`` steps and at the end,
    ``good.pt`` (the last checkpoint taken outside a collapse), ``best.pt`` (the one with the
    lowest window-mean information-conservation loss outside a collapse), ``history.json``
    (loss means every ``cfg.log_every`` steps, restarts), ``previews/step_XXXXXX.png`` and
    ``config.yaml``. A collapse (see :class:`RedoConfig`) restarts from ``good.pt`` with the seed
    :func:`restart_seed`, at most ``cfg.max_restarts`` times, then training stops. With ``resume``
    an existing ``last.pt`` is continued up to ``cfg.iterations`` (its network shapes must match).
    A non-finite loss raises :class:`RedoDivergedError` and leaves the checkpoints in place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    data = load_training_images(images_dir, cfg.resolution, cfg.max_images, progress)
    log.info("ReDO: %d training images at %d px on %s", len(data), cfg.resolution, device)
    limit = None if cfg.time_limit_minutes is None else 60 * cfg.time_limit_minutes
    run, guard = Periodic(out, cfg.checkpoint_every, cfg.log_every, limit), CollapseGuard()
    tr, step, row = _Training(cfg, device), 0, None
    if resume and (out / "last.pt").is_file():
        state = _resume(out / "last.pt", cfg)
        tr.load(state)
        step, guard = run.resume(state), CollapseGuard(**state.get("guard", {}))
        log.info("resuming ReDO from %s at step %d", out / "last.pt", step)
        if guard.exhausted(cfg):
            log.warning("ReDO: %s stopped collapsed after %d restarts; raise max_restarts to go on",
                        out / "last.pt", guard.restarts)
            step = cfg.iterations
    dump_yaml(to_dict(cfg), out / "config.yaml")
    # Fixed preview inputs and noise (own generator: previews do not change the training stream).
    pgen = torch.Generator().manual_seed(cfg.seed + 1)
    n_prev = min(cfg.preview_images, len(data))
    x_prev = data[torch.randperm(len(data), generator=pgen)[:n_prev]].float().to(device) / 127.5 - 1.0
    z_prev = torch.randn(n_prev, cfg.num_regions, cfg.z_dim, generator=pgen).to(device)
    bar = tqdm(total=cfg.iterations, initial=step, desc="ReDO", unit="it", disable=not progress)
    tr.model.train()
    while step < cfg.iterations:
        losses = tr.step(data, step, out / "last.pt")
        step += 1
        run.add(losses)
        bar.update(1)
        bar.set_postfix(d=f"{losses['loss_d']:.3f}", z=f"{losses['loss_info']:.3f}",
                        area=f"{losses['min_region_area']:.2f}")
        out_of_time = run.out_of_time()
        last = step == cfg.iterations or out_of_time
        row = run.end_step(step, last)
        if cfg.preview_every and (step % cfg.preview_every == 0 or last):
            _preview(tr.model, x_prev, z_prev, out / "previews" / f"step_{step:06d}.png")
        action = guard.update(row, cfg) if row is not None else "ok"
        if action == "restart":
            tr, step = _restart(tr, guard, out, step, run)
            bar.n = step
            run.save(out / "last.pt", tr.state(step, data, guard, {}))
            if out_of_time:
                break
            continue
        if action == "give_up":
            log.warning("ReDO collapsed again after %d restarts: training stops at step %d", guard.restarts, step)
            run.note(step, event="stopped", reason="collapsed", restarts=guard.restarts)
        if run.checkpoint_due(step, last) or action == "give_up":
            _checkpoint(tr, run, out, step, data, guard, row)
        if out_of_time:
            log.info("ReDO: time limit of %.1f min reached at step %d", cfg.time_limit_minutes, step)
        if out_of_time or action == "give_up":
            break
    bar.close()
    if not (out / "last.pt").is_file():  # iterations == 0 (or already done): still leave a usable checkpoint
        _checkpoint(tr, run, out, step, data, guard, row)
    result = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    if result.name == "last.pt":
        log.warning("ReDO: no checkpoint outside a collapse; %s is collapsed or untrained", result)
    log.info("ReDO done at step %d after %d restart(s): %s", step, guard.restarts, result)
    return result


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(read_torch_file(path)["step"])
    except (ValueError, KeyError, TypeError):
        return "?"
