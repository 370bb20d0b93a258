"""ReDO training (:func:`fit_redo`) with its warm start and collapse guard; the settings and the
segmenter are in :mod:`synthdet.segmentation.redo`, the networks in :mod:`.redo_nets`, the
features, prior and object-region rule in :mod:`.redo_prior`.

**Phases.** (1) Warm start: with a prior (``prior`` not ``none``) the mask network learns the
prior's masks for ``warm_steps`` steps (binary cross-entropy, Adam at ``lr_warm``); (2) the
generators, discriminator and encoder train ``freeze_mask_steps`` steps with the mask network
fixed; (3) ReDO: every step updates the mask network, generators and encoder against the
discriminator plus ``w_info`` x the information-conservation loss (and, with a prior,
``prior_weight`` x BCE to the prior plus ``area_weight`` x the area-floor term), then the
discriminator (hinge loss).

**Progress** (no labels needed): every ``log_every`` steps one log line with the losses, the
object region's share of the pixels (``area``, beside the prior's) and a warning when the run
is collapsing; the same rows in ``history.json``.

**Collapse guard.** ReDO can collapse to one region covering (almost) the whole image and the other
(almost) nothing: the official code restarts such runs (its ``--autoRestart``) and users report
the failure (its issue 3). Every ``log_every`` steps the history gets the window's mean of
``min_region_area``, the fraction of pixels the smallest region wins (argmax over regions); a
window whose value is below ``collapse_area`` (default 0.02: small birds hold 1-30 % of their
frame, 9 % on average) is collapsed, and ``collapse_windows`` (default 3) collapsed windows in
a row restart training from ``good.pt`` (the last checkpoint taken outside a collapse) with the
seed :func:`restart_seed` ``(seed, restart count)``; a ``good.pt`` is tried once: when the run
collapses again before writing a new one (or there is none), the restart is a fresh initialisation
(warm start included) with the new seed, as the official code's. At most ``max_restarts``
(default 3) restarts; a further collapse stops training. Restarts (``from_step`` 0 = fresh) and
the stop are rows of ``history.json`` (``"event": "restart"`` / ``"stopped"``).

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
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..utils.checkpoint import read_torch_file
from ..utils.config import dump_yaml, to_dict
from ..utils.device import resolve_device
from ..utils.image import write_image
from ..utils.periodic import Periodic
from ..utils.viz import make_grid
from .redo import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _ARCH_FIELDS, RedoConfig, RedoDivergedError,
                   load_redo_checkpoint)
from .redo_nets import Redo, build_redo
from .redo_prior import FeatureFn, RedoData, load_redo_data, object_region, prior_masks

log = logging.getLogger(__name__)

# Called at every checkpoint with {"step", "seconds", "row", "paths", "object_masks": (N, R, R) soft
# masks of the object region of every training image, in "paths" order} (benchmarks score them);
# first at step 0 after the warm start, with "prior": the (N, R, R) uint8 prior masks (or None).
CheckpointHook = Callable[[dict[str, Any]], None]


@dataclass
class _Batch:
    x: torch.Tensor                                        # (B, 3, R, R) in [-1, 1]
    feats: tuple[torch.Tensor, torch.Tensor] | None        # Lite0 (f16, f32) of the same images
    prior: torch.Tensor | None                             # (B, 1, R, R) float


def _batch(data: RedoData, size: int, gen: torch.Generator, hflip: bool, device: torch.device) -> _Batch:
    idx = torch.randint(len(data), (size,), generator=gen)
    flip = (torch.rand(size, generator=gen) < 0.5) if hflip else torch.zeros(size, dtype=torch.bool)
    f = flip[:, None, None, None]
    x = data.images[idx].float() / 127.5 - 1.0
    x = torch.where(f, x.flip(-1), x)
    feats = data.features(idx, flip)
    prior = None
    if data.prior is not None:
        p = data.prior[idx].float()
        prior = torch.where(f, p.flip(-1), p).to(device)
    return _Batch(x.to(device), None if feats is None else (feats[0].to(device), feats[1].to(device)), prior)


def restart_seed(seed: int, restarts: int) -> int:
    """Seed of the training stream after ``restarts`` collapse restarts (``seed`` itself for 0)."""
    if restarts == 0:
        return int(seed)
    digest = hashlib.blake2b(f"redo-restart:{seed}:{restarts}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def region_areas(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of the pixels each region wins (argmax): soft masks ``(B, K, R, R)`` -> ``(K,)``."""
    return F.one_hot(masks.argmax(1), masks.shape[1]).float().mean(dim=(0, 1, 2))


