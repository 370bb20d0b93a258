"""Issue 13: placement fitted to real boxes, class weights, per-class presets."""

from __future__ import annotations

import numpy as np
import pytest

from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream, make_loader
from synthdet.synthesis.compose import place_boxes, sample_boxes
from synthdet.synthesis.config import PRESETS, synth_config
from synthdet.synthesis.placement import (box_features, fit_box_prior, fit_box_prior_records, sample_fitted_boxes,
                                          sample_fitted_count)
from synthdet.utils.config import ConfigError

from synth_helpers import make_backgrounds, make_objects

stats = pytest.importorskip("scipy.stats")

W, H = 256, 200  # real images are not square: boxes are normalised per axis


def _real_boxes(seed: int = 0, images: int = 500) -> tuple[list[np.ndarray], list[tuple[int, int]], np.ndarray]:
    """A known box distribution: 1-4 boxes per image, log-normal side, skewed centres."""
    rng = np.random.default_rng(seed)
    boxes, counts = [], rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1], size=images)
    for n in counts:
        side = np.exp(rng.normal(np.log(0.25), 0.35, n)).clip(0.03, 0.7)
        root = np.sqrt(np.exp(rng.normal(0.3, 0.25, n)))
        w, h = (side * root).clip(max=0.95), (side / root).clip(max=0.95)
        cx = w / 2 + rng.beta(2, 5, n) * (1 - w)
        cy = h / 2 + rng.beta(5, 2, n) * (1 - h)
        boxes.append(np.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], 1))
    return boxes, [(W, H)] * images, counts


def test_fitted_boxes_reproduce_the_real_distribution_ks():
    boxes, sizes, counts = _real_boxes()
    prior = fit_box_prior(boxes, sizes)
    real = np.concatenate([box_features(b, W, H) for b in boxes])
    canvas = 320
    drawn = box_features(sample_fitted_boxes(2000, prior, canvas, np.random.default_rng(1)), canvas, canvas)
    for k, name in enumerate(("side", "aspect", "cx", "cy")):
        p = stats.ks_2samp(drawn[:, k], real[:, k]).pvalue
        assert p > 0.01, f"{name}: KS p = {p:.2g}"
    rng = np.random.default_rng(2)
    drawn_counts = np.array([sample_fitted_count(prior, rng) for _ in range(2000)])
    assert stats.ks_2samp(drawn_counts, counts).pvalue > 0.01
    assert set(drawn_counts) <= {1, 2, 3, 4}
    # the test can fail: the paper's uniform placement is far from this distribution
    uniform = box_features(sample_boxes(2000, SynthConfig(canvas_size=canvas), np.random.default_rng(3)),
                           canvas, canvas)
    assert stats.ks_2samp(uniform[:, 0], real[:, 0]).pvalue < 1e-6
    assert stats.ks_2samp(uniform[:, 2], real[:, 2]).pvalue < 1e-6


def test_fitted_boxes_are_inside_the_canvas_and_deterministic():
    boxes, sizes, _ = _real_boxes(images=30)
    prior = fit_box_prior(boxes, sizes)
    a = sample_fitted_boxes((7, 3), prior, 64, np.random.default_rng(5))
    assert a.shape == (7, 3, 4) and a.dtype == np.int64
    assert (a[..., :2] >= 0).all() and (a[..., 2:] <= 64).all() and (a[..., 2:] > a[..., :2]).all()
    assert np.array_equal(a, sample_fitted_boxes((7, 3), prior, 64, np.random.default_rng(5)))
    assert not np.array_equal(a, sample_fitted_boxes((7, 3), prior, 64, np.random.default_rng(6)))


