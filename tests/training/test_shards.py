"""The CPU step split into shards run in threads: the same gradient as the whole batch, the
model's own parameters updated, deterministic, and off where it would change the step."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from synthdet.models import build_detector
from synthdet.training import TrainConfig, run_training
from synthdet.training.engine import _make_shards
from synthdet.training.batches import DistInfo
from synthdet.training.shards import ShardedStep, shard_bounds, shardable
from synthdet.utils.threads import cpu_pool, cpu_workers


def _batch(n: int, size: int = 64, dtype=torch.float32, empty: tuple[int, ...] = ()):
    g = torch.Generator().manual_seed(3)
    images, targets = [], []
    for i in range(n):
        images.append(torch.rand(3, size, size, generator=g, dtype=dtype))
        k = 0 if i in empty else 1 + i % 3
        xy = torch.rand(k, 2, generator=g, dtype=dtype) * size * 0.5
        wh = torch.rand(k, 2, generator=g, dtype=dtype) * size * 0.4 + 6
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.ones(k, dtype=torch.int64)})
    return images, targets


def _fcos(dtype=torch.float32) -> nn.Module:
    m = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=32,
                       head_convs=1, frozen_blocks=3)
    return m.to(dtype).train()


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_shard_bounds_cover_the_batch_in_order():
    assert shard_bounds(16, 2) == [(0, 8), (8, 16)]
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty shard
    assert shard_bounds(5, 1) == [(0, 5)]


@pytest.mark.parametrize("empty", [(), (0, 1, 2)])  # the second: one shard without any box
def test_sharded_fcos_step_gives_the_whole_batch_gradient(empty):
    """In float64 (rounding out of the way) the shards' weighted losses and summed gradients equal
    the whole batch's: FCOS divides its losses by the batch's foreground count, and so do the
    shard weights (``loss_count``), also when a shard has no foreground at all."""
    images, targets = _batch(6, dtype=torch.float64, empty=empty)
    model = _fcos(torch.float64)
    losses = model(images, targets)
    sum(losses.values()).backward()
    whole = _grads(model)
    for p in model.parameters():
        p.grad = None
    with ShardedStep(model, 3) as step:
        total, backward = step.forward(images, targets)
        backward()
    for k, v in losses.items():
        assert float(total[k]) == pytest.approx(float(v.detach()), rel=1e-12, abs=1e-12), k
    got = _grads(model)
    assert got.keys() == whole.keys() and whole
    for n, g in whole.items():
        assert torch.allclose(got[n], g, rtol=1e-9, atol=1e-12), n
    assert all(p.grad is None for r in step.replicas[1:] for p in r.parameters())


class _MeanLoss(nn.Module):
    """A model without ``loss_count`` whose loss is a mean over images: shards weigh by images."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))

    def forward(self, images, targets=None):
        per_image = torch.stack([(im.mean((1, 2)) * self.w).sum() ** 2 for im in images])
        return {"loss": per_image.mean()}


def test_models_without_a_loss_count_are_weighted_by_images():
    images, _ = _batch(7, size=8, dtype=torch.float64)
    model = _MeanLoss()
    model(images)["loss"].backward()
    whole = model.w.grad.clone()
    model.w.grad = None
    with ShardedStep(model, 2) as step:  # shards of 4 and 3 images
        total, backward = step.forward(images, [{}] * 7)
        backward()
    assert float(total["loss"]) == pytest.approx(float(model(images)["loss"]), rel=1e-12)
    assert torch.allclose(model.w.grad, whole, rtol=1e-12)


def test_replicas_share_parameters_so_an_optimiser_step_reaches_them():
    model = _fcos()
    with ShardedStep(model, 2) as step:
        rep = step.replicas[1]
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rep.state_dict().values()))
        assert next(model.parameters()).data_ptr() == next(rep.parameters()).data_ptr()


def test_batch_statistics_models_and_other_settings_are_not_sharded():
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert not shardable(bn) and shardable(_fcos())
    with pytest.raises(ValueError, match="BatchNorm"):
        ShardedStep(bn, 2)
    cpu = torch.device("cpu")
    cfg = TrainConfig(batch_size=4, cpu_shards=2)
    assert _make_shards(bn, cfg, cpu, DistInfo()) is None
    assert _make_shards(_fcos(), TrainConfig(batch_size=4, cpu_shards=1), cpu, DistInfo()) is None
    assert _make_shards(_fcos(), cfg, cpu, DistInfo(rank=0, world=2)) is None  # DDP: a process per shard
    made = _make_shards(_fcos(), cfg, cpu, DistInfo())
    assert made is not None and made.shards == 2
    made.close()
    with pytest.raises(ValueError, match="cpu_shards"):
        TrainConfig(cpu_shards=-1)


def _stream_batches(start, info):
    images, targets = _batch(4, dtype=torch.float64)
    while True:
        yield images, targets


@pytest.mark.parametrize("shards", [1, 2])
def test_a_sharded_run_is_deterministic_and_matches_the_unsharded_one(tmp_path, shards):
    """Two runs with the same seed give identical weights; sharded and unsharded runs agree up to
    rounding (the same batches, the same gradients; float64, as Adam's normalisation amplifies
    float32 rounding of near-zero gradients into different steps)."""
    def train(out, n):
        torch.manual_seed(0)
        model = _fcos(torch.float64)
        cfg = TrainConfig(iterations=3, batch_size=4, lr=1e-3, cpu_shards=n, checkpoint_every=0, progress=False,
                          tensorboard=False)
        run_training(model, _stream_batches, cfg, out, resume=False)
        return model.state_dict()

    a, b = train(tmp_path / "a", shards), train(tmp_path / "b", shards)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train(tmp_path / "c", 3 - shards)
    assert all(torch.allclose(a[k], other[k], rtol=1e-7, atol=1e-9) for k in a if a[k].is_floating_point())


def test_cpu_pool_sets_threads_per_worker_and_leaves_the_caller_alone():
    before = torch.get_num_threads()
    seen = []
    with cpu_pool(2, 1) as pool:
        list(pool.map(lambda _: seen.append((threading.get_ident(), torch.get_num_threads())), range(4)))
    assert {t for _, t in seen} == {1}
    assert torch.get_num_threads() == before
    assert cpu_workers(16, threads=2) == (2, 1) and cpu_workers(1, threads=2) == (1, 2)
    assert cpu_workers(64, threads=32) == (8, 4)
