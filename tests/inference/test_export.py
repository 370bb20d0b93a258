"""synthdet export: the TorchScript and ONNX graphs give the PyTorch model's boxes, scores and labels
on inputs they were not traced with; the CLI refuses to replace an existing file."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from synthdet.cli import main
from synthdet.inference import export_model, load_exported, split_detections
from synthdet.models import build_detector
from synthdet.training.checkpoint import save_checkpoint

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime")
                                is None, reason="onnx / onnxruntime not installed (pip install 'synthdet[export]')")


def _model():
    return build_detector("fcos_efficientnet_lite0", 2, image_size=64, weights="none", seed=0, fpn_channels=64,
                          head_convs=1).eval()


def _reference(model, x):
    """The PyTorch model's detections of a [B, 3, S, S] batch, score threshold 0."""
    model.score_thresh = 0.0
    with torch.no_grad():
        out = model(list(x.unbind(0)))
    return [{k: o[k].numpy() for k in ("boxes", "scores", "labels")} for o in out]


def _assert_same(got, ref):
    """Same detections, one to one (boxes within 1e-3 px, scores within 1e-5, same label); the order of
    equal scores is free (the untrained model has ties)."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert len(r["scores"]) > 10 and len(g["scores"]) == len(r["scores"])
        unused = set(range(len(g["scores"])))
        for box, score, label in zip(r["boxes"], r["scores"], r["labels"]):
            match = [j for j in unused if g["labels"][j] == label and abs(g["scores"][j] - score) <= 1e-5
                     and np.abs(g["boxes"][j] - box).max() <= 1e-3]
            assert match, f"no exported detection matches {box} {score} {label}"
            unused.remove(match[0])


def test_torchscript_round_trip_gives_the_same_boxes_and_never_replaces_a_file(tmp_path, capsys):
    model = _model()
    ck = tmp_path / "tiny.pt"
    save_checkpoint(ck, {"model": model.state_dict(), "detector": model.synthdet_meta})
    out = tmp_path / "tiny.torchscript"
    args = ["export", "--checkpoint", str(ck), "--format", "torchscript", "--batch-size", "2", "--score-threshold", "0"]
    assert main(args + ["--out", str(out)]) == 0
    assert "[2, 3, 64, 64]" in capsys.readouterr().out
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # not the tracing input
    got = load_exported(out)(x.numpy())
    assert got.shape == (2, 100, 6) and got.dtype == np.float32
    _assert_same(split_detections(got), _reference(model, x))
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"user file")
    assert main(args + ["--out", str(mine)]) == 1
    assert "already exists" in capsys.readouterr().err and mine.read_bytes() == b"user file"


@needs_onnx
def test_onnx_round_trip_gives_the_same_boxes(tmp_path):
    model = _model()
    path = export_model(model, tmp_path / "m.onnx", "onnx", batch_size=2, score_threshold=0.0)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # not the tracing input
    got = load_exported(path)(x.numpy())
    assert got.shape == (2, 100, 6)
    _assert_same(split_detections(got), _reference(model, x))
