import math
import pickle

import numpy as np
import pytest

from synthdet.synthesis import SynthConfig
from synthdet.synthesis.augment import (ObjectAugmenter, geometric_matrix, photometric, warp_object)
from synthdet.synthesis.compose import mask_box

BACKENDS = ["affine", "albumentations"]


def _aug(cfg, image, mask, w, h, seed):
    return ObjectAugmenter(cfg)(image, mask, w, h, np.random.default_rng(seed))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pixel_mask_box_is_mask_extent(backend):
    cfg = SynthConfig(geometric_backend=backend, photometric=False)
    image = np.full((32, 32, 3), 255, np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[10, 20] = 1.0
    seen = 0
    for seed in range(40):
        _, m = _aug(cfg, image, mask, 50, 40, seed)
        assert m.shape == (40, 50) and m.dtype == np.float32
        assert 0 <= m.min() and m.max() <= 1
        box = mask_box(m)
        if box is None:
            continue  # moved out of frame: the stream falls back to the whole box (tested elsewhere)
        seen += 1
        ys, xs = np.nonzero(m > 0)
        assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert box[2] - box[0] <= 10 and box[3] - box[1] <= 10  # stays a small blob after warping
    assert seen > 20


def test_affine_matrix_maps_points_where_the_warp_puts_them():
    cfg = SynthConfig(photometric=False)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        mat = geometric_matrix(64, 64, 96, 80, cfg, rng)
        mask = np.zeros((64, 64), np.float32)
        mask[30:34, 40:44] = 1.0  # 4x4 block centred at (41.5, 31.5)
        _, m = warp_object(np.zeros((64, 64, 3), np.uint8), mask, mat, 96, 80)
        x, y = mat @ np.array([41.5, 31.5, 1.0])
        if not (2 <= x < 94 and 2 <= y < 78):
            continue
        ys, xs = np.nonzero(m > 0.05)
        w = m[ys, xs]
        cx, cy = (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()
        assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("angle", [30.0, 45.0, -45.0])
def test_rotated_square_mask_box_matches_geometry(backend, angle):
    cfg = SynthConfig(geometric_backend=backend, photometric=False, hflip_p=0.0, crop=(0.0, 0.0),
                      scale=(1.0, 1.0), translate=(0.0, 0.0), rotate=(angle, angle), shear=(0.0, 0.0))
    image = np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0  # 32 px square, centred
    _, m = _aug(cfg, image, mask, 64, 64, 0)
    x0, y0, x1, y1 = mask_box(m, threshold=0.5)
    half = 16 * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))
    for got, want in ((x0, 32 - half), (y0, 32 - half), (x1, 32 + half), (y1, 32 + half)):
        assert abs(got - want) <= 1.5
    assert mask_box(m) is not None


def test_geometric_off_is_plain_resize_and_image_matches_mask_support():
    cfg = SynthConfig(photometric=False, geometric=False)
    image = np.full((32, 32, 3), 255, np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[:, :16] = 1.0
    img, m = _aug(cfg, image, mask, 64, 20, 0)
    assert mask_box(m, 0.5) == (0, 0, 32, 20)
    assert mask_box(m) == (0, 0, 33, 20)  # soft half-pixel edge from the linear resize
    assert (img == 255).all()  # frame borders are not darkened


def test_photometric_stays_in_range_and_is_seeded():
    cfg = SynthConfig()
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = photometric(img, cfg, np.random.default_rng(3))
    b = photometric(img, cfg, np.random.default_rng(3))
    c = photometric(img, cfg, np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    flat = SynthConfig(contrast=(1.0, 1.0), noise_sigma=(0.0, 0.0), brightness=(1.0, 1.0), blur_p=0.0)
    assert np.array_equal(photometric(img, flat, np.random.default_rng(0)), img)


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmenter_deterministic_and_picklable(backend):
    cfg = SynthConfig(geometric_backend=backend)
    aug = ObjectAugmenter(cfg)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.ones((32, 32), np.float32)
    a = aug(image, mask, 40, 30, np.random.default_rng(7))
    b = pickle.loads(pickle.dumps(aug))(image, mask, 40, 30, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = aug(image, mask, 40, 30, np.random.default_rng(8))
    assert not np.array_equal(a[1], c[1])


def test_noise_table_is_standard_normal_and_seeded():
    from synthdet.synthesis.augment import _gaussian_noise

    a = _gaussian_noise((64, 64, 3), np.random.default_rng(1))
    b = _gaussian_noise((64, 64, 3), np.random.default_rng(1))
    c = _gaussian_noise((64, 64, 3), np.random.default_rng(2))
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05
