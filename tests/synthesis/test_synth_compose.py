import numpy as np
import pytest

from synthdet.synthesis import SynthConfig
from synthdet.synthesis.compose import (any_overlap, blend, label_box, mask_box, overlaps, place_boxes,
                                        sample_box_sizes)
from synthdet.utils.config import ConfigError, from_dict


def test_mask_box_one_pixel_exclusive_end():
    m = np.zeros((20, 20), np.float32)
    m[7, 5] = 0.3
    assert mask_box(m) == (5, 7, 6, 8)
    assert mask_box(m, threshold=0.5) is None


def test_label_box_shifts_to_canvas_and_empty_falls_back():
    m = np.zeros((10, 12), np.float32)
    m[2:5, 3:9] = 1
    box, empty = label_box(m, np.array([100, 50, 112, 60]))
    assert not empty and box.tolist() == [103, 52, 109, 55]
    box, empty = label_box(np.zeros((10, 12), np.float32), np.array([100, 50, 112, 60]))
    assert empty and box.tolist() == [100, 50, 112, 60]


def test_overlap_rule_touching_allowed():
    assert not any_overlap(np.array([[0, 0, 10, 10], [10, 0, 20, 10]]))
    assert any_overlap(np.array([[0, 0, 10, 10], [9, 9, 20, 20]]))
    batch = np.array([[[0, 0, 5, 5], [5, 5, 9, 9]], [[0, 0, 5, 5], [4, 4, 9, 9]]])
    assert overlaps(batch).tolist() == [False, True]


def test_place_boxes_respects_ranges_and_no_overlap():
    cfg = SynthConfig(canvas_size=100)
    counts = []
    for i in range(300):
        boxes = place_boxes(cfg, np.random.default_rng([1, i]))
        counts.append(len(boxes))
        assert 1 <= len(boxes) <= 10
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 100).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert not any_overlap(boxes)
    assert max(counts) > 2  # several objects do get placed
    cfg = SynthConfig(canvas_size=100, allow_overlap=True, box_side=(0.6, 0.8), num_objects=(5, 5))
    boxes = place_boxes(cfg, np.random.default_rng(0))
    assert len(boxes) == 5 and any_overlap(boxes)


def test_box_sizes_follow_side_and_aspect():
    cfg = SynthConfig(canvas_size=320)
    wh = sample_box_sizes(5000, cfg, np.random.default_rng(0)).astype(float)
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    assert side.min() >= 0.05 * 320 - 1 and side.max() <= 0.8 * 320 + 1
    ar = wh[:, 0] / wh[:, 1]
    assert ar.min() >= 0.5 * 0.9 and ar.max() <= 2.0 * 1.1
    assert wh.max() <= 320


def test_blend_formula_on_box_region_only():
    canvas = np.full((8, 8, 3), 100, np.uint8)
    obj = np.full((2, 3, 3), 200, np.uint8)
    mask = np.array([[0, 0.5, 1], [1, 0.25, 0]], np.float32)
    blend(canvas, obj, mask, 4, 5)
    assert canvas[5, 4:7, 0].tolist() == [100, 150, 200]
    assert canvas[6, 4:7, 1].tolist() == [200, 125, 100]
    canvas[5:7, 4:7] = 100
    assert (canvas == 100).all()


@pytest.mark.parametrize("field,value", [("box_side", (0.5, 0.2)), ("num_objects", (3, 1)),
                                         ("scale", (1.2, 0.8)), ("blur_p", 1.5), ("canvas_size", 0),
                                         ("crop", (0.0, 0.6))])
def test_impossible_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**{field: value})


def test_from_dict_rejects_unknown_key():
    cfg = from_dict(SynthConfig, {"canvas_size": 64, "num_objects": [1, 3]})
    assert cfg.num_objects == (1, 3)
    with pytest.raises(ConfigError, match="box_sid"):
        from_dict(SynthConfig, {"box_sid": [0.1, 0.2]})
