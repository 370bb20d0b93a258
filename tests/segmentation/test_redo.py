from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

import synthdet.segmentation.redo_nets as redo_nets
import synthdet.segmentation.redo_train as redo_train
from synthdet.segmentation.redo import RedoConfig, RedoDivergedError, load_redo_checkpoint
from synthdet.segmentation.redo_nets import build_redo
from synthdet.segmentation.redo_prior import border_occupancy
from synthdet.segmentation.redo_segmenter import RedoSegmenter
from synthdet.segmentation.redo_train import fit_redo
from synthdet.utils.config import ConfigError
from synthdet.utils.image import read_image

# The official pixel mask network without a prior (no Lite0 weights needed): the mechanics.
TINY = dict(resolution=32, z_dim=8, mask_net="pixels", prior="none", freeze_mask_steps=0, mask_channels=8,
            mask_res_blocks=1, gen_channels=8, disc_channels=8, enc_channels=8, batch_size=4, iterations=2,
            checkpoint_every=1, preview_every=1, time_limit_minutes=None, device="cpu")


def test_forward_backward_shapes_and_gradients():
    cfg = RedoConfig(**TINY)
    model = build_redo(cfg)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = torch.randn(3, 2, 8)
    m, h, x_gen = model.redraw(x, z)
    assert m.shape == (3, 2, 32, 32) and h.shape == (3, 2, 3, 32, 32) and x_gen.shape == (3, 2, 3, 32, 32)
    assert torch.allclose(m.sum(1), torch.ones(3, 32, 32), atol=1e-5)
    # A region's drawing is a tanh image times its soft mask: |h_k| <= m_k.
    assert (h.abs() <= m.unsqueeze(2) + 1e-6).all()
    d = model.disc(x_gen.flatten(0, 1))
    z_rec = model.recover_z(h)
    assert d.shape == (6, 1) and z_rec.shape == (3, 2, 8)
    (-d.mean() + torch.nn.functional.mse_loss(z_rec, z)).backward()
    for part in (model.mask, model.gens, model.enc, model.disc):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part.__class__.__name__


def test_build_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_redo(RedoConfig(**TINY)), build_redo(RedoConfig(**TINY))
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    c = build_redo(RedoConfig(**{**TINY, "seed": 1}))
    assert not torch.equal(a.mask.down[1].weight, c.mask.down[1].weight)


def test_config_validation():
    with pytest.raises(ConfigError, match="resolution"):
        RedoConfig(resolution=100)
    with pytest.raises(ConfigError):
        RedoConfig(num_regions=1)
    with pytest.raises(ConfigError, match="mask_net"):
        RedoConfig(mask_net="unet")
    with pytest.raises(ConfigError, match="lite0"):
        RedoConfig(mask_net="pixels")  # the cosegment prior reads the Lite0 features
    with pytest.raises(ConfigError, match="prior"):
        RedoConfig(prior="grabcut")


def test_training_step_checkpoint_round_trip_and_previews(image_dir, tmp_path):
    cfg = RedoConfig(**TINY)
    ckpt = fit_redo(image_dir, cfg, tmp_path, progress=False)
    assert ckpt.name in ("best.pt", "last.pt") and ckpt.parent == tmp_path
    state = load_redo_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 2 and state["resolution"] == 32
    assert state["object_region"] in (0, 1)
    assert state["orientation"]["rule"] == "border" and len(state["orientation"]["scores"]) == 2  # no prior
    assert all(np.isfinite(v) for v in state["losses"].values())
    assert (tmp_path / "previews" / "step_000002.png").is_file() and (tmp_path / "config.yaml").is_file()
    # The training step changed the mask network.
    fresh = build_redo(cfg)
    assert any(not torch.equal(v, state["mask"][k]) for k, v in fresh.mask.state_dict().items())

    images = [read_image(p) for p in sorted(image_dir.iterdir())]
    seg = RedoSegmenter(tmp_path)  # a folder means its best.pt (else last.pt): the returned one
    masks = seg.segment(images)
    again = RedoSegmenter(ckpt, batch_size=3).segment(images)
    for a, b, im in zip(masks, again, images):
        assert a.shape == im.shape[:2]
        np.testing.assert_allclose(a, b, atol=1e-6)
    other = RedoSegmenter(ckpt, region=1 - seg.region).segment(images[:1])[0]
    # K = 2 soft regions sum to one (up to resizing).
    np.testing.assert_allclose(masks[0] + other, 1.0, atol=1e-4)


