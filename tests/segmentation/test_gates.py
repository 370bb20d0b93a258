"""Mask quality gates on hand-made masks, fallback chains, and rejected masks in the cache and CLI."""

from __future__ import annotations

import numpy as np
import pytest

from synthdet.segmentation import MaskCache, get_segmenter
from synthdet.segmentation.gates import GatedSegmenter, MaskGates
from synthdet.utils.image import BadImageError


def _disc(s: int = 40, r: float = 8, cy: float = 20, cx: float = 20) -> np.ndarray:
    yy, xx = np.mgrid[:s, :s]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.float32)


def test_each_gate_on_hand_made_masks():
    g = MaskGates()
    assert g.check(_disc()) is None                                   # ~13% of the frame, centred
    assert g.check(np.zeros((40, 40), np.float32)) == "area<min"      # collapsed to nothing
    assert g.check(_disc(r=1.5)) == "area<min"
    assert g.check(np.ones((40, 40), np.float32)) == "area>max"       # the whole frame
    side = np.zeros((40, 40), np.float32)
    side[:, :12] = 1                                                  # 30% of the frame, hugs a side
    assert g.check(side) == "border"
    many = sum(_disc(r=3.5, cy=y, cx=x) for y in (10, 30) for x in (10, 30))
    assert g.check(many) == "components"                              # four equal blobs
    frag = _disc(r=6) + _disc(r=5, cy=32, cx=32)                      # two blobs, the largest 59%
    assert g.check(frag) == "fragmented"
    assert MaskGates(min_largest=0.5).check(frag) is None
    soft = _disc() * 0.4                                              # below 0.5: no foreground
    assert g.check(soft) == "area<min"


def test_orient_flips_a_two_region_mask_whose_foreground_is_the_background():
    g = MaskGates(orient=True)
    inverted = 1.0 - _disc()
    assert np.array_equal(g.orient_mask(inverted), _disc())
    assert np.array_equal(g.orient_mask(_disc()), _disc())


def test_gates_spec_and_bad_values():
    assert MaskGates.from_spec(None) is None and MaskGates.from_spec(False) is None
    assert MaskGates.from_spec(True) == MaskGates()
    assert MaskGates.from_spec({"max_border": 0.5}).max_border == 0.5
    with pytest.raises(ValueError):
        MaskGates(min_area=0.5, max_area=0.1)
    with pytest.raises(ValueError):
        MaskGates.from_spec({"no_such_gate": 1})


class _Fixed:
    """A segmenter returning a fixed mask for every image."""

    def __init__(self, name: str, mask: np.ndarray):
        self.name, self.mask = name, mask

    def cache_key(self) -> str:
        return f"fixed-{self.name}"

    def segment(self, images, paths=None):
        return [self.mask.copy() for _ in images]


def test_chain_falls_back_then_rejects_and_counts():
    images = [np.zeros((40, 40, 3), np.uint8)] * 3
    chain = GatedSegmenter([_Fixed("bad", np.ones((40, 40), np.float32)), _Fixed("good", _disc())], MaskGates())
    out = chain.segment_checked(images)
    assert [note for _, note in out] == ["good"] * 3
    assert chain.counts["accepted"] == {"good": 3} and chain.counts["rejected"] == 0
    none_pass = GatedSegmenter([_Fixed("bad", np.ones((40, 40), np.float32))], MaskGates())
    masks = none_pass.segment_checked(images[:2])
    assert all(m is None for m, _ in masks) and none_pass.counts["rejected"] == 2
    assert "rejected 2 (area>max 2)" in none_pass.summary()
    with pytest.raises(BadImageError, match="area>max"):
        none_pass.segment(images[:1])


def test_get_segmenter_builds_chains_and_gated_segmenters():
    chain = get_segmenter("ellipse,grabcut", ellipse={"axes": 0.5})
    assert isinstance(chain, GatedSegmenter) and chain.name == "ellipse,grabcut"
    assert chain.members[0].axes == 0.5 and chain.gates == MaskGates()
    single = get_segmenter("grabcut", gates={"max_border": 0.3})
    assert isinstance(single, GatedSegmenter) and single.gates.max_border == 0.3
    assert single.cache_key() != get_segmenter("grabcut", gates=True).cache_key()
    with pytest.raises(ValueError, match="name no member"):
        get_segmenter("ellipse,grabcut", axes=0.5)


def test_mask_cache_stores_rejections(image_dir, tmp_path):
    paths = sorted(image_dir.iterdir())
    seg = get_segmenter("none", gates=True)  # whole-frame masks: every one fails "area>max"
    cache = MaskCache(tmp_path / "cache", seg)
    counts = cache.prepare(paths, progress=False)
    assert counts["rejected"] == len(paths) and counts["computed"] == 0
    assert len(list(cache.root.glob("*.rejected"))) == len(paths)
    with pytest.raises(BadImageError, match="rejected"):
        cache.get(paths[0])
    assert MaskCache(tmp_path / "cache", seg).prepare(paths, progress=False)["rejected"] == len(paths)


def test_cli_apply_prints_gate_counts(image_dir, tmp_path, capsys):
    from synthdet.cli import main

    out = tmp_path / "masks"
    assert main(["segment", "apply", "--segmenter", "none,ellipse", "--images", str(image_dir),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"accepted {len(list(image_dir.iterdir()))} (ellipse" in text and "rejected 0" in text


def test_cli_synth_reports_mask_counts(image_dir, tmp_path, capsys):
    from synthdet.cli import main

    bgs = tmp_path / "bgs"
    rng = np.random.default_rng(0)
    for i in range(2):
        from synthdet.utils.image import write_image

        write_image(bgs / f"b{i}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    rc = main(["synth", "--objects", str(image_dir), "--backgrounds", str(bgs), "--out", str(tmp_path / "out"),
               "--count", "2", "--format", "coco", "--segmenter", "none,ellipse", "--cache-dir",
               str(tmp_path / "masks"), "--set", "canvas_size=48", "--set", "object_size=16", "--no-progress"])
    assert rc == 0
    n = len(list(image_dir.iterdir()))
    assert f"object masks (none,ellipse): {n} of {n} images, 0 rejected by the quality gates" in capsys.readouterr().out
    assert list((tmp_path / "masks").glob("*/counts.json"))


def test_cli_eval_with_gates_reports_rejections(image_dir, tmp_path, capsys):
    from synthdet.cli import main
    from synthdet.utils.image import write_image

    true = tmp_path / "true"
    for p in sorted(image_dir.iterdir()):
        write_image(true / f"{p.stem}.png", np.full((8, 8), 255, np.uint8))
    assert main(["segment", "eval", "--segmenter", "none", "--gates", "max_area=0.9", "--images", str(image_dir),
                 "--true-masks", str(true)]) == 0
    out = capsys.readouterr().out
    n = len(list(image_dir.iterdir()))
    assert "mean IoU 1.000" in out and f"rejected {n} (area>max {n})" in out
    assert main(["segment", "eval", "--segmenter", "none", "--gates", "max_area", "--images", str(image_dir),
                 "--true-masks", str(true)]) != 0
