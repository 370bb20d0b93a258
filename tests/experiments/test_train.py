"""``synthdet train``: end to end through COCO, YOLO and VOC inputs, the held-out validation split,
own-image backgrounds (no labelled pixel), class-name matching, sizes / geometry rules, --minutes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from synthdet.cli import main
from synthdet.datasets.coco import read_coco, write_coco
from synthdet.datasets.records import DetectionRecord
from synthdet.experiments import train_run
from synthdet.experiments.demo import demo_config
from synthdet.experiments.estimate import Estimate
from synthdet.experiments.train_inputs import hold_out, read_inputs
from synthdet.experiments.train_settings import FIT_MIN_BOXES, choose_sizes, demo_sizes, train_config, user_settings
from synthdet.sources.backgrounds import BackgroundSource
from synthdet.sources.own_backgrounds import box_region, object_background, scene_backgrounds
from synthdet.utils.errors import UserError
from synthdet.utils.image import write_image

from test_experiments import write_tiny_data

# the smallest detector settings: a 64-channel FPN (GroupNorm(32) needs 2 channels per group at
# 64 px, where P7 is 1 x 1), one head conv, 64 px, random weights, 2 samples per batch
TINY = {
    "detector_options": {"fcos_efficientnet_lite0": {"fpn_channels": 64, "head_convs": 1}},
    "image_size": 64, "weights": "none", "device": "cpu", "eval_batch_size": 2,
    "pretrain": {"batch_size": 2, "cpu_shards": 1},
    "finetune": {"batch_size": 2, "cpu_shards": 1, "min_epochs": 0},
}


@pytest.fixture()
def tiny(tmp_path):
    root = write_tiny_data(tmp_path / "data")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return root, tmp_path / "tiny.yaml"


def _records(root: Path, split: str):
    return read_coco(root / "real" / f"{split}.json")[0]


def _as_yolo(root: Path) -> Path:
    """The tiny COCO splits as a YOLO dataset with images/{train,val,test} and one data.yaml."""
    from synthdet.datasets.yolo import write_yolo

    yolo, recs = root / "yolo", []
    for split in ("train", "val", "test"):
        for r in _records(root, split):
            dest = yolo / "images" / split / Path(r.image_path).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r.image_path, dest)
            recs.append(r.replace(image_path=str(dest)))
    write_yolo(yolo, recs, ["blob"])
    (yolo / "data.yaml").write_text(yaml.safe_dump({"names": {0: "blob"}, "train": "images/train",
                                                    "val": "images/val", "test": "images/test"}))
    return yolo / "data.yaml"


def _as_voc(root: Path) -> Path:
    from synthdet.datasets.voc import write_voc

    voc = root / "VOC"
    for split in ("train", "val", "test"):
        recs = []
        for r in _records(root, split):
            dest = voc / "JPEGImages" / f"{split}_{Path(r.image_path).name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r.image_path, dest)
            recs.append(r.replace(image_path=str(dest)))
        write_voc(voc, recs, ["blob"], image_set=split)
    return voc


def _train(args, capsys) -> tuple[int, str, str]:
    rc = main(["train", *map(str, args), "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_train_end_to_end(fmt, tiny, tmp_path, capsys):
    from synthdet.models import load_detector
    from synthdet.training.checkpoint import load_checkpoint

    root, cfg = tiny
    if fmt == "coco":  # no --val: a part of the training images is held out
        data = ["--train", root / "real/train.json", "--test", root / "real/test.json"]
    elif fmt == "yolo":  # the data.yaml's own val and test splits
        data = ["--train", _as_yolo(root)]
    else:
        voc = _as_voc(root)  # and the baseline: without pretraining, and pretrained on a fifth of the images
        data = ["--train", voc, "--val", voc, "--test", voc, "--compare-baseline"]
    out = tmp_path / "out"
    args = ["--objects", root / "objects", *data, "--out", out, "--config", cfg, "--iterations", 2]
    rc, printed, err = _train(args, capsys)
    assert rc == 0, err
    assert "AP@0.5 on the test images" in printed
    assert f"synthdet predict --checkpoint {out / 'best.pt'}" in printed and "synthdet export" in printed
    model = load_detector(out / "best.pt")
    assert model.synthdet_meta["num_classes"] == 1 and model.synthdet_meta["image_size"] == 64
    assert load_checkpoint(out / "best.pt")["config"]["class_names"] == {1: "blob"}
    report = (out / "report.md").read_text()
    assert "## Object masks and quality gates" in report and "report/predictions.png" in report
    for fig in ("synthetic_samples.png", "val_curves.png", "predictions.png"):
        assert (out / "report" / fig).is_file()
    val, train = (read_coco(out / "data" / f"{s}.json")[0] for s in ("val", "train"))
    assert len(val) == (1 if fmt == "coco" else 2) and len(train) == (3 if fmt == "coco" else 4)
    if fmt == "voc":
        assert "without pretraining (the same detector, images and finetuning budget)" in printed
        assert "Label savings: " in printed and "Label savings: " in report
        runs = sorted(p.name for p in (out / "experiment" / "runs").iterdir())
        assert [r.split("__")[2:4] for r in runs] == [["no_pretraining", "nall"], ["pretrained", "n1"],
                                                      ["pretrained", "nall"]]
    if fmt != "coco":
        return
    assert json.loads((out / "train.json").read_text())["held_out"] == 1
    metrics = out / "experiment" / "runs" / "data_efficiency__fcos_efficientnet_lite0__pretrained__nall__r0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    rc, again, _ = _train(args, capsys)  # a rerun finds the run finished and reports it again
    assert rc == 0 and metrics.stat().st_mtime_ns == stamp
    assert again.splitlines()[0] == printed.splitlines()[0]
    rc, _, err = _train([*args[:-2], "--iterations", 3, "--seed", 1], capsys)
    assert rc == 1 and "holds a synthdet train run of other inputs (seed: 0 -> 1)" in err


def _rec(i, boxes):
    return DetectionRecord(f"/x/{i}.jpg", 100, 80, np.asarray(boxes, np.float32).reshape(-1, 4),
                           np.ones(len(boxes), np.int64), image_id=i + 1)


def test_held_out_validation_is_seeded_and_disjoint():
    recs = [_rec(i, [[1, 1, 20, 20]] if i % 5 else []) for i in range(30)]  # 24 with boxes, 6 without
    train, val = hold_out(recs, seed=0)
    assert len(val) == round(0.2 * 24) and len(train) + len(val) == 30
    assert not {r.image_path for r in train} & {r.image_path for r in val}
    assert all(len(r.boxes) for r in val)  # images without boxes stay in training
    again = hold_out(recs, seed=0)[1]
    assert [r.image_path for r in again] == [r.image_path for r in val]
    others = {tuple(r.image_path for r in hold_out(recs, seed=s)[1]) for s in range(1, 6)}
    assert any(o != tuple(r.image_path for r in val) for o in others)
    assert len(hold_out([_rec(i, [[1, 1, 5, 5]]) for i in range(2)], seed=3)[1]) == 1
    with pytest.raises(UserError, match="at least 2 labelled images"):
        hold_out([_rec(0, [[1, 1, 5, 5]]), _rec(1, [])], seed=0)


def test_held_out_split_is_disjoint_from_the_training_data_read(tiny):
    root, _ = tiny
    inputs = read_inputs(root / "objects", root / "real/train.json", seed=2)
    assert inputs.held_out == len(inputs.val.records) == 1
    names = {r.image_path for r in inputs.train.records}
    assert len(names) == 3 and not names & {r.image_path for r in inputs.val.records}


def _scene(rng, size=(700, 900)):
    return (rng.random((*size, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(90, 120), (700, 900)])  # the second is downscaled before filling
def test_backgrounds_never_contain_labelled_pixels(size):
    rng = np.random.default_rng(size[0])
    for trial in range(6):
        image = _scene(rng, size)
        h, w = size
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            boxes.append([x0, y0, min(w, x0 + rng.uniform(3, w / 3)), min(h, y0 + rng.uniform(3, h / 3))])
        boxes = np.array(boxes, np.float32)
        other = image.copy()  # the same image but for the pixels inside the boxes
        for x0, y0, x1, y1 in boxes:
            c0, r0, c1, r1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
            other[r0:r1, c0:c1] = rng.integers(0, 256, (r1 - r0, c1 - c0, 3), dtype=np.uint8)
        a, b = scene_backgrounds(image, boxes), scene_backgrounds(other, boxes)
        assert a.keys() == b.keys() and "filled" in a
        for kind in a:
            assert np.array_equal(a[kind], b[kind]), (trial, kind)
    assert set(scene_backgrounds(image, np.zeros((0, 4)))) == {"crop"}  # no box: the whole image


def test_box_free_crop_misses_every_box():
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:30, 5:25] = 255  # the box's pixels are white, the rest black
    bgs = scene_backgrounds(image, np.array([[5, 10, 25, 30]], np.float32), min_crop=0.1)
    assert bgs["crop"].shape[0] >= 0.1 * 60 and not bgs["crop"].any()
    assert box_region(60, 80, np.array([[5, 10, 25, 30]]))[10:30, 5:25].all()


def test_object_background_ignores_the_pixels_under_the_mask():
    rng = np.random.default_rng(0)
    image = _scene(rng, (64, 64))
    mask = np.zeros((64, 64), np.float32)
    mask[20:44, 16:48] = 1.0
    other = image.copy()
    other[20:44, 16:48] = 0
    a, b = object_background(image, mask), object_background(other, mask)
    assert a is not None and np.array_equal(a, b)
    assert object_background(image, np.zeros_like(mask)) is None  # nothing found to remove
    assert object_background(image, np.ones_like(mask)) is None  # nothing left around it


def test_background_groups_are_drawn_equally_often(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        write_image(p, np.full((8, 8, 3), i, np.uint8))
        paths.append(p)
    src = BackgroundSource.from_groups({"photos": paths[:1], "own": paths[1:]})
    rng = np.random.default_rng(0)
    first = np.mean([src.draw(rng, 8)[0, 0, 0] == 0 for _ in range(600)])
    assert 0.43 < first < 0.57  # one photo against four own backgrounds, half the draws each


def _subfolder_objects(root: Path, names) -> Path:
    objects = root / "classes"
    for name in names:
        for p in sorted((root / "objects").glob("*.png"))[:2]:
            (objects / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, objects / name / p.name)
    return objects


def test_class_name_mismatch_is_one_clear_error(tiny, tmp_path, capsys):
    root, cfg = tiny
    objects = _subfolder_objects(root, ["cat", "dog"])
    rc, _, err = _train(["--objects", objects, "--train", root / "real/train.json", "--out", tmp_path / "o",
                         "--config", cfg, "--iterations", 2], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "['cat', 'dog']" in err and "['blob']" in err and "class names differ" in err
    assert not (tmp_path / "o" / "experiment").exists()  # refused before any work
    ok = read_inputs(root / "objects", root / "real/train.json")
    assert ok.class_names == ["blob"] and ok.flat_objects  # a flat folder takes the data's only category


def test_class_labels_follow_the_object_folders(tiny, tmp_path):
    root, _ = tiny
    recs = _records(root, "train")
    two = [r.replace(labels=np.array([1 + i % 2] * len(r.labels))) for i, r in enumerate(recs)]
    write_coco(tmp_path / "two.json", two, {1: "zebra", 2: "ant"})  # ids in another order than the names
    inputs = read_inputs(_subfolder_objects(root, ["ant", "zebra"]), tmp_path / "two.json")
    assert inputs.class_names == ["ant", "zebra"]
    by_path = {r.image_path: r for r in [*inputs.train.records, *inputs.val.records]}
    for i, r in enumerate(recs):
        assert set(by_path[r.image_path].labels.tolist()) == ({2} if i % 2 == 0 else {1})  # zebra -> 2


def test_sizes_follow_the_real_images_at_the_demo_scale():
    from synthdet.datasets.birds.build import BirdsConfig

    demo = demo_config()
    scene = BirdsConfig().scene_size

    def sizes(side):
        return choose_sizes([DetectionRecord("x", side, side * 3 // 4)], demo)[:2]

    assert sizes(scene) == demo_sizes(demo)  # images like the demo's: the demo's sizes
    detect, train = demo_sizes(demo)
    assert sizes(scene // 4)[0] == max(64, 32 * -(-detect // 4 // 32)) and sizes(scene // 4)[1] <= sizes(scene // 4)[0]
    assert sizes(8 * scene) == (2 * detect, train)  # capped at twice the demo's detection side


def test_settings_rules_and_overrides():
    few = [_rec(i, [[1, 1, 30, 30]] * 2) for i in range(10)]
    many = [_rec(i, [[1, 1, 30, 30]] * 2) for i in range(FIT_MIN_BOXES // 2)]
    spec = {"objects": "o", "backgrounds": "b", "real_train": "t", "real_val": "v", "real_test": "t"}
    cfg, ch = train_config(few, spec, user_settings(None, [("pretrain.cpu_shards", 1)]), 40, 3, "cpu", True)
    demo = demo_config()
    assert cfg.pretrain["iterations"] == 40 and cfg.pretrain["cpu_shards"] == 1 and cfg.seed == 3
    assert cfg.finetune["iterations"] == round(40 * demo.finetune["iterations"] / demo.pretrain["iterations"])
    assert not ch.fitted and "placement" not in cfg.synthesis  # the demo's generic geometry
    assert cfg.study.real_sizes == (2, -1)  # the baseline, and the label savings at a fifth
    assert cfg.finetune["recipe"] == demo.finetune["recipe"] and cfg.detectors == demo.detectors
    cfg, ch = train_config(many, spec, {}, None, 0, "cpu", False)
    assert ch.fitted and cfg.synthesis["placement"] == "fitted" and cfg.study.real_sizes == (-1,)
    assert cfg.pretrain["iterations"] == demo.pretrain["iterations"]
    for bad in ("data.objects", "study.repeats", "seed"):
        with pytest.raises(UserError, match="cannot be set here"):
            user_settings(None, [(bad, 1)])


def test_size_by_minutes_takes_the_most_iterations_that_fit(monkeypatch):
    class Fake:
        def __init__(self, n):
            self.n = n

    def fake_estimate(runner, timings=None):
        return Estimate(runner.n + 25, 10, 0.5, 0.1)  # probe: 0.5 s per step, 0.1 s per image

    monkeypatch.setattr("synthdet.experiments.estimate.estimate", fake_estimate)
    lines = []
    import time

    # budget 60 s + 1.2 s not yet spent: (95 + 25) * 0.5 + 10 * 0.1 = 61 s fits, 96 does not
    n = train_run._size_by_minutes(1.0, time.perf_counter() + 1.2, Fake, lines.append)
    assert n == 95 and "`--iterations 95`" in lines[0]
    assert train_run._size_by_minutes(0.01, time.perf_counter(), Fake, lines.append) == train_run.MIN_ITERATIONS


def test_minutes_prints_iterations_that_reproduce_the_run(tiny, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(train_run, "MIN_ITERATIONS", 2)
    root, cfg = tiny
    data = ["--objects", root / "objects", "--train", root / "real/train.json", "--val", root / "real/val.json",
            "--config", cfg]
    rc, printed, err = _train([*data, "--out", tmp_path / "a", "--minutes", 0.02], capsys)
    assert rc == 0, err
    n = int(re.search(r"`--iterations (\d+)` reproduces this run", printed).group(1))
    rc, _, err = _train([*data, "--out", tmp_path / "b", "--iterations", n], capsys)
    assert rc == 0, err
    a, b = (torch.load(tmp_path / d / "best.pt", weights_only=True) for d in "ab")
    assert a["step"] == b["step"] and a["best_ap"] == pytest.approx(b["best_ap"], abs=1e-9)
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k
    exp = [yaml.safe_load((tmp_path / d / "experiment" / "config.yaml").read_text()) for d in "ab"]
    assert exp[0].pop("data")["real_train"] != exp[1].pop("data")["real_train"]  # each run's own folder
    assert exp[0] == exp[1] and exp[0]["pretrain"]["iterations"] == n


def test_train_refuses_bad_inputs_before_any_work(tiny, tmp_path, capsys):
    root, cfg = tiny
    base = ["--objects", root / "objects", "--config", cfg, "--iterations", 2]
    recs = _records(root, "train")
    write_coco(tmp_path / "missing.json", [*recs, recs[0].replace(image_path=str(tmp_path / "gone.jpg"), image_id=99)],
               {1: "blob"})
    rc, _, err = _train([*base, "--train", tmp_path / "missing.json", "--out", tmp_path / "o1"], capsys)
    assert rc == 1 and "gone.jpg: file not found" in err and "--skip-bad-images" in err
    assert not (tmp_path / "o1" / "experiment").exists()
    rc, printed, err = _train([*base, "--train", tmp_path / "missing.json", "--out", tmp_path / "o1",
                               "--skip-bad-images"], capsys)
    assert rc == 0, err
    assert len(read_coco(tmp_path / "o1" / "data" / "train.json")[0]) + 1 == len(recs)  # 4 - 1 held out
    assert "1 unusable images skipped" in (tmp_path / "o1" / "report.md").read_text()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc, _, err = _train([*base, "--train", root / "real/train.json", "--out", mine], capsys)
    assert rc == 1 and "did not write" in err and (mine / "notes.txt").read_text() == "keep me"

    (tmp_path / "boxes.txt").write_text("x")
    rc, _, err = _train([*base, "--train", tmp_path / "boxes.txt", "--out", tmp_path / "o2"], capsys)
    assert rc == 1 and "boxes.txt: not a dataset synthdet train reads" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _train([*base, "--train", root / "real/train.json", "--val", root / "real/train.json",
                         "--out", tmp_path / "o3"], capsys)
    assert rc == 1 and "in the train data and in the val data" in err


def test_a_killed_train_continues_where_it_stopped(tiny, tmp_path, capsys, monkeypatch):
    from synthdet.experiments.runner import ExperimentRunner

    root, cfg = tiny
    args = ["--objects", root / "objects", "--train", root / "real/train.json", "--val", root / "real/val.json",
            "--out", tmp_path / "o", "--config", cfg, "--iterations", 2, "--compare-baseline"]
    real_execute, calls = ExperimentRunner.execute, []

    def killed_on_the_second_run(self, run):
        calls.append(run.run_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like to the code after it
        return real_execute(self, run)

    monkeypatch.setattr(ExperimentRunner, "execute", killed_on_the_second_run)
    assert main(["train", *map(str, args), "--no-progress"]) == 130
    first = tmp_path / "o" / "experiment" / "runs" / calls[0] / "metrics.json"
    stamp, bgs = first.stat().st_mtime_ns, (tmp_path / "o" / "backgrounds" / "done.json").stat().st_mtime_ns
    monkeypatch.setattr(ExperimentRunner, "execute", real_execute)
    rc, printed, err = _train(args, capsys)
    assert rc == 0, err
    assert first.stat().st_mtime_ns == stamp  # the finished run was not redone
    assert (tmp_path / "o" / "backgrounds" / "done.json").stat().st_mtime_ns == bgs
    assert len(list((tmp_path / "o" / "experiment" / "runs").glob("*/metrics.json"))) == 3
    assert "without pretraining" in printed