def test_resume_matches_uninterrupted_run(image_dir, tmp_path):
    straight = fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 3}), tmp_path / "a", progress=False)
    fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 2}), tmp_path / "b", progress=False)
    resumed = fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 3}), tmp_path / "b", progress=False)
    assert straight.name == resumed.name
    sa, sb = load_redo_checkpoint(tmp_path / "a" / "last.pt"), load_redo_checkpoint(tmp_path / "b" / "last.pt")
    assert sa["step"] == sb["step"] == 3 and sa["guard"] == sb["guard"]
    assert [r["step"] for r in sa["history"]] == [r["step"] for r in sb["history"]] == [1, 2, 3]
    for part in ("mask", "gens", "disc", "enc"):
        for k in sa[part]:
            torch.testing.assert_close(sa[part][k], sb[part][k], msg=f"{part}.{k}")


def test_wrong_resolution_version_and_shape_give_clear_errors(image_dir, tmp_path):
    ckpt = fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 1}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="32 px"):
        fit_redo(image_dir, RedoConfig(**{**TINY, "resolution": 64}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="32 px"):
        RedoSegmenter(ckpt, resolution=64)
    with pytest.raises(ValueError, match="mask_channels"):
        fit_redo(image_dir, RedoConfig(**{**TINY, "mask_channels": 12}), tmp_path, progress=False)
    state = torch.load(ckpt, weights_only=True)
    state["version"] = 99
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        RedoSegmenter(tmp_path / "future.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a synthdet ReDO checkpoint"):
        RedoSegmenter(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="garbage.pt"):  # one line naming the file (read_torch_file)
        RedoSegmenter(tmp_path / "garbage.pt")


def test_nan_stops_training_and_keeps_last_good_checkpoint(image_dir, tmp_path, monkeypatch):
    real_batch, calls = redo_train._batch, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        b = real_batch(*args, **kwargs)
        return dataclasses.replace(b, x=b.x * float("nan")) if calls["n"] > 4 else b  # 2 per step: step 3 NaN

    monkeypatch.setattr(redo_train, "_batch", poisoned)
    with pytest.raises(RedoDivergedError, match="step 2"):
        fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 5}), tmp_path, progress=False)
    state = load_redo_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["mask"].values() if v.is_floating_point())


def test_border_rule_picks_the_region_away_from_the_border():
    m = torch.zeros(1, 2, 32, 32)
    m[:, 0] = 1.0
    m[:, 0, 8:24, 8:24] = 0.0
    m[:, 1] = 1 - m[:, 0]
    occ = border_occupancy(m)
    assert occ[0] == 1.0 and occ[1] == 0.0
    assert int(occ.argmin()) == 1


def test_time_limit_stops_with_checkpoint(image_dir, tmp_path):
    ckpt = fit_redo(image_dir, RedoConfig(**{**TINY, "iterations": 1000, "time_limit_minutes": 0.0,
                                             "checkpoint_every": 500}), tmp_path, progress=False)
    assert load_redo_checkpoint(ckpt)["step"] == 1


