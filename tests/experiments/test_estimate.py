"""The demo's time estimate: the work left counted from the plan, the probe's timings applied."""

from __future__ import annotations

import pytest

from synthdet.experiments import ExperimentRunner
from synthdet.experiments.config import experiment_from_dict
from synthdet.experiments.estimate import Estimate, _work_left, estimate

from test_experiments import write_tiny_data


def _cfg(root):
    return experiment_from_dict({
        "data": {"objects": str(root / "objects"), "backgrounds": str(root / "backgrounds"),
                 "real_format": "coco", "real_train": str(root / "real/train.json"),
                 "real_val": str(root / "real/val.json"), "real_test": str(root / "real/test.json")},
        "synthesis": {"canvas_size": 64}, "detectors": ["fcos_efficientnet_lite0"], "image_size": 64,
        "detector_options": {"fcos_efficientnet_lite0": {"fpn_channels": 32, "head_convs": 1}},
        "weights": "none", "device": "cpu",
        "pretrain": {"recipe": "short", "iterations": 7, "batch_size": 2},
        "finetune": {"recipe": "short", "iterations": 5, "batch_size": 2, "val_every": 2, "min_epochs": 3},
        "study": {"kind": "data_efficiency", "real_sizes": [0, 2, -1], "repeats": 2},
    })


def test_work_left_counts_iterations_validations_and_test_images(tmp_path):
    root = write_tiny_data(tmp_path)  # 4 train, 2 val, 2 test images
    runner = ExperimentRunner(_cfg(root), tmp_path / "exp")
    iters, images = _work_left(runner)
    # per repeat: 1 pretraining of 7; finetunes at 2 images: 5 iterations (3 epochs = 3), at all 4:
    # max(5, 3 * 4 / 2 = 6) = 6; two variants each. Validations: start + every 2 + the end.
    per_repeat_iters = 7 + 2 * 5 + 2 * 6
    vals = 2 * (1 + 3) + 2 * (1 + 3)  # ceil(5 / 2) = 3, ceil(6 / 2) = 3
    tests = 5  # pretrain only + 2 x 2 finetuned runs
    assert iters == 2 * per_repeat_iters
    assert images == 2 * (vals * 2 + tests * 2)


def test_estimate_multiplies_the_probe_timings(tmp_path):
    est = Estimate(train_iterations=100, eval_images=50, seconds_per_iteration=0.5, seconds_per_image=0.1)
    assert est.seconds == pytest.approx(55) and "about 1 min" in est.line()
    root = write_tiny_data(tmp_path)
    got = estimate(ExperimentRunner(_cfg(root), tmp_path / "exp"))
    assert got.train_iterations == 58 and got.seconds_per_iteration > 0 and got.seconds_per_image > 0
