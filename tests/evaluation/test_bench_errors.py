"""``bench/errors.py``: AP at three IoU thresholds, recall by object size, confident false alarms."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def errors(bench_script):
    return bench_script("errors").errors


def _det(boxes, scores):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.array(scores, np.float32),
            "labels": np.ones(len(scores), np.int64)}


def test_errors_split_localisation_size_and_false_alarms(errors):
    gts = [{"boxes": np.array([[0, 0, 20, 20], [100, 100, 200, 200]], np.float32), "labels": np.ones(2, np.int64)},
           {"boxes": np.array([[10, 10, 50, 50]], np.float32), "labels": np.ones(1, np.int64)}]
    preds = [_det([[0, 0, 20, 20],          # small object: exact
                   [100, 100, 180, 180],    # large object: IoU 0.64, found at 0.5, not at 0.7
                   [300, 300, 340, 340]],   # confident, overlaps nothing: a false alarm
                  [0.9, 0.8, 0.7]),
             _det([[10, 10, 50, 90]], [0.6])]  # medium object: IoU 0.5 -> found at 0.3 and 0.5 only
    row = errors(preds, gts, score=0.3)
    # ranked 0.9 hit, 0.8 hit, 0.7 false alarm, 0.6 hit: all-point AP = 2/3 * 1 + 1/3 * 3/4
    assert row["AP@0.3"] == pytest.approx(100 * (2 / 3 + 1 / 3 * 3 / 4))
    assert row["AP@0.7"] == pytest.approx(100 / 3) and row["AP@0.7"] < row["AP@0.5"] <= row["AP@0.3"]
    assert (row["n <32"], row["n 32-64"], row["n >=64"]) == (1, 1, 1)
    assert row["recall <32"] == row["recall 32-64"] == row["recall >=64"] == 100.0
    assert row["false alarms / image"] == 0.5
    assert errors(preds, gts, score=0.65)["recall 32-64"] == 0.0  # its one detection is below the score