def test_too_few_images(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ValueError, match="at least 2"):
        fit_redo(tmp_path / "imgs", RedoConfig(**TINY), tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- collapse guard


def test_region_areas_and_guard_on_a_collapsing_history():
    ones = torch.zeros(2, 2, 8, 8)
    ones[:, 0] = 1.0  # region 0 is everything: region 1 wins no pixel
    assert redo_train.region_areas(ones).tolist() == [1.0, 0.0]
    cfg = RedoConfig(**{**TINY, "collapse_area": 0.05, "collapse_windows": 3, "max_restarts": 1})
    guard = redo_train.CollapseGuard()
    areas = [0.4, 0.01, 0.02, 0.3, 0.01, 0.0, 0.04]  # a recovery after two windows resets the streak
    actions = [guard.update({"min_region_area": a}, cfg) for a in areas]
    assert actions == ["ok"] * 6 + ["restart"]
    guard.restarts = 1  # no restart left: the next collapse gives up
    assert [guard.update({"min_region_area": 0.0}, cfg) for _ in range(3)][-1] == "give_up"


def test_restart_seed_is_deterministic_and_new():
    seeds = [redo_train.restart_seed(7, r) for r in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4
    assert seeds == [redo_train.restart_seed(7, r) for r in range(4)]
    assert redo_train.restart_seed(8, 1) != seeds[1]


def _force_collapse(monkeypatch, steps: set[int]):
    """The mask network outputs 'region 0 is everything' during the given 1-based training steps."""
    forced = {"on": False, "calls": 0}
    real_forward, real_step = redo_nets.MaskNet.forward, redo_train._Training.step

    def forward(self, x):
        m = real_forward(self, x)
        return torch.cat([torch.ones_like(m[:, :1]), torch.zeros_like(m[:, 1:])], 1) if forced["on"] else m

    def step(self, data, step, ckpt):
        forced["calls"] += 1
        forced["on"] = forced["calls"] in steps
        try:
            return real_step(self, data, step, ckpt)
        finally:
            forced["on"] = False

    monkeypatch.setattr(redo_nets.MaskNet, "forward", forward)
    monkeypatch.setattr(redo_train._Training, "step", step)


def test_forced_collapse_restarts_from_last_good_checkpoint_with_new_seed(image_dir, tmp_path, monkeypatch):
    _force_collapse(monkeypatch, {4, 5})  # steps 4 and 5 collapse; the checkpoint of step 3 is good
    seen = {}
    real_restart = redo_train._restart

    def restart(tr, guard, out, step, run, data):
        new, back = real_restart(tr, guard, out, step, run, data)
        mask = {k: v.clone() for k, v in new.model.mask.state_dict().items()}
        seen.update(back=back, good=load_redo_checkpoint(out / "good.pt"), mask=mask,
                    rng=new.gen.get_state())
        return new, back

    monkeypatch.setattr(redo_train, "_restart", restart)
    cfg = RedoConfig(**{**TINY, "iterations": 6, "log_every": 1, "collapse_windows": 2, "max_restarts": 2,
                        "preview_every": 0})
    result = fit_redo(image_dir, cfg, tmp_path, progress=False)
    # Restarted once, at step 5, from good.pt (step 3), with the networks of good.pt and a new seed.
    assert seen["back"] == 3 and seen["good"]["step"] == 3
    for k, v in seen["good"]["mask"].items():
        assert torch.equal(v, seen["mask"][k]), k
    assert torch.equal(seen["rng"], torch.Generator().manual_seed(redo_train.restart_seed(0, 1)).get_state())
    last = load_redo_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 6 and last["guard"]["restarts"] == 1 and last["guard"]["streak"] == 0
    events = [r for r in last["history"] if r.get("event")]
    assert events == [{"step": 5, "seconds": events[0]["seconds"], "event": "restart", "restart": 1,
                       "seed": redo_train.restart_seed(0, 1), "from_step": 3}]
    rows = [r for r in last["history"] if not r.get("event")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 4, 5, 6]
    assert [r["min_region_area"] == 0.0 for r in rows] == [False, False, False, True, True, False, False, False]
    # best.pt: the lowest window loss_info among the checkpoints taken outside a collapse.
    best = load_redo_checkpoint(result)
    assert result.name == "best.pt"
    good_rows = [r for r in rows if r["min_region_area"] >= cfg.collapse_area]
    assert best["losses"]["loss_info"] == min(r["loss_info"] for r in good_rows)
    assert best["guard"]["best"] == best["losses"]["loss_info"] == last["guard"]["best"]


def test_collapse_without_restarts_left_stops_and_keeps_best(image_dir, tmp_path, monkeypatch):
    _force_collapse(monkeypatch, set(range(3, 100)))  # collapsed for good from step 3
    cfg = RedoConfig(**{**TINY, "iterations": 50, "log_every": 1, "collapse_windows": 2, "max_restarts": 0,
                        "preview_every": 0})
    result = fit_redo(image_dir, cfg, tmp_path, progress=False)
    last = load_redo_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 4 and last["history"][-1]["event"] == "stopped"
    assert result.name == "best.pt" and load_redo_checkpoint(result)["step"] in (1, 2)
    assert load_redo_checkpoint(tmp_path / "good.pt")["step"] == 2
    assert RedoSegmenter(tmp_path).step == load_redo_checkpoint(result)["step"]  # a folder means best.pt
    assert fit_redo(image_dir, cfg, tmp_path, progress=False) == result  # resumed: it stays stopped
    assert load_redo_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_collapsing_again_from_the_same_good_checkpoint_starts_fresh(image_dir, tmp_path, monkeypatch):
    _force_collapse(monkeypatch, {4, 5, 6, 7})  # collapses after the first restart from step 3 too
    cfg = RedoConfig(**{**TINY, "iterations": 5, "log_every": 1, "collapse_windows": 2, "max_restarts": 2,
                        "preview_every": 0})
    fit_redo(image_dir, cfg, tmp_path, progress=False)
    last = load_redo_checkpoint(tmp_path / "last.pt")
    events = [(r["restart"], r["from_step"], r["seed"]) for r in last["history"] if r.get("event") == "restart"]
    seeds = [redo_train.restart_seed(0, k) for k in (1, 2)]
    assert events == [(1, 3, seeds[0]), (2, 0, seeds[1])]  # good.pt (step 3) once, then a fresh start
    assert last["step"] == 5 and last["guard"]["restarts"] == 2
    assert [r["step"] for r in last["history"] if not r.get("event")] == [1, 2, 3, 4, 5, 4, 5, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- the CPU recipe (lite0 + prior)

def _rff_params(channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.normal(0, 16.0, (3, channels)).astype(np.float32), g.uniform(0, 2 * np.pi, channels).astype(np.float32)


_W16, _W32 = _rff_params(112, 1), _rff_params(192, 2)


def _colour_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A features hook without weights, with Lite0's shapes: random Fourier features of each
    pixel's Lab colour, averaged per 16 / 32 px cell (the cell's colour distribution), 112 / 192
    channels. Stands in for ImageNet features in tests of the mechanics."""
    n, s = batch.shape[:2]
    small = np.stack([cv2.resize(im, (s // 4, s // 4), interpolation=cv2.INTER_AREA) for im in batch])
    lab = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB) for im in small]).astype(np.float32) / 255.0
    out = []
    for cell, (w, b) in ((4, _W16), (8, _W32)):
        phi = np.cos(lab @ w + b)  # n, s/4, s/4, C
        h = s // 4 // cell
        grid = phi.reshape(n, h, cell, h, cell, -1).mean((2, 4))
        out.append(np.ascontiguousarray(grid.transpose(0, 3, 1, 2), dtype=np.float32))
    return out[0], out[1]


RECIPE = dict(resolution=32, feature_size=256, batch_size=8, warm_steps=80, freeze_mask_steps=20, iterations=60,
              checkpoint_every=30, log_every=10, preview_every=0, time_limit_minutes=None, device="cpu")


def test_feature_mask_net_starts_from_its_coarse_head_and_needs_features():
    from synthdet.segmentation.redo_nets import run_mask_net

    model = build_redo(RedoConfig(**{**RECIPE, "mask_channels": 16, "pixel_channels": 8}))
    net = model.mask
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    f16, f32 = torch.randn(2, 112, 8, 8), torch.randn(2, 192, 4, 4)
    m = net(x, f16, f32)
    assert m.shape == (2, 2, 32, 32) and torch.allclose(m.sum(1), torch.ones(2, 32, 32))
    # The pixel branch's correction is zero at initialisation: the logits are the up-sampled coarse head's.
    f = torch.cat([f16, torch.nn.functional.interpolate(f32, size=(8, 8), mode="bilinear", align_corners=False)], 1)
    coarse = torch.nn.functional.interpolate(net.coarse(net.head(f)), size=(32, 32), mode="bilinear",
                                             align_corners=False)
    torch.testing.assert_close(net.logits(x, f16, f32), coarse)
    with pytest.raises(ValueError, match="Lite0 features"):
        run_mask_net(net, x, None)


def test_tiny_recipe_fit_lowers_its_loss_and_separates_a_shape_class(shape_class, tmp_path):
    """Lite0-style features (a hook), the cosegment prior's warm start, then ReDO kept near it."""
    from synthdet.segmentation.metrics import evaluate_segmenter

    images, true = shape_class
    cfg = RedoConfig(**RECIPE)
    ckpt = fit_redo(images, cfg, tmp_path, progress=False, features=_colour_features)
    last = load_redo_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 60 and last["orientation"]["rule"] == "prior"
    warm = [r for r in last["history"] if r.get("event") == "warm_start"]
    assert len(warm) == 1 and warm[0]["warm_bce"] < 0.3  # the mask network learnt the prior
    rows = [r for r in last["history"] if "loss_info" in r]
    assert rows[-1]["loss_info"] < rows[0]["loss_info"]  # the encoder recovers the noise better and better
    assert all(r["min_region_area"] > cfg.collapse_area for r in rows)  # no collapse
    seg = RedoSegmenter(ckpt, features=_colour_features)
    r = evaluate_segmenter(seg, images, true, progress=False)
    # The weightless hook's cosegment prior scores about 0.68 here (measured; the ImageNet features are
    # not used in tests); ReDO, kept near the prior, must not fall far below it.
    assert r["images"] == 12 and r["iou"] > 0.6, r


def test_object_region_rule_on_hand_made_masks():
    from synthdet.segmentation.redo_prior import object_region

    r = 16
    centre = torch.zeros(3, r, r)
    centre[:, 4:12, 4:12] = 1.0  # an object in the middle, the rest background
    masks = torch.stack([1 - centre, centre], 1)  # region 1 is the object
    prior = centre[:, None].to(torch.uint8)
    assert object_region(masks, prior)[:2] == (1, "prior")
    assert object_region(masks, None)[:2] == (1, "border")  # no prior: the region off the border
    # The prior decides where the two rules disagree: an object that touches the border (a big bird).
    big = torch.zeros(3, r, r)
    big[:, :, 2:] = 1.0
    masks = torch.stack([big, 1 - big], 1)
    region, rule, scores = object_region(masks, big[:, None].to(torch.uint8))
    assert (region, rule) == (0, "prior") and scores == [1.0, 0.0]
    assert object_region(masks, None)[0] == 1  # the border rule alone picks the thin strip


def test_prior_masks_and_the_terms_that_keep_to_them():
    from synthdet.segmentation.redo_prior import RedoData, prior_masks
    from synthdet.segmentation.redo_train import prior_loss

    data = RedoData(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    assert prior_masks("none", data) is None
    centre = prior_masks("centre", data)
    assert centre.shape == (4, 1, 32, 32) and centre.dtype == torch.uint8
    assert centre[0, 0, 16, 16] == 1 and centre[0, 0, 0, 0] == 0
    with pytest.raises(ValueError, match="Lite0"):
        prior_masks("cosegment", data)
    cfg = RedoConfig(**{**RECIPE, "prior_weight": 0.0, "area_weight": 1.0, "area_floor": 0.8})
    p = centre.float()
    area = float(p.mean())
    assert float(prior_loss(p[:, 0], p, cfg)) == 0.0  # the prior itself: above its floor
    small = p[:, 0] * 0.5  # half as much object as the prior: below 0.8 of it
    assert float(prior_loss(small, p, cfg)) == pytest.approx((0.8 * area - 0.5 * area) ** 2, rel=1e-4)
    bce = RedoConfig(**{**RECIPE, "prior_weight": 1.0, "area_weight": 0.0})
    assert float(prior_loss(p[:, 0].clamp(0.1, 0.9), p, bce)) > float(prior_loss(p[:, 0], p, bce))


def test_segmenter_fits_itself_and_reuses_the_cached_fit(shape_class, tmp_path):
    images, _ = shape_class
    paths = sorted(images.iterdir())
    tiny = {**RECIPE, "warm_steps": 5, "freeze_mask_steps": 1, "iterations": 3, "checkpoint_every": 3}
    tiny.pop("device")
    make = lambda **kw: RedoSegmenter(state_dir=tmp_path / "state", features=_colour_features,  # noqa: E731
                                      progress=False, **{**tiny, **kw})
    seg = make()
    assert not seg.fitted and seg.cache_key() == "redo-unfitted"
    with pytest.raises(RuntimeError, match="no checkpoint"):
        seg.segment([np.zeros((8, 8, 3), np.uint8)])
    assert seg.fit(paths) == "fitted"
    masks = seg.segment([read_image(p) for p in paths[:2]])
    assert all(m.shape == (64, 64) and m.dtype == np.float32 for m in masks)
    again = make()
    assert again.fit(paths) == "loaded" and again.cache_key() == seg.cache_key()
    np.testing.assert_allclose(again.segment([read_image(paths[0])])[0], masks[0], atol=1e-5)  # batch of 1, not 2
    other = make(seed=1)  # other settings: another fit folder
    assert other.fit_dir(paths) != seg.fit_dir(paths)
    assert make().fit_dir(paths[:-1]) != seg.fit_dir(paths)  # another image set too


def test_cli_fit_with_a_minutes_budget_then_reuses_it(image_dir, tmp_path, capsys):
    import yaml

    from synthdet.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k not in ("device", "time_limit_minutes")}))
    argv = ["segment", "fit", "--segmenter", "redo", "--images", str(image_dir), "--out", str(tmp_path / "fit"),
            "--config", str(config), "--iterations", "50", "--minutes", "0", "--threads", "1"]
    assert main(argv) == 0
    assert "trained" in capsys.readouterr().out
    state = load_redo_checkpoint(tmp_path / "fit" / "last.pt")
    assert state["step"] == 1 and state["config"]["time_limit_minutes"] == 0.0  # the budget stopped it
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().out
    assert load_redo_checkpoint(tmp_path / "fit" / "last.pt")["step"] == 1  # not trained further
