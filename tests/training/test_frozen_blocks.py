"""``frozen_blocks`` as a training setting: a run keeps exactly those backbone blocks fixed,
whatever the model was built with (a frozen-backbone pretraining, then a finetuning that trains
the later blocks again)."""

from __future__ import annotations

import pytest
import torch

from synthdet.models import build_detector
from synthdet.training import TrainConfig, run_training


def _batches(start, info):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 44.0]]), "labels": torch.ones(1, dtype=torch.int64)}] * 2
    while True:
        yield images, targets


def _train(model, tmp_path, **kw):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(iterations=2, batch_size=2, lr=1e-2, checkpoint_every=0, progress=False, tensorboard=False, **kw)
    run_training(model, _batches, cfg, tmp_path, resume=False)
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("frozen", [16, 8, 0])
def test_a_run_trains_exactly_the_blocks_after_frozen_blocks(tmp_path, frozen):
    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=32,
                           head_convs=1)  # built with frozen_blocks=5
    changed = _train(model, tmp_path, frozen_blocks=frozen)
    blocks = {int(n.split(".")[2]) for n in changed if n.startswith("backbone.blocks.")}
    assert blocks == set(range(frozen, 16)), blocks
    assert not any(n.startswith("backbone.stem") for n in changed)
    assert any(n.startswith("backbone.fpn") for n in changed) and any(n.startswith("head.") for n in changed)


def test_frozen_blocks_needs_a_backbone_with_blocks(tmp_path):
    model = build_detector("ssd_mobilenet", 1, image_size=64, weights="none", seed=0)
    with pytest.raises(ValueError, match="frozen_blocks"):
        _train(model, tmp_path, frozen_blocks=3)
    with pytest.raises(ValueError, match="frozen_blocks must be in"):
        build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", frozen_blocks=17)