def test_place_boxes_fitted_uses_the_prior_and_keeps_no_overlap():
    boxes, sizes, _ = _real_boxes(images=40)
    prior = fit_box_prior(boxes, sizes)
    cfg = SynthConfig(canvas_size=96, placement="fitted")
    with pytest.raises(ValueError, match="fitted.*real boxes"):
        place_boxes(cfg, np.random.default_rng(0))
    placed = [place_boxes(cfg, np.random.default_rng([0, i]), prior=prior) for i in range(200)]
    assert {len(p) for p in placed} <= {1, 2, 3, 4} and max(len(p) for p in placed) >= 3
    from synthdet.synthesis.compose import any_overlap

    assert not any(any_overlap(p) for p in placed)
    again = [place_boxes(cfg, np.random.default_rng([0, i]), prior=prior) for i in range(200)]
    assert all(np.array_equal(x, y) for x, y in zip(placed, again))


def test_too_few_real_boxes_is_a_clear_error():
    with pytest.raises(ValueError, match=r"train\.json: placement 'fitted' needs at least 5 real boxes, got 3"):
        fit_box_prior([np.array([[0, 0, 10, 10], [5, 5, 20, 30]]), np.array([[1, 1, 4, 4]])], [(32, 32)] * 2,
                      where="train.json")
    # degenerate boxes do not count
    with pytest.raises(ValueError, match="got 4"):
        fit_box_prior([np.array([[0, 0, 10, 10]] * 4 + [[3, 3, 3, 9]])], [(32, 32)])


def test_identical_real_boxes_give_that_box():
    from synthdet.datasets.records import DetectionRecord

    recs = [DetectionRecord("x.jpg", 100, 50, np.array([[10, 5, 40, 20]], np.float32), np.ones(1, np.int64))] * 6
    prior = fit_box_prior_records(recs)
    out = sample_fitted_boxes(50, prior, 200, np.random.default_rng(0))
    assert (out == [20, 20, 80, 80]).all()  # 0.3 x 0.3 of the image at (0.25, 0.25) -> 60 px square
    assert sample_fitted_count(prior, np.random.default_rng(0)) == 1


def test_stream_with_fitted_placement_is_worker_count_invariant(folders):
    objs, bgs = folders
    boxes, sizes, _ = _real_boxes(images=20)
    prior = fit_box_prior(boxes, sizes)
    cfg = SynthConfig(canvas_size=48, object_size=24, placement="fitted")
    src = FolderObjectSource(objs, size=24)
    with pytest.raises(ValueError, match="box_prior"):
        SynthStream(src, BackgroundSource.from_folder(bgs), cfg)
    stream = SynthStream(src, BackgroundSource.from_folder(bgs), cfg, seed=3, length=6, box_prior=prior)

    def collect(workers):
        return [t["boxes"].numpy().tobytes() for _, ts in make_loader(stream, batch_size=2, num_workers=workers)
                for t in ts]

    assert collect(0) == collect(2)


def _one_background(tmp_path):
    return BackgroundSource.from_folder(make_backgrounds(tmp_path / "bg", count=1))


@pytest.mark.parametrize("spec, expected", [
    (None, [1 / 3, 1 / 3, 1 / 3]),
    ("balanced", [1 / 3, 1 / 3, 1 / 3]),
    ("proportional", [2 / 12, 4 / 12, 6 / 12]),
    ({"red": 3.0, "blue": 0}, [0.75, 0.25, 0.0]),
])
def test_class_weights_are_honoured_within_sampling_error(tmp_path, spec, expected):
    root = make_objects(tmp_path / "objs", {"red": (255, 0, 0), "green": (0, 255, 0)}, per_class=2, size=8)
    make_objects(root, {"green": (0, 255, 0)}, per_class=4, size=8)  # green: 4 files (overwrites 2)
    make_objects(root, {"blue": (0, 0, 255)}, per_class=6, size=8)
    src = FolderObjectSource(root, size=8)
    assert src.class_names == ["blue", "green", "red"] and [len(f) for f in src.files] == [6, 4, 2]
    expected = dict(zip(["red", "green", "blue"], expected))
    expected = np.array([expected[c] for c in src.class_names])
    stream = SynthStream(src, _one_background(tmp_path), SynthConfig(class_weights=spec))
    rng = np.random.default_rng(0)
    n = 4000
    labels = np.array([stream.objects.draw(rng).label for _ in range(n)])
    freq = np.bincount(labels - 1, minlength=3) / n
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert (np.abs(freq - expected) <= 4 * sigma + 1e-12).all(), (freq, expected)


