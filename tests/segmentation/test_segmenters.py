from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthdet.segmentation import MaskCache, Segmenter, get_segmenter, list_segmenters
from synthdet.segmentation.grabcut import grabcut_mask
from synthdet.segmentation.metrics import evaluate_segmenter, label_quality, mask_iou, pixel_accuracy
from synthdet.segmentation.redo import RedoConfig
from synthdet.segmentation.redo_train import fit_redo
from synthdet.utils.image import BadImageError, read_image, write_image

TINY = dict(resolution=32, z_dim=8, mask_net="pixels", prior="none", freeze_mask_steps=0, mask_channels=8,
            mask_res_blocks=1, gen_channels=8, disc_channels=8,
            enc_channels=8, batch_size=4, iterations=1, checkpoint_every=1, preview_every=1, device="cpu")


@pytest.fixture(scope="session")
def redo_checkpoint(image_dir, tmp_path_factory) -> Path:
    import torch

    out = tmp_path_factory.mktemp("redo_ckpt")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the per-test one-thread fixture
    try:
        return fit_redo(image_dir, RedoConfig(**TINY), out, progress=False)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mask_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user_masks")
    for i in range(8):
        write_image(root / f"im{i}.png", np.full((10, 12), 200, np.uint8))
    return root


def _build(name: str, redo_checkpoint: Path, mask_dir: Path, image_dir: Path, tmp_path: Path) -> Segmenter:
    kwargs = {"redo": {"checkpoint": redo_checkpoint}, "file": {"mask_dir": mask_dir},
              "cosegment": {"state_dir": tmp_path, "input_size": 64}}.get(name, {})
    seg = get_segmenter(name, **kwargs)
    if hasattr(seg, "fit"):  # segmenters that fit to the class's images (cosegment)
        seg.fit(sorted(image_dir.iterdir()))
    return seg


@pytest.mark.parametrize("name", list_segmenters())
def test_segmenter_contract(name, redo_checkpoint, mask_dir, image_dir, tmp_path):
    seg = _build(name, redo_checkpoint, mask_dir, image_dir, tmp_path)
    assert isinstance(seg, Segmenter) and seg.name == name
    assert isinstance(seg.cache_key(), str) and seg.cache_key()
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        rng.integers(0, 256, (64, 20, 3), dtype=np.uint8),
        rng.integers(0, 256, (9, 9), dtype=np.uint8),            # grey
        rng.integers(0, 256, (30, 30, 4), dtype=np.uint8),       # RGBA
        rng.random((16, 24, 3)).astype(np.float32),              # float
    ]
    paths = [Path(f"im{i}.png") for i in range(len(images))]
    masks = seg.segment(images, paths=paths)
    assert len(masks) == len(images)
    for im, m in zip(images, masks):
        assert m.shape == im.shape[:2]
        assert m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
    assert seg.segment([], paths=[]) == []


def test_unknown_segmenter_and_bad_settings():
    with pytest.raises(ValueError, match="unknown segmenter"):
        get_segmenter("nope")
    with pytest.raises(ValueError, match="grabcut"):
        get_segmenter("grabcut", bogus=1)


