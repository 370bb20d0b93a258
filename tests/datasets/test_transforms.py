"""Real-image augmentation keeps boxes pixel-exact: each box is checked against the tight box of
its own coloured rectangle after the transform."""

import numpy as np
import pytest
import torch

from synthdet.datasets.records import DetectionDataset, DetectionRecord
from synthdet.datasets.transforms import RealAugment, clip_boxes, crop_resize, hflip, mosaic
from synthdet.utils.image import write_image

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _scene(w: int = 64, h: int = 48, boxes=((5, 7, 6, 8), (10, 12, 30, 20), (40, 30, 64, 48))):
    img = np.zeros((h, w, 3), np.uint8)
    for (x0, y0, x1, y1), c in zip(boxes, COLORS):
        img[y0:y1, x0:x1] = c
    return img, np.array(boxes, np.float32), np.arange(1, len(boxes) + 1, dtype=np.int64)


def _tight_box(img: np.ndarray, color) -> np.ndarray:
    """Tight XYXY (exclusive end) box of pixels at least half-way to ``color``."""
    c = np.asarray(color, np.float32)
    near = np.linalg.norm(img.astype(np.float32) - c, axis=2) < np.linalg.norm(c) / 2
    ys, xs = np.nonzero(near)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _check(img, boxes, labels, tol=0.0):
    for b, lab in zip(boxes, labels):
        np.testing.assert_allclose(_tight_box(img, COLORS[lab - 1]), b, atol=tol)


def test_hflip_is_pixel_exact_including_a_one_pixel_box():
    img, boxes, labels = _scene()
    out, b, lab = hflip(img, boxes, labels)
    assert b[0].tolist() == [64 - 6, 7, 64 - 5, 8]
    _check(out, b, lab)
    back, b2, _ = hflip(out, b, lab)
    assert np.array_equal(back, img) and np.array_equal(b2, boxes)


def test_crop_clips_cut_boxes_and_drops_mostly_hidden_ones():
    img, boxes, labels = _scene()
    # window cuts the middle box in half and hides the 1-pixel box; same size: no resampling
    out, b, lab = crop_resize(img, boxes, labels, (20, 10, 84, 58), (64, 48), min_visible=0.25)
    assert lab.tolist() == [2, 3]
    assert b.tolist() == [[0, 2, 10, 10], [20, 20, 44, 38]]
    _check(out, b, lab)
    assert (out[40:, 50:] == 114).all()  # outside the source image: grey


@pytest.mark.parametrize("window", [(8, 6, 40, 30), (-32, -24, 96, 72), (0, 0, 64, 48)])
def test_scale_jitter_maps_boxes_like_pixels(window):
    img, boxes, labels = _scene(boxes=((8, 8, 24, 20), (30, 14, 50, 30), (40, 32, 60, 44)))
    out, b, lab = crop_resize(img, boxes, labels, window, (64, 48), min_visible=0.0)
    assert len(b) >= 2
    _check(out, b, lab, tol=1.0)  # edges resampled: within one pixel
    scale = 64 / (window[2] - window[0])
    if scale == 2.0:  # integer zoom: edges land exactly on pixel borders
        _check(out, b, lab, tol=0.0)


def test_mosaic_tiles_four_samples_with_exact_boxes():
    samples = [_scene(boxes=((8, 8, 24, 20),)) for _ in range(4)]
    out, b, lab = mosaic(samples, (64, 48))
    assert out.shape == (48, 64, 3) and len(b) == 4
    expected = [[4, 4, 12, 10], [36, 4, 44, 10], [4, 28, 12, 34], [36, 28, 44, 34]]
    assert b.tolist() == expected
    for box in b:
        x0, y0, x1, y1 = box.astype(int)
        assert (out[y0:y1, x0:x1, 0] > 127).all()
        assert out[y0 - 1, x0:x1, 0].max() < 128 and out[y0:y1, x1, 0].max() < 128


def test_clip_boxes_drops_small_and_degenerate():
    b, lab = clip_boxes(np.array([[-10, 0, 10, 10], [0, 0, 0.5, 5], [5, 5, 40, 40]], np.float32),
                        np.array([1, 2, 3]), 32, 32, min_visible=0.4)
    assert lab.tolist() == [1, 3] and b.tolist() == [[0, 0, 10, 10], [5, 5, 32, 32]]


def test_real_augment_is_deterministic_per_draw_and_varies_across_draws(tmp_path):
    img, boxes, labels = _scene()
    path = tmp_path / "a.png"
    write_image(path, img)
    rec = DetectionRecord(str(path), 64, 48, boxes, labels)
    ds = DetectionDataset([rec, rec], transform=RealAugment(mosaic_p=0.5), seed=3)
    assert ds.wants_draw
    a1, t1 = ds[(0, 5)]
    a2, t2 = ds[(0, 5)]
    assert torch.equal(a1, a2) and torch.equal(t1["boxes"], t2["boxes"])
    draws = {ds[(0, k)][0].sum().item() for k in range(6)}
    assert len(draws) > 1
    for k in range(10):  # every augmented box still lies inside the image with a positive size
        _, t = ds[(1, k)]
        bx = t["boxes"]
        assert ((bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])).all()
        assert (bx[:, :2] >= 0).all() and (bx[:, 2] <= 64).all() and (bx[:, 3] <= 48).all()


def test_photometric_jitter_keeps_boxes():
    img, boxes, labels = _scene()
    aug = RealAugment(flip_p=0.0, scale=(1.0, 1.0), aspect=0.0)
    out, b, lab = aug(img, boxes, labels, np.random.default_rng(0))
    assert np.array_equal(b, boxes) and np.array_equal(lab, labels)
    assert out.shape == img.shape


def test_crop_at_inference_scale_keeps_boxes_exact():
    """crop_size / image_size: a crop_size-pixel window at the scale a detector resizing this image
    to image_size sees it (here 2x: 32 px out of 16 image px), boxes following the pixels."""
    img, boxes, labels = _scene(boxes=((8, 8, 24, 20), (30, 14, 50, 30), (40, 32, 60, 44)))
    aug = RealAugment(flip_p=0.0, scale=(1.0, 1.0), aspect=0.0, min_visible=0.0, brightness=0.0, contrast=0.0,
                      saturation=0.0, hue=0.0, crop_size=32, image_size=128)
    seen = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        x0, y0, x1, y1 = aug.window(64, 48, np.random.default_rng(seed))
        np.testing.assert_allclose((x1 - x0, y1 - y0), (16, 16))  # 32 px at scale 128 / 64
        out, b, lab = aug(img, boxes, labels, rng)
        assert out.shape == (32, 32, 3)
        _check(out, b, lab, tol=1.0)
        whole = (b[:, 0] > 0) & (b[:, 1] > 0) & (b[:, 2] < 32) & (b[:, 3] < 32)
        src = boxes[lab - 1][whole]
        np.testing.assert_allclose(b[whole, 2:] - b[whole, :2], 2 * (src[:, 2:] - src[:, :2]), atol=1e-4)
        seen += len(b)
    assert seen >= 6
    with pytest.raises(ValueError, match="together"):
        RealAugment(crop_size=32)
