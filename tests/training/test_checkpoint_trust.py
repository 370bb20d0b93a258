"""Checkpoints load with ``weights_only=True`` on every path: a checkpoint whose unpickling would run
code is refused with one line (no marker file), unless the user opts in; a detector rebuilt from
a checkpoint is the network that was saved; the same CLI command gives the same weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from synthdet.cli import main
from synthdet.models import build_detector, load_detector
from synthdet.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class _Payload:
    """Unpickling this runs ``os.system``: the attack the loaders must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp_path: Path, real: bool = True) -> tuple[Path, Path]:
    """A real detector checkpoint that also carries the payload."""
    marker = tmp_path / "MARKER"
    model = build_detector("ssd_mobilenet", 1, image_size=64, weights="none", seed=0)
    ck = {"model": model.state_dict(), "detector": model.synthdet_meta, "step": 0, "evil": _Payload(marker)}
    path = tmp_path / "evil.pt"
    torch.save(ck if real else _Payload(marker), path)
    return path, marker


def _coco(tmp_path: Path) -> Path:
    from test_training import _coco as make  # tests/training/test_training.py

    return make(tmp_path, "data", 3)


def _objects_and_backgrounds(tmp_path: Path) -> tuple[Path, Path]:
    import numpy as np

    from synthdet.utils.image import write_image

    rng = np.random.default_rng(0)
    for k in range(3):
        obj = np.zeros((40, 40, 3), np.uint8)
        obj[8:32, 10:30] = (200, 40 * k, 30)
        write_image(tmp_path / "objs" / f"o{k}.png", obj)
        write_image(tmp_path / "bgs" / f"b{k}.jpg", rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    return tmp_path / "objs", tmp_path / "bgs"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("synthdet: error: "), err
    return err[0]


@pytest.mark.parametrize("command", ["eval", "finetune", "mixed", "resume"])
def test_malicious_checkpoint_is_refused_everywhere(tmp_path, capsys, command):
    evil, marker = _malicious(tmp_path)
    data = _coco(tmp_path)
    common = ["--iterations", "1", "--batch-size", "2", "--image-size", "64", "--no-progress"]
    if command == "eval":
        argv = ["eval", "--data", str(data), "--checkpoint", str(evil), "--no-progress"]
    elif command == "finetune":
        argv = ["finetune", "--train", str(data), "--out", str(tmp_path / "ft"), "--weights", str(evil), *common]
    elif command == "mixed":
        objs, bgs = _objects_and_backgrounds(tmp_path)
        argv = ["mixed", "--train", str(data), "--out", str(tmp_path / "mx"), "--weights", str(evil),
                "--objects", str(objs), "--backgrounds", str(bgs), "--segmenter", "none", *common]
    else:  # a killed run's last.pt replaced by the attacker
        out = tmp_path / "ft"
        assert main(["finetune", "--train", str(data), "--out", str(out), "--weights", "none", *common]) == 0
        capsys.readouterr()
        os.replace(evil, out / "last.pt")
        argv = ["finetune", "--train", str(data), "--out", str(out), "--weights", "none",
                "--iterations", "2", "--batch-size", "2", "--image-size", "64", "--no-progress"]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert "refused" in line and "--trust-checkpoint" in line
    assert not marker.exists()


def test_trust_checkpoint_is_an_explicit_opt_in(tmp_path):
    evil, marker = _malicious(tmp_path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    ck = load_checkpoint(evil, trust=True)
    assert marker.exists() and "model" in ck


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": rng_state()})
    expected = (torch.rand(3), np.random.normal(size=3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.normal(size=3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_ssd_mobilenet_built_with_cached_imagenet_weights_reloads(tmp_path, monkeypatch):
    """On a machine with torchvision's MobileNetV3 weights the network differs (full tail, ImageNet
    mean/std); its checkpoints must reload as that network on a machine without them."""
    import torchvision.models as tvm

    import synthdet.models.detectors as det
    from synthdet.training import TrainConfig, pretrain

    real_builder = tvm.mobilenet_v3_large
    with monkeypatch.context() as m:  # "the weights file is in $TORCH_HOME": no download, random values
        m.setattr(det, "_imagenet_torchvision", lambda enum, what: enum.DEFAULT)
        m.setattr(tvm, "mobilenet_v3_large", lambda weights=None, **kw: real_builder(weights=None, **kw))
        model = build_detector("ssd_mobilenet", 1, image_size=64, weights="imagenet", seed=0)
    assert model.synthdet_meta["options"] == {"layout": "imagenet"}
    assert model.transform.image_mean == det.IMAGENET_MEAN
    plain = build_detector("ssd_mobilenet", 1, image_size=64, weights="imagenet", seed=0)
    assert plain.synthdet_meta["options"] == {"layout": "plain"}  # this machine has no such weights
    data = [(torch.rand(3, 64, 64), {"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])})] * 2
    res = pretrain(model, data, TrainConfig(iterations=1, batch_size=2, progress=False), tmp_path / "p")
    again = load_detector(res.checkpoint)
    assert again.transform.image_mean == det.IMAGENET_MEAN
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    runner_like = build_detector("ssd_mobilenet", 1, 64, weights="none", **again.synthdet_meta["options"])
    runner_like.load_state_dict(model.state_dict())  # the recorded layout fits the weights


def test_two_identical_cli_pretrain_runs_give_identical_weights(tmp_path):
    objs, bgs = _objects_and_backgrounds(tmp_path)
    states = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert main(["pretrain", "--objects", str(objs), "--backgrounds", str(bgs), "--out", str(out),
                     "--segmenter", "none", "--iterations", "2", "--batch-size", "2", "--image-size", "64",
                     "--seed", "0", "--no-progress", "--set", "augment=false"]) == 0
        states.append(load_checkpoint(out / "last.pt")["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