def test_grabcut_finds_bright_disc_on_dark_noisy_background():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(40, 20, (128, 128, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:128, :128]
    disc = (yy - 60) ** 2 + (xx - 68) ** 2 <= 30**2
    img[disc] = np.clip(rng.normal(220, 15, (int(disc.sum()), 3)), 0, 255).astype(np.uint8)
    m = get_segmenter("grabcut").segment([img])[0]
    assert mask_iou(m, disc.astype(np.float32)) > 0.8
    # A big image is downscaled for speed and the mask comes back at full size.
    big = np.kron(img, np.ones((4, 4, 1), np.uint8))
    mb = grabcut_mask(big, max_side=128)
    assert mb.shape == big.shape[:2]
    assert mask_iou(mb, np.kron(disc, np.ones((4, 4), bool)).astype(np.float32)) > 0.8


def test_simple_segmenters():
    img = np.zeros((20, 40, 3), np.uint8)
    assert (get_segmenter("none").segment([img])[0] == 1).all()
    e = get_segmenter("ellipse", axes=0.5).segment([img])[0]
    assert e[10, 20] == 1 and e[0, 0] == 0 and e[10, 5] == 0
    assert 0.1 < e.mean() < 0.3  # pi/4 * 0.25 ~ 0.196
    assert get_segmenter("ellipse", axes=0.5).cache_key() != get_segmenter("ellipse").cache_key()


def test_file_segmenter(mask_dir, tmp_path):
    seg = get_segmenter("file", mask_dir=mask_dir)
    m = seg.segment([np.zeros((30, 36, 3), np.uint8)], paths=[Path("x/im3.jpg")])[0]
    assert m.shape == (30, 36) and np.allclose(m, 200 / 255, atol=1e-3)
    with pytest.raises(BadImageError, match="no mask"):
        seg.segment([np.zeros((5, 5, 3), np.uint8)], paths=[Path("missing.jpg")])
    with pytest.raises(ValueError, match="paths"):
        seg.segment([np.zeros((5, 5, 3), np.uint8)])
    with pytest.raises(FileNotFoundError):
        get_segmenter("file", mask_dir=tmp_path / "nowhere")


class _Counting:
    """Wraps a segmenter and counts the images it segments."""

    def __init__(self, inner: Segmenter):
        self.inner, self.name, self.calls = inner, inner.name, 0

    def cache_key(self) -> str:
        return self.inner.cache_key()

    def segment(self, images, paths=None):
        self.calls += len(images)
        return self.inner.segment(images, paths=paths)


def test_mask_cache_reads_back_and_invalidates(image_dir, tmp_path):
    paths = sorted(image_dir.iterdir())
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    seg = _Counting(get_segmenter("grabcut"))
    cache = MaskCache(tmp_path / "cache", seg)
    counts = cache.prepare(paths + [bad], batch_size=3, progress=False)
    assert counts == {"total": 9, "cached": 0, "computed": 8, "skipped": 1, "rejected": 0}
    assert seg.calls == 8
    again = cache.prepare(paths, progress=False)
    assert again["cached"] == 8 and again["computed"] == 0 and seg.calls == 8
    m = cache.get(paths[0])
    assert seg.calls == 8  # read from disk, not recomputed
    direct = seg.inner.segment([read_image(paths[0])])[0]
    assert m.dtype == np.float32 and m.shape == direct.shape
    assert np.abs(m - direct).max() <= 0.5 / 255 + 1e-6  # 8-bit storage
    stored = list((tmp_path / "cache" / seg.cache_key()).glob("*.png"))
    assert len(stored) == 8

    # Other settings -> another key -> masks recomputed.
    seg2 = _Counting(get_segmenter("grabcut", rect=0.6))
    assert seg2.cache_key() != seg.cache_key()
    cache2 = MaskCache(tmp_path / "cache", seg2)
    cache2.get(paths[0])
    assert seg2.calls == 1
    # Changed file content -> another digest -> recomputed.
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    cache.get(copy)
    assert seg.calls == 8
    write_image(copy, np.zeros((20, 20, 3), np.uint8))
    assert cache.get(copy).shape == (20, 20)
    assert seg.calls == 9
    with pytest.raises(BadImageError):
        cache.get(bad)


def test_mask_cache_key_follows_redo_weights(redo_checkpoint, tmp_path, image_dir):
    a = get_segmenter("redo", checkpoint=redo_checkpoint)
    other = tmp_path / "other"
    fit_redo(image_dir, RedoConfig(**{**TINY, "seed": 5}), other, progress=False)
    b = get_segmenter("redo", checkpoint=other)
    assert a.cache_key() != b.cache_key()
    assert a.cache_key() == get_segmenter("redo", checkpoint=redo_checkpoint).cache_key()


def test_metrics_and_evaluate(image_dir, tmp_path):
    p = np.array([[1, 1], [0, 0]], np.float32)
    t = np.array([[1, 0], [0, 0]], np.float32)
    assert mask_iou(p, t) == 0.5 and pixel_accuracy(p, t) == 0.75
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    # a 4x2 object; the mask covers its left 2x2 half plus one stray pixel 2 columns away
    true = np.zeros((6, 8), np.float32)
    true[1:3, 1:5] = 1
    pred = np.zeros_like(true)
    pred[1:3, 1:3] = 1
    pred[4, 6] = 1
    precision, recall, box = label_quality(pred, true)
    assert precision == 4 / 5 and recall == 4 / 8
    assert box == pytest.approx(8 / (4 * 6 + 8 - 8))  # tight boxes [1,1,7,5] and [1,1,5,3]: 8 / 24
    assert label_quality(np.zeros_like(true), true) == (0.0, 0.0, 0.0)
    true_dir = tmp_path / "true"
    for f in sorted(image_dir.iterdir())[:4]:
        write_image(true_dir / f"{f.stem}.png", np.full((8, 8), 255, np.uint8))
    r = evaluate_segmenter(get_segmenter("none"), image_dir, true_dir, progress=False)
    assert r["images"] == 4 and r["iou"] == 1.0 and r["accuracy"] == 1.0 and r["ms_per_image"] >= 0
    assert r["precision"] == r["recall"] == r["box_iou"] == r["box_iou_50"] == 1.0


def test_cli_apply_and_eval(image_dir, tmp_path, capsys):
    from synthdet.cli import main

    out = tmp_path / "masks"
    assert main(["segment", "apply", "--segmenter", "ellipse", "--images", str(image_dir), "--out", str(out)]) == 0
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == sorted(p.stem for p in image_dir.iterdir())
    assert main(["segment", "eval", "--segmenter", "ellipse", "--images", str(image_dir),
                 "--true-masks", str(out)]) == 0
    assert "mean IoU 1.000" in capsys.readouterr().out
