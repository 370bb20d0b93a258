"""Blending modes: pure functions, pixels changed only inside the box, labels unchanged."""

import numpy as np
import pytest

from synthdet.synthesis import SynthConfig
from synthdet.synthesis.blending import draw_mode, feather, motion_blur, motion_kernel, paste
from synthdet.utils.config import ConfigError, from_dict

CFG = SynthConfig(canvas_size=48)


def _inputs():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:16, :20]
    obj = np.stack([xx * 12, yy * 15, np.full_like(xx, 200)], -1).astype(np.uint8)
    mask = np.zeros((16, 20), np.float32)
    mask[3:13, 4:16] = 1.0
    return canvas, obj, mask


@pytest.mark.parametrize("mode", ["alpha", "gaussian", "poisson", "motion"])
def test_modes_are_pure_and_stay_inside_the_box(mode):
    canvas, obj, mask = _inputs()
    outs = []
    for _ in range(2):
        c = canvas.copy()
        paste(c, obj, mask, 0, 30, mode, CFG, np.random.default_rng(5))  # touches the canvas border
        outs.append(c)
    assert np.array_equal(outs[0], outs[1])
    changed = (outs[0] != canvas).any(axis=2)
    inside = np.zeros_like(changed)
    inside[30:46, 0:20] = True
    assert changed.any() and not (changed & ~inside).any()
    if mode in ("alpha", "poisson"):  # hard mask: nothing outside it changes
        assert not changed[30:46, 0:20][mask == 0].any()


def test_alpha_is_exact_and_gaussian_softens_the_edge():
    canvas, obj, mask = _inputs()
    c = canvas.copy()
    paste(c, obj, mask, 10, 10, "alpha", CFG, np.random.default_rng(0))
    assert np.array_equal(c[13:23, 14:26], obj[3:13, 4:16])
    soft = feather(mask, 2.0)
    assert soft.max() <= 1.0 and 0 < soft[3, 4] < 1 and soft[8, 10] > 0.95 and soft[0, 0] < soft[3, 4]


def test_motion_kernel_and_blur():
    k = motion_kernel(7, 0.0)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0) and (k[3] > 0).sum() == 7
    assert (motion_kernel(6, 90.0)[:, 3] > 0).sum() == 6
    _, obj, mask = _inputs()
    img, msk = motion_blur(obj, mask, 7, 0.0)
    assert img.shape == obj.shape and msk.shape == mask.shape
    assert msk[8, 1] > 0 and msk[8, 1] < 1 and msk[0, 10] == 0  # spread along x only


def test_poisson_adapts_colours_to_the_background_and_keeps_detail_in_place():
    canvas = np.full((48, 48, 3), 30, np.uint8)
    obj = np.full((24, 24, 3), 220, np.uint8)
    obj[10:14, 10:14] = 255  # inner detail
    mask = np.zeros((24, 24), np.float32)
    mask[4:20, 4:20] = 1
    paste(canvas, obj, mask, 10, 12, "poisson", CFG, np.random.default_rng(0))
    assert canvas.max() < 120  # the bright flat object takes the dark background's level
    changed = np.argwhere((canvas != 30).any(axis=2))
    assert changed.min(axis=0).tolist() == [12 + 10, 10 + 10] and changed.max(axis=0).tolist() == [12 + 13, 10 + 13]


def test_blend_config_and_draw():
    assert SynthConfig(blend=["alpha", "motion"]).blend == ("alpha", "motion")
    assert from_dict(SynthConfig, {"blend": ["poisson", "gaussian"]}).blend == ("poisson", "gaussian")
    with pytest.raises(ConfigError, match="blend"):
        SynthConfig(blend="smudge")
    with pytest.raises(ConfigError, match="blend"):
        SynthConfig(blend=[])
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert draw_mode(SynthConfig(blend="poisson"), rng) == "poisson" and rng.bit_generator.state == state
    drawn = {draw_mode(SynthConfig(blend=("alpha", "motion", "poisson")), rng) for _ in range(60)}
    assert drawn == {"alpha", "motion", "poisson"}


@pytest.mark.parametrize("w,h", [(1, 1), (2, 6), (6, 2), (3, 3)])
def test_poisson_handles_masks_a_few_pixels_wide(w, h):
    # cv2.seamlessClone asserts on regions under 3 px a side (a thin sliver left by GrabCut on a
    # small object): those are alpha-blended, the rest cloned; pixels outside the mask never change
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    before = canvas.copy()
    obj = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
    mask = np.zeros((12, 12), np.float32)
    mask[4:4 + h, 4:4 + w] = 1.0
    paste(canvas, obj, mask, 10, 10, "poisson", SynthConfig(blend="poisson"), rng)
    inside = np.zeros((40, 40), bool)
    inside[14:14 + h, 14:14 + w] = True
    assert np.array_equal(canvas[~inside], before[~inside])
    if min(w, h) < 3:
        assert np.array_equal(canvas[inside], obj[4:4 + h, 4:4 + w].reshape(-1, 3))