def test_class_weights_errors(tmp_path):
    root = make_objects(tmp_path / "objs", {"a": (255, 0, 0), "b": (0, 255, 0)}, per_class=1, size=8)
    src = FolderObjectSource(root, size=8)
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['c'\]; the classes are \['a', 'b'\]"):
        SynthStream(src, _one_background(tmp_path), SynthConfig(class_weights={"c": 1}))
    with pytest.raises(ValueError, match="every class has weight 0"):
        SynthStream(src, _one_background(tmp_path), SynthConfig(class_weights={"a": 0, "b": 0}))
    with pytest.raises(ConfigError, match="class_weights"):
        SynthConfig(class_weights="uniformish")
    with pytest.raises(ConfigError, match="class_weights"):
        SynthConfig(class_weights={"a": -1})


def test_presets_are_the_authors_per_class_settings_and_explicit_keys_win():
    assert synth_config({"preset": "faces"}) == SynthConfig()  # the defaults are the Faces row
    birds = synth_config({"preset": "birds", "canvas_size": 160})
    assert (birds.num_objects, birds.box_side, birds.box_aspect, birds.canvas_size) == ((1, 3), (0.5, 0.9),
                                                                                       (0.5, 2.0), 160)
    cars = synth_config({"preset": "cars", "num_objects": [2, 2]})
    assert (cars.num_objects, cars.box_side, cars.box_aspect) == ((2, 2), (0.5, 1.0), (0.333, 3.0))
    # a variant's preset replaces the base's geometry; the base's other keys stay
    v = synth_config({"preset": "birds", "canvas_size": 96}, {"preset": "faces"})
    assert (v.num_objects, v.box_side, v.canvas_size) == ((1, 10), (0.05, 0.8), 96)
    with pytest.raises(ConfigError, match=r"synthesis\.preset: 'bird' is not one of \['birds', 'cars', 'faces'\]"):
        synth_config({"preset": "bird"})
    assert set(PRESETS) == {"faces", "birds", "cars"}


def test_synth_cli_fitted_placement_and_preset(folders, tmp_path):
    import json

    from synthdet.cli import main
    from synthdet.datasets.coco import write_coco
    from synthdet.datasets.records import DetectionRecord

    objs, bgs = folders
    boxes, sizes, _ = _real_boxes(images=8)
    recs = [DetectionRecord(f"{i}.jpg", w, h, b, np.ones(len(b), np.int64), image_id=i + 1)
            for i, (b, (w, h)) in enumerate(zip(boxes, sizes))]
    write_coco(tmp_path / "real.json", recs, {1: "thing"})
    common = ["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--count", "4", "--segmenter", "none",
              "--no-progress", "--set", "canvas_size=64"]
    assert main(common + ["--out", str(tmp_path / "a"), "--placement", "fitted",
                          "--real-annotations", str(tmp_path / "real.json")]) == 0
    assert len(json.loads((tmp_path / "a" / "annotations.json").read_text())["images"]) == 4
    assert main(common + ["--out", str(tmp_path / "b"), "--placement", "fitted"]) == 1  # no real boxes given
    assert main(common + ["--out", str(tmp_path / "c"), "--preset", "birds"]) == 0
    anns = json.loads((tmp_path / "c" / "annotations.json").read_text())["annotations"]
    assert anns and all(a["bbox"][2] * a["bbox"][3] >= 0.9 * 32 ** 2 for a in anns)  # birds: side >= 0.5 x 64
