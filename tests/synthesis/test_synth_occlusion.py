"""Occlusion (``allow_overlap``): visible boxes, amodal boxes, drop / retry, distractors."""

import numpy as np
import pytest

from synthdet.sources.base import ObjectSample
from synthdet.synthesis import SynthConfig
from synthdet.synthesis.augment import ObjectAugmenter
from synthdet.synthesis.compose import any_overlap, mask_box
from synthdet.synthesis.occlusion import Layers
from synthdet.synthesis.scene import distractor_boxes, paste_scene

# No augmentation: an object as large as its box is pasted pixel for pixel (identity warp).
PLAIN = SynthConfig(canvas_size=40, object_size=20, allow_overlap=True, photometric=False, geometric=False,
                    min_visibility=0.25)


class Solid:
    """An object source of solid squares: the k-th draw has colour COLORS[k] and the given mask."""

    class_names = ["thing"]
    COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks, self.k = masks, 0

    def draw(self, rng: np.random.Generator) -> ObjectSample:
        mask = self.masks[self.k]
        image = np.zeros(mask.shape + (3,), np.uint8)
        image[:] = self.COLORS[self.k]
        self.k += 1
        return ObjectSample(image=image, mask=mask, label=1, key=f"obj{self.k - 1}")


def _scene(placed, masks=None, cfg=PLAIN, canvas=None):
    placed = np.asarray(placed, np.int64)
    if masks is None:
        masks = [np.ones((b[3] - b[1], b[2] - b[0]), np.float32) for b in placed]
    canvas = np.zeros((cfg.canvas_size, cfg.canvas_size, 3), np.uint8) if canvas is None else canvas
    scene = paste_scene(canvas, placed, cfg, ObjectAugmenter(cfg), Solid(masks), None, np.random.default_rng(0))
    return scene, canvas


def test_half_covered_object_gets_the_box_of_its_visible_half():
    scene, canvas = _scene([[0, 0, 20, 20], [10, 0, 30, 20]])
    assert [b.tolist() for b in scene.boxes] == [[0, 0, 10, 20], [10, 0, 30, 20]]
    assert [b.tolist() for b in scene.amodal] == [[0, 0, 20, 20], [10, 0, 30, 20]]
    assert scene.visible == [0.5, 1.0] and scene.dropped == 0
    assert (canvas[:20, :10] == (255, 0, 0)).all() and (canvas[:20, 10:30] == (0, 255, 0)).all()
    assert scene.masks[0][:, :10].all() and not scene.masks[0][:, 10:].any()  # visible part only


def test_non_rectangular_visible_box_matches_the_visible_pixels():
    yy, xx = np.mgrid[:20, :20]
    disk = (((yy - 9.5) ** 2 + (xx - 9.5) ** 2) <= 81).astype(np.float32)
    scene, canvas = _scene([[4, 4, 24, 24], [14, 10, 34, 30]], masks=[disk, disk])
    red = (canvas == (255, 0, 0)).all(axis=2).astype(np.float32)
    assert scene.boxes[0].tolist() == list(mask_box(red))
    assert scene.amodal[0].tolist() == [4 + c for c in mask_box(disk)]  # the whole disk
    assert scene.boxes[0][2] < scene.amodal[0][2]  # the visible box lost its covered right part
    assert scene.visible[0] == pytest.approx(red.sum() / disk.sum())


def test_fully_covered_is_dropped_and_little_visible_too():
    scene, _ = _scene([[5, 5, 15, 15], [0, 0, 20, 20]])
    assert len(scene.boxes) == 1 and scene.boxes[0].tolist() == [0, 0, 20, 20] and scene.dropped == 1
    scene, _ = _scene([[0, 0, 10, 20], [0, 0, 8, 20]])  # 20 % visible < min_visibility 0.25
    assert len(scene.boxes) == 1 and scene.dropped == 1
    scene, _ = _scene([[0, 0, 10, 20], [0, 0, 8, 20]], cfg=PLAIN.replace(min_visibility=0.1))
    assert [b.tolist() for b in scene.boxes] == [[8, 0, 10, 20], [0, 0, 8, 20]]
    assert scene.visible[0] == pytest.approx(0.2) and scene.amodal[0].tolist() == [0, 0, 10, 20]


def test_no_overlap_mode_keeps_whole_boxes():
    cfg = PLAIN.replace(allow_overlap=False)
    scene, _ = _scene([[0, 0, 10, 10], [20, 20, 30, 30]], cfg=cfg)
    assert [b.tolist() for b in scene.boxes] == [b.tolist() for b in scene.amodal] == [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert scene.visible == [1.0, 1.0]


def test_retry_moves_the_covering_object():
    cfg = PLAIN.replace(canvas_size=80, occluded="retry", max_tries=50)
    scene, _ = _scene([[0, 0, 20, 20], [0, 0, 20, 20]], cfg=cfg)
    assert len(scene.boxes) == 2 and scene.dropped == 0 and scene.retries >= 1
    assert scene.boxes[0].tolist() == [0, 0, 20, 20] and min(scene.visible) >= 0.25
    moved = scene.placed[1]
    assert moved.tolist() != [0, 0, 20, 20] and (moved[2:] - moved[:2]).tolist() == [20, 20]
    cfg = PLAIN.replace(canvas_size=20, occluded="retry", max_tries=3)  # nowhere else to go
    scene, canvas = _scene([[0, 0, 20, 20], [0, 0, 20, 20]], cfg=cfg)
    assert len(scene.boxes) == 1 and scene.rejected == 1 and scene.retries == 3
    assert (canvas == (255, 0, 0)).all()  # the rejected object was not pasted


def test_layers_empty_mask_counts_as_its_box():
    layers = Layers(10)
    layers.add(np.ones((4, 4), bool), np.array([0, 0, 4, 4]), np.zeros((4, 4), bool))
    layers.add(np.ones((4, 2), bool), np.array([2, 0, 4, 4]), np.ones((4, 2), bool))
    box, frac, _ = layers.label(0)
    assert box.tolist() == [0, 0, 2, 4] and frac == 0.5
    assert layers.would_hide(np.ones((4, 4), bool), np.array([0, 0, 4, 4]), [0], 0.25)
    assert not layers.would_hide(np.ones((4, 4), bool), np.array([5, 5, 9, 9]), [0], 0.25)


def test_distractor_boxes_miss_the_targets_without_overlap():
    cfg = SynthConfig(canvas_size=64, box_side=(0.1, 0.3), num_distractors=(2, 4))
    placed = np.array([[0, 0, 30, 30]])
    for i in range(30):
        boxes, missed = distractor_boxes(placed, cfg, np.random.default_rng(i))
        assert 2 <= len(boxes) + missed <= 4
        assert not any_overlap(np.concatenate([placed, boxes]))
