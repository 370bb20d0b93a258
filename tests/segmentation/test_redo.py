from __future__ import annotations

import numpy as np
import pytest
import torch

import synthdet.segmentation.redo as redo_mod
from synthdet.segmentation.redo import (
    RedoConfig,
    RedoDivergedError,
    RedoSegmenter,
    border_occupancy,
    build_redo,
    fit_redo,
    load_redo_checkpoint,
)
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
    state = load_redo_checkpoint(ckpt)
    assert state["step"] == 2 and state["resolution"] == 32
    assert state["object_region"] in (0, 1) and len(state["border_occupancy"]) == 2
    assert all(np.isfinite(v) for v in state["losses"].values())
    assert (tmp_path / "previews" / "step_000002.png").is_file() and (tmp_path / "config.yaml").is_file()
    # The training step changed the mask network.
    fresh = build_redo(cfg)
    assert any(not torch.equal(v, state["mask"][k]) for k, v in fresh.mask.state_dict().items())

    images = [read_image(p) for p in sorted(image_dir.iterdir())]
    seg = RedoSegmenter(tmp_path)  # a folder means its last.pt
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
    sa, sb = load_redo_checkpoint(straight), load_redo_checkpoint(resumed)
    assert sa["step"] == sb["step"] == 3
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
    with pytest.raises(ValueError, match="not a readable"):
        RedoSegmenter(tmp_path / "garbage.pt")


def test_nan_stops_training_and_keeps_last_good_checkpoint(image_dir, tmp_path, monkeypatch):
    real_batch, calls = redo_mod._batch, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        x = real_batch(*args, **kwargs)
        return x * float("nan") if calls["n"] > 4 else x  # two batches per step: step 3 is NaN

    monkeypatch.setattr(redo_mod, "_batch", poisoned)
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