def prior_loss(m: torch.Tensor, prior: torch.Tensor, cfg: RedoConfig) -> torch.Tensor:
    """The terms that keep object masks ``m (B, R, R)`` to their prior ``(B, 1, R, R)`` (see
    :class:`RedoConfig`): ``prior_weight`` x BCE + ``area_weight`` x the per-image area term."""
    p = prior[:, 0]
    loss = cfg.prior_weight * F.binary_cross_entropy(m.clamp(1e-4, 1 - 1e-4), p) if cfg.prior_weight else m.new_zeros(())
    if cfg.area_weight:
        area, target = m.mean((1, 2)), p.mean((1, 2))
        gap = F.relu(cfg.area_floor * target - area) if cfg.area_floor > 0 else area - target
        loss = loss + cfg.area_weight * (gap**2).mean()
    return loss


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
        if collapsed:
            log.warning("ReDO step %d: collapsing, the smaller region holds %.1f %% of the pixels (< %.1f %%) "
                        "for %d window(s) in a row; %d more restart it", row.get("step", -1),
                        100 * row["min_region_area"], 100 * cfg.collapse_area, self.streak,
                        max(0, cfg.collapse_windows - self.streak))
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
        self.model: Redo = build_redo(dataclasses.replace(cfg, seed=seed)).to(device)
        m, c = self.model, cfg
        self.opts = {
            "mask": torch.optim.Adam(m.mask.parameters(), lr=c.lr_mask, betas=c.betas,
                                     weight_decay=c.weight_decay_mask),
            "gen": torch.optim.Adam([{"params": m.gens.parameters(), "lr": c.lr_gen},
                                     {"params": m.enc.parameters(), "lr": c.lr_enc}], betas=c.betas),
            "disc": torch.optim.Adam(m.disc.parameters(), lr=c.lr_disc, betas=c.betas),
        }
        self.gen = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def all_masks(self, data: RedoData, batch_size: int = 100) -> torch.Tensor:
        """Soft masks ``(N, K, R, R)`` of every training image (not mirrored), on the CPU."""
        was = self.model.training
        self.model.eval()
        out = []
        for i in range(0, len(data), batch_size):
            idx = torch.arange(i, min(i + batch_size, len(data)))
            x = (data.images[idx].float() / 127.5 - 1.0).to(self.device)
            f = data.features(idx, torch.zeros(len(idx), dtype=torch.bool))
            out.append(self.model.masks(x, None if f is None else (f[0].to(self.device), f[1].to(self.device))).cpu())
        self.model.train(was)
        return torch.cat(out)

    def state(self, step: int, masks: torch.Tensor, prior: torch.Tensor | None, guard: CollapseGuard,
              losses: dict) -> dict[str, Any]:
        region, rule, scores = object_region(masks, prior)
        m = self.model
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "resolution": self.cfg.resolution,
                "config": to_dict(self.cfg), "step": step, "mask": m.mask.state_dict(),
                "gens": m.gens.state_dict(), "disc": m.disc.state_dict(), "enc": m.enc.state_dict(),
                "optim": {k: o.state_dict() for k, o in self.opts.items()}, "rng": self.gen.get_state(),
                "object_region": region, "orientation": {"rule": rule, "scores": scores}, "losses": losses,
                "guard": dataclasses.asdict(guard)}

    def load(self, state: dict[str, Any], rng: bool = True) -> None:
        for name in ("mask", "gens", "disc", "enc"):
            getattr(self.model, name).load_state_dict(state[name])
        for k, o in self.opts.items():
            o.load_state_dict(state["optim"][k])
        if rng:
            self.gen.set_state(state["rng"])

    def warm_start(self, data: RedoData) -> dict[str, float]:
        """Fit the mask network to the prior (``warm_steps`` BCE steps); its own optimiser."""
        cfg = self.cfg
        opt = torch.optim.Adam(self.model.mask.parameters(), lr=cfg.lr_warm)
        loss = torch.zeros(())
        for _ in range(cfg.warm_steps):
            b = _batch(data, cfg.batch_size, self.gen, cfg.hflip, self.device)
            m = self.model.masks(b.x, b.feats)[:, 0]
            loss = F.binary_cross_entropy(m.clamp(1e-4, 1 - 1e-4), b.prior[:, 0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {"warm_bce": float(loss.detach())}

    def step(self, data: RedoData, step: int, ckpt: Path) -> dict[str, float]:
        """One ReDO update of all four networks (step ``step``, 0-based); returns the step's losses,
        the object region's soft area and the smallest region's (argmax) area."""
        cfg, model, opts, gen, device = self.cfg, self.model, self.opts, self.gen, self.device
        B, K = cfg.batch_size, cfg.num_regions
        b = _batch(data, B, gen, cfg.hflip, device)
        x_real = _batch(data, B, gen, cfg.hflip, device).x
        z = torch.randn(B, K, cfg.z_dim, generator=gen).to(device)
        train_mask = step >= cfg.freeze_mask_steps
        # Mask network, generators and encoder: fool D and keep z recoverable.
        model.disc.requires_grad_(False)
        m = model.masks(b.x, b.feats)
        if not train_mask:
            m = m.detach()
        h = torch.stack([g(m[:, k : k + 1], z[:, k]) for k, g in enumerate(model.gens)], 1)
        x_gen = h + (1 - m.unsqueeze(2)) * b.x.unsqueeze(1)
        loss_adv = -model.disc(x_gen.flatten(0, 1)).mean()
        loss_info = F.mse_loss(model.recover_z(h), z)
        loss_g = loss_adv + cfg.w_info * loss_info
        loss_p = prior_loss(m[:, 0], b.prior, cfg) if b.prior is not None and train_mask else torch.zeros(())
        loss_g = loss_g + loss_p
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
        if train_mask:
            opts["mask"].step()
        opts["gen"].step()
        opts["disc"].zero_grad(set_to_none=True)
        loss_d.backward()
        opts["disc"].step()
        md = m.detach()
        return {"loss_d": loss_d.item(), "loss_g_adv": loss_adv.item(), "loss_info": loss_info.item(),
                "loss_prior": float(loss_p.detach()), "area": float(md[:, 0].mean()),
                "min_region_area": float(region_areas(md).min())}


# --------------------------------------------------------------------------- training


@torch.no_grad()
def _preview(tr: _Training, data: RedoData, idx: torch.Tensor, z: torch.Tensor, path: Path) -> None:
    """One row per image: input, K masks, K redrawn images, the fully redrawn image."""
    model = tr.model
    was_training = model.training
    model.eval()
    b = data.features(idx, torch.zeros(len(idx), dtype=torch.bool))
    x = (data.images[idx].float() / 127.5 - 1.0).to(tr.device)
    m, h, xr = model.redraw(x, z, None if b is None else (b[0].to(tr.device), b[1].to(tr.device)))

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


def _fresh(cfg: RedoConfig, device: torch.device, data: RedoData, run: Periodic, seed: int | None = None) -> _Training:
    """New networks (seed ``seed``), warm-started on the prior when there is one."""
    tr = _Training(cfg, device, seed)
    if data.prior is not None and cfg.warm_steps:
        info = tr.warm_start(data)
        area = float(tr.all_masks(data)[:, 0].mean())
        run.note(0, event="warm_start", area=round(area, 4), prior_area=round(float(data.prior.float().mean()), 4),
                 **{k: round(v, 4) for k, v in info.items()})
        log.info("ReDO: warm start on the %s prior: BCE %.3f, object area %.3f (prior %.3f)", cfg.prior,
                 info["warm_bce"], area, float(data.prior.float().mean()))
    return tr


def _restart(tr: _Training, guard: CollapseGuard, out: Path, step: int, run: Periodic,
             data: RedoData) -> tuple[_Training, int]:
    """Collapse: go back to ``good.pt`` with the next restart seed; when an earlier restart already
    went back to that same checkpoint (the run collapsed again from it) or there is none, start
    from a fresh initialisation with that seed instead, as the official code always does."""
    guard.restarts, guard.streak = guard.restarts + 1, 0
    seed = restart_seed(tr.cfg.seed, guard.restarts)
    good = out / "good.pt"
    state = load_redo_checkpoint(good) if good.is_file() else None
    tag = f"{state.get('guard', {}).get('restarts', 0)}:{state['step']}" if state is not None else ""
    back_to = int(state["step"]) if state is not None and tag != guard.used else 0
    guard.used = tag
    log.warning("ReDO collapsed at step %d (smallest region < %.3f for %d windows): restart %d/%d from %s "
                "with seed %d", step, tr.cfg.collapse_area, tr.cfg.collapse_windows, guard.restarts,
                tr.cfg.max_restarts, f"step {back_to} ({good.name})" if back_to else "a fresh initialisation",
                seed)
    run.note(step, event="restart", restart=guard.restarts, seed=seed, from_step=back_to)
    if not back_to:
        return _fresh(tr.cfg, tr.device, data, run, seed), 0
    new = _Training(tr.cfg, tr.device, seed)
    new.load(state, rng=False)
    return new, back_to


def _checkpoint(tr: _Training, run: Periodic, out: Path, step: int, data: RedoData, guard: CollapseGuard,
                row: dict[str, Any] | None, paths: list, hook: CheckpointHook | None) -> None:
    """``last.pt``; ``good.pt`` outside a collapse; ``best.pt`` when the window's ``loss_info`` is the lowest."""
    losses = {k: v for k, v in (row or {}).items() if k not in ("step", "seconds")}
    score = losses.get("loss_info", math.inf)
    good = guard.streak == 0 and losses.get("min_region_area", 0.0) >= tr.cfg.collapse_area
    best = good and score < guard.best
    if best:
        guard.best = score
    masks = tr.all_masks(data)
    state = tr.state(step, masks, data.prior, guard, losses)
    if best:
        run.save(out / "best.pt", state, write_history=False)
    if good:
        run.save(out / "good.pt", state, write_history=False)
    run.save(out / "last.pt", state)
    if hook is not None:
        hook({"step": step, "seconds": run.elapsed(), "row": row, "paths": paths,
              "object_masks": masks[:, state["object_region"]]})


def _progress_line(row: dict[str, Any], cfg: RedoConfig, prior_area: float | None) -> str:
    phase = "" if row["step"] > cfg.freeze_mask_steps else " (mask fixed)"
    prior = f" (prior {prior_area:.3f})" if prior_area is not None else ""
    return (f"ReDO step {row['step']}{phase}, {row['seconds'] / 60:.1f} min: loss_d {row.get('loss_d', 0):.3f}, "
            f"adv {row.get('loss_g_adv', 0):.3f}, info {row.get('loss_info', 0):.3f}, "
            f"prior {row.get('loss_prior', 0):.3f}, region-0 area {row.get('area', 0):.3f}{prior}")


def fit_redo(images: str | os.PathLike | Sequence[str | os.PathLike], cfg: RedoConfig, out_dir: str | os.PathLike,
             resume: bool = True, progress: bool = True, features: FeatureFn | None = None,
             on_checkpoint: CheckpointHook | None = None) -> Path:
    """Train ReDO on unlabelled images (a folder, searched recursively, or a list of files);
    returns ``best.pt`` (else ``last.pt``).

    Writes into ``out_dir``: ``last.pt`` every ``cfg.checkpoint_every`` steps and at the end,
    ``good.pt`` (the last checkpoint taken outside a collapse), ``best.pt`` (the one with the
    lowest window-mean information-conservation loss outside a collapse), ``history.json``
    (loss means every ``cfg.log_every`` steps, the warm start, restarts),
    ``previews/step_XXXXXX.png`` and ``config.yaml``. ``cfg.time_limit_minutes`` bounds the whole
    fit, loading and features included (and, resumed, the time of earlier calls). A collapse (see
    :class:`RedoConfig`) restarts from ``good.pt`` with the seed :func:`restart_seed`, at most
    ``cfg.max_restarts`` times, then training stops. With ``resume`` an existing ``last.pt`` is
    continued up to ``cfg.iterations`` (its network shapes must match). A non-finite loss raises
    :class:`RedoDivergedError` and leaves the checkpoints in place. ``features`` replaces Lite0
    (tests); ``on_checkpoint`` (see :data:`CheckpointHook`) sees every checkpoint.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    limit = None if cfg.time_limit_minutes is None else 60 * cfg.time_limit_minutes
    run, guard = Periodic(out, cfg.checkpoint_every, cfg.log_every, limit), CollapseGuard()
    feature_size = cfg.feature_size if cfg.mask_net == "lite0" else None
    data, paths = load_redo_data(images, cfg.resolution, feature_size, cfg.max_images, features, progress)
    data.prior = prior_masks(cfg.prior, data)
    prior_area = None if data.prior is None else float(data.prior.float().mean())
    log.info("ReDO: %d training images at %d px on %s (mask network %s, prior %s)", len(data), cfg.resolution,
             device, cfg.mask_net, cfg.prior)
    step, row, state = 0, None, None
    if resume and (out / "last.pt").is_file():
        state = _resume(out / "last.pt", cfg)
        step, guard = run.resume(state), CollapseGuard(**state.get("guard", {}))
        if limit is not None:
            run.max_seconds = max(0.0, limit - run.seconds_before)
        log.info("resuming ReDO from %s at step %d", out / "last.pt", step)
    tr = _Training(cfg, device) if state is not None else _fresh(cfg, device, data, run)
    if state is None and on_checkpoint is not None:  # the warm start's masks, before any ReDO step
        masks = tr.all_masks(data)
        region = object_region(masks, data.prior)[0]
        on_checkpoint({"step": 0, "seconds": run.elapsed(), "row": None, "paths": paths,
                       "object_masks": masks[:, region], "prior": None if data.prior is None else data.prior[:, 0]})
    if state is not None:
        tr.load(state)
        if guard.exhausted(cfg):
            log.warning("ReDO: %s stopped collapsed after %d restarts; raise max_restarts to go on",
                        out / "last.pt", guard.restarts)
            step = cfg.iterations
    dump_yaml(to_dict(cfg), out / "config.yaml")
    # Fixed preview inputs and noise (own generator: previews do not change the training stream).
    pgen = torch.Generator().manual_seed(cfg.seed + 1)
    idx_prev = torch.randperm(len(data), generator=pgen)[: min(cfg.preview_images, len(data))]
    z_prev = torch.randn(len(idx_prev), cfg.num_regions, cfg.z_dim, generator=pgen).to(device)
    bar = tqdm(total=cfg.iterations, initial=step, desc="ReDO", unit="it", disable=not progress)
    tr.model.train()
    while step < cfg.iterations:
        losses = tr.step(data, step, out / "last.pt")
        step += 1
        run.add(losses)
        bar.update(1)
        bar.set_postfix(d=f"{losses['loss_d']:.3f}", z=f"{losses['loss_info']:.3f}", area=f"{losses['area']:.3f}")
        out_of_time = run.out_of_time()
        last = step == cfg.iterations or out_of_time
        row = run.end_step(step, last)
        if cfg.preview_every and (step % cfg.preview_every == 0 or last):
            _preview(tr, data, idx_prev, z_prev, out / "previews" / f"step_{step:06d}.png")
        if row is not None:
            log.info(_progress_line(row, cfg, prior_area))
        action = guard.update(row, cfg) if row is not None else "ok"
        if action == "restart":
            tr, step = _restart(tr, guard, out, step, run, data)
            bar.n = step
            run.save(out / "last.pt", tr.state(step, tr.all_masks(data), data.prior, guard, {}))
            if out_of_time:
                break
            continue
        if action == "give_up":
            log.warning("ReDO collapsed again after %d restarts: training stops at step %d", guard.restarts, step)
            run.note(step, event="stopped", reason="collapsed", restarts=guard.restarts)
        if run.checkpoint_due(step, last) or action == "give_up":
            _checkpoint(tr, run, out, step, data, guard, row, paths, on_checkpoint)
        if out_of_time:
            log.info("ReDO: time limit of %.1f min reached at step %d", cfg.time_limit_minutes, step)
        if out_of_time or action == "give_up":
            break
    bar.close()
    if not (out / "last.pt").is_file():  # no step done (iterations 0, or no time left): still leave a checkpoint
        _checkpoint(tr, run, out, step, data, guard, row, paths, on_checkpoint)
    result = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    if result.name == "last.pt":
        log.warning("ReDO: no checkpoint outside a collapse; %s is collapsed or untrained", result)
    log.info("ReDO done at step %d after %d restart(s), %.1f min: %s", step, guard.restarts, run.elapsed() / 60, result)
    return result


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(read_torch_file(path)["step"])
    except (ValueError, KeyError, TypeError):
        return "?"
