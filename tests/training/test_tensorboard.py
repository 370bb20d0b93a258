"""TensorBoard logging: a finetuning run writes an event file with losses, lr, validation AP and a
sample image, readable by TensorBoard's own reader; ``tensorboard=False`` writes none."""

from __future__ import annotations

import pytest
import torch

from synthdet.models import build_detector
from synthdet.training import TrainConfig, finetune

pytest.importorskip("tensorboard")


def _data(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2
        img[:, 10 + i:40 + i, 12:44] = 0.9
        out.append((img, {"boxes": torch.tensor([[12.0, 10.0 + i, 44.0, 40.0 + i]]),
                          "labels": torch.ones(1, dtype=torch.int64)}))
    return out


def _finetune(out, **cfg):
    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=64,
                           head_convs=1)
    data = _data()
    config = TrainConfig(iterations=4, batch_size=2, val_every=2, progress=False, checkpoint_every=0, **cfg)
    return finetune(model, data, data, config, out)


def test_event_file_holds_losses_lr_val_ap_and_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = _finetune(tmp_path / "run")
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/total", "loss/classification", "lr", "val/ap50"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3, 4]
    totals = [e.value for e in acc.Scalars("loss/total")]
    assert res.losses[-1]["step"] == 4 and sum(totals) / 4 == pytest.approx(res.losses[-1]["loss"], rel=1e-5)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val/ap50")] == [
        (c["step"], round(c["ap50"], 6)) for c in res.curve]
    assert all(e.value > 0 for e in acc.Scalars("lr"))
    images = acc.Images("samples")
    assert [e.step for e in images] == [2, 4] and images[0].width > 64 and images[0].encoded_image_string[:4] == b"\x89PNG"


def test_switched_off_writes_nothing(tmp_path):
    _finetune(tmp_path / "run", tensorboard=False)
    assert not (tmp_path / "run" / "tensorboard").exists()
