from __future__ import annotations

import numpy as np
import pytest
import torch

import synthdet.segmentation.redo as redo_mod
import synthdet.segmentation.redo_train as redo_train
from synthdet.segmentation.redo import (
    RedoConfig,
    RedoDivergedError,
    RedoSegmenter,
    border_occupancy,
    build_redo,
    load_redo_checkpoint,
)
from synthdet.segmentation.redo_train import fit_redo
from synthdet.utils.config import ConfigError
from synthdet.utils.image import read_image

TINY = dict(resolution=32, z_dim=8, mask_channels=8, mask_res_blocks=1, gen_channels=8, disc_channels=8,
            enc_channels=8, batch_size=4, iterations=2, checkpoint_every=1, preview_every=1, device="cpu")


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


def test_training_step_checkpoint_round_trip_and_previews(image_dir, tmp_path):
    cfg = RedoConfig(**TINY)
    ckpt = fit_redo(image_dir, cfg, tmp_path, progress=False)
    assert ckpt.name in ("best.pt", "last.pt") and ckpt.parent == tmp_path
    state = load_redo_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 2 and state["resolution"] == 32
    assert state["object_region"] in (0, 1) and len(state["border_occupancy"]) == 2
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
        x = real_batch(*args, **kwargs)
        return x * float("nan") if calls["n"] > 4 else x  # two batches per step: step 3 is NaN

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
    cfg = RedoConfig(**{**TINY, "collapse_windows": 3, "max_restarts": 1})
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
    real_forward, real_step = redo_mod.MaskNet.forward, redo_train._Training.step

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

    monkeypatch.setattr(redo_mod.MaskNet, "forward", forward)
    monkeypatch.setattr(redo_train._Training, "step", step)


def test_forced_collapse_restarts_from_last_good_checkpoint_with_new_seed(image_dir, tmp_path, monkeypatch):
    _force_collapse(monkeypatch, {4, 5})  # steps 4 and 5 collapse; the checkpoint of step 3 is good
    seen = {}
    real_restart = redo_train._restart

    def restart(tr, guard, out, step, run):
        new, back = real_restart(tr, guard, out, step, run)
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
