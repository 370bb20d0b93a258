"""``bench/predict_export.py``: predict AP on a COCO split, exported files compared with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from synthdet.datasets.coco import write_coco
from synthdet.datasets.records import DetectionRecord
from synthdet.models import build_detector
from synthdet.training.checkpoint import save_checkpoint
from synthdet.utils.image import write_image


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("predict_export")


def _dets(*boxes):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4)}


def test_largest_difference_is_nan_when_counts_differ(bench):
    ref = [_dets([0, 0, 10, 10]), _dets()]
    assert bench.largest_difference([_dets([0, 0.5, 10, 10]), _dets()], ref) == 0.5
    assert np.isnan(bench.largest_difference([_dets(), _dets()], ref))
    assert bench.largest_difference([_dets(), _dets()], [_dets(), _dets()]) == 0.0


def test_main_reports_ap_and_an_identical_torchscript_export(bench, tmp_path, capsys):
    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=32,
                           head_convs=1)
    ck = tmp_path / "tiny.pt"
    save_checkpoint(ck, {"model": model.state_dict(), "detector": model.synthdet_meta})
    rng = np.random.default_rng(0)
    records = []
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        write_image(path, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        records.append(DetectionRecord(str(path), 64, 48, np.array([[8, 8, 28, 24]], np.float32), np.ones(1, np.int64)))
    data = tmp_path / "test.json"
    write_coco(data, records, {1: "bird"}, image_root=tmp_path)
    assert bench.main([str(ck), "--data", str(data), "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "on 3 images" in out and "AP@0.5" in out
    line = next(x for x in out.splitlines() if x.startswith("torchscript:"))
    assert "on 2 images" in line and line.endswith("largest box difference 0 px")
    assert int(line.split("(PyTorch ")[1].split(")")[0]) > 0  # compared on real detections, not on none
