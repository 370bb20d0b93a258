"""The input catalogue (issue 23), run for real through the CLI: every command that reads images x
every odd or bad file of ``tests/bad_images.py``. Each case checks the exit code, the message and
what was kept; ``docs/safety-catalogue.md`` is the table of these tests.

Labelled data (finetune, mixed, eval, experiment) with a bad image is refused before any work, with
the count, one line per file and ``--skip-bad-images``, which drops the bad images and lists them
in the run's result; unlabelled inputs (predict, object / background folders, segment apply, data
birds' package files) skip, count and warn, and go on.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bad_images import BAD, GOOD, LATE, H, W, exif_jpeg, pattern, write_case
from synthdet.cli import main
from synthdet.utils.image import BadImageError, apply_orientation, probe_image, read_image, write_image

BOX = [8, 8, 24, 24]  # XYXY of the bright square of bad_images.pattern()


# --------------------------------------------------------------------------- helpers


def _coco(root: Path, kinds, monkeypatch, name: str = "train.json", stated=None) -> Path:
    """A COCO file listing one image per kind, each with the bright square's box (1x1: the pixel)."""
    images, anns = [], []
    for i, kind in enumerate(kinds, 1):
        path, (w, h) = write_case(kind, root / "images", monkeypatch, stem=f"{i:02d}_{kind}")
        w, h = stated or (w, h)
        x0, y0, x1, y1 = BOX if kind != "one_pixel" else [0, 0, 1, 1]
        images.append({"id": i, "file_name": os.path.relpath(path, root), "width": w, "height": h})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "sq"}]}))
    return path


def _folder(root: Path, kinds, monkeypatch) -> Path:
    for i, kind in enumerate(kinds):
        write_case(kind, root, monkeypatch, stem=f"{i:02d}_{kind}")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _checkpoint(path: Path, classes: int = 1) -> Path:
    from synthdet.models import build_detector
    from synthdet.training.checkpoint import save_checkpoint

    model = build_detector("fcos_efficientnet_lite0", classes, image_size=64, weights="none", seed=0,
                           fpn_channels=64, head_convs=1)
    save_checkpoint(path, {"model": model.state_dict(), "detector": model.synthdet_meta})
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _train_args(train: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--train", str(train), "--out", str(out), "--weights", "none", "--detector",
            "ssd_mobilenet", "--recipe", "paper", "--iterations", "1", "--batch-size", "2", "--image-size", "64",
            "--device", "cpu", "--no-progress", "--no-tensorboard", *extra]


# --------------------------------------------------------------------------- the one reader


@pytest.mark.parametrize("kind", GOOD)
def test_odd_files_read_the_same_everywhere(tmp_path, kind):
    """Every odd but usable file: the same RGB pixels through training's, predict's and synthesis'
    readers, as a viewer shows them (EXIF applied)."""
    from synthdet.datasets.records import DetectionDataset, DetectionRecord
    from synthdet.inference.predictor import Source, iter_frames
    from synthdet.sources.backgrounds import decode_reduced

    path, (w, h) = write_case(kind, tmp_path)
    img = read_image(path)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8 and probe_image(path).size == (w, h)
    if kind != "one_pixel":  # the bright square is where the viewer shows it
        assert img[8:24, 8:24].min() > 200 and img[:, 28:].max() < 110
    train = DetectionDataset([DetectionRecord(str(path), w, h)]).load(0)[0]
    frame = next(iter_frames([Source(path)]))
    np.testing.assert_array_equal(train, img)
    np.testing.assert_array_equal(frame.image, img)
    background = decode_reduced(path, 10_000)  # JPEGs through PIL's decoder here: within 2 levels
    assert background.shape == img.shape and np.abs(background.astype(int) - img).max() <= 2


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_are_named_by_the_cheap_check_and_the_reader(tmp_path, monkeypatch, kind):
    path, _ = write_case(kind, tmp_path, monkeypatch)
    for fn in (probe_image, read_image):
        with pytest.raises(BadImageError, match=BAD[kind]) as e:
            fn(path)
        assert str(path) in str(e.value)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pil(tmp_path, orientation):
    from PIL import Image, ImageOps

    stored = pattern(W, H)
    path = exif_jpeg(tmp_path / "o.jpg", stored, orientation)
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape == reference.shape and np.abs(got.astype(int) - reference).max() <= 2
    assert probe_image(path).size == (got.shape[1], got.shape[0])
    np.testing.assert_array_equal(apply_orientation(np.arange(6).reshape(2, 3), 1), np.arange(6).reshape(2, 3))


def test_a_mask_cached_before_exif_orientation_is_refused_not_misplaced(tmp_path):
    """A mask of the stored (un-turned) pixels, e.g. from a cache made by an older synthdet, does not
    fit the turned image: the object is skipped and counted instead of pasted with a wrong mask."""
    from synthdet.sources.objects import FolderObjectSource

    (tmp_path / "objects").mkdir()
    exif_jpeg(tmp_path / "objects" / "a.jpg", np.ascontiguousarray(np.rot90(pattern(), 1)), 6)
    write_image(tmp_path / "objects" / "b.png", pattern())

    class StoredMasks:  # masks the size of the stored pixels (what the old reader decoded)
        def get(self, path):
            w, h = probe_image(path).stored_size
            return np.ones((h, w), np.float32)

    src = FolderObjectSource(tmp_path / "objects", masks=StoredMasks(), size=16)
    with pytest.raises(BadImageError, match="stale mask cache"):
        src.get(0, 0)
    assert src.get(0, 1)[1].shape == (16, 16) and src.stats["bad_files"] == 1  # b.png: mask fits, used


# --------------------------------------------------------------------------- labelled data: refuse


def _refusing_command(cmd: str, tmp_path: Path, train: Path) -> list[str]:
    out = tmp_path / "out"
    if cmd == "finetune":
        return _train_args(train, out)
    if cmd == "mixed":
        return ["mixed", "--train", str(train), "--objects", str(tmp_path), "--backgrounds", str(tmp_path),
                "--segmenter", "none", "--out", str(out), "--weights", "none", "--iterations", "1", "--no-progress"]
    if cmd == "eval":
        return ["eval", "--data", str(train), "--checkpoint", str(tmp_path / "never_loaded.pt"), "--no-progress"]
    good = train.parent / "good.json"
    good.write_text(json.dumps({**json.loads(train.read_text()), "images": json.loads(train.read_text())["images"][:1]}))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(json.dumps({"name": "t", "data": {"objects": str(tmp_path), "backgrounds": str(tmp_path),
                                                      "real_train": str(train), "real_val": str(good),
                                                      "real_test": str(good)},
                               "detectors": ["ssd_mobilenet"], "image_size": 64, "weights": "none",
                               "segmenter": {"name": "none"}, "study": {"real_sizes": [1], "repeats": 1}}))
    return ["experiment", str(cfg), "--out", str(out), "--device", "cpu"]


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("cmd", ["finetune", "mixed", "eval", "experiment"])
def test_labelled_data_with_a_bad_image_is_refused_before_any_work(tmp_path, monkeypatch, capsys, cmd, kind):
    train = _coco(tmp_path / "data", ["plain", kind], monkeypatch)
    bad_path = tmp_path / "data" / json.loads(train.read_text())["images"][1]["file_name"]
    assert main(_refusing_command(cmd, tmp_path, train)) == 1
    lines = _stderr_lines(capsys)
    assert lines[0].startswith(f"synthdet: error: {train}") and "1 of 2 images cannot be used" in lines[0]
    assert "--skip-bad-images" in lines[0] and "nothing was done" in lines[0]
    assert lines[1] == f"  {bad_path}: {lines[1].split(': ', 1)[1]}" and BAD[kind] in lines[1]
    out = tmp_path / "out"
    assert not (out / "last.pt").exists() and not (out / "runs").exists()  # no step, no run
    if cmd in ("finetune", "mixed", "eval"):
        assert not out.exists()


def test_stated_size_that_fits_neither_orientation_is_refused(tmp_path, monkeypatch, capsys):
    train = _coco(tmp_path / "data", ["plain", "exif_rotated"], monkeypatch, stated=(50, 50))
    assert main(_train_args(train, tmp_path / "out")) == 1
    lines = _stderr_lines(capsys)
    assert "2 of 2 images" in lines[0]
    assert "size mismatch: the annotation says 50x50 px, the image is 40x32 px after EXIF orientation 6" in lines[2]


@pytest.mark.parametrize("cmd", ["finetune", "mixed"])
def test_finetune_with_skip_bad_images_trains_on_the_rest_and_lists_the_bad(tmp_path, monkeypatch, capsys, cmd):
    kinds = list(GOOD) + sorted(BAD)
    train = _coco(tmp_path / "data", kinds, monkeypatch)
    out = tmp_path / "run"
    argv = _train_args(train, out, "--skip-bad-images")
    if cmd == "mixed":
        objs = _folder(tmp_path / "objects", ["plain", "cmyk"], monkeypatch)
        argv = ["mixed", *argv[1:], "--objects", str(objs), "--backgrounds", str(objs), "--segmenter", "none"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert f"{len(BAD)} bad images skipped" in stdout
    assert cmd == "mixed" or f"on {len(GOOD)} real images" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 1 and (out / "last.pt").is_file()
    listed = {Path(e["file"]).name.split("_", 1)[1].rsplit(".", 1)[0]: e["problem"]
              for e in result["skipped_images"]["train"]}
    assert result["skipped_images"]["count"] == len(BAD) and set(listed) == set(BAD)
    assert all(BAD[k] in problem for k, problem in listed.items())


def test_corrupt_pixel_data_found_while_training_is_one_line_or_replaced(tmp_path, monkeypatch, capsys, caplog):
    """What the cheap check cannot see (a flipped byte inside PNG data) fails the first step with
    one line naming the file; with --skip-bad-images the next image takes its place, with a warning."""
    train = _coco(tmp_path / "data", ["plain", "corrupt_pixels"], monkeypatch)
    assert main(_train_args(train, tmp_path / "run")) == 1
    line = _stderr_lines(capsys)[-1]
    assert line.startswith("synthdet: error: ") and "02_corrupt_pixels.png: not a readable image" in line
    assert main(_train_args(train, tmp_path / "run2", "--skip-bad-images")) == 0
    assert "02_corrupt_pixels.png: not a readable image" in caplog.text and "used in its place" in caplog.text


def test_eval_with_skip_bad_images_counts_them_in_metrics(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    data = _coco(tmp_path / "data", ["plain", "cmyk", "truncated", "missing"], monkeypatch)
    rc = main(["eval", "--data", str(data), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "ev"),
               "--device", "cpu", "--no-progress", "--skip-bad-images"])
    assert rc == 0 and "AP50" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["skipped_images"]["count"] == 2
    assert {e["problem"].split(" ")[0] for e in metrics["skipped_images"]["files"]} == {"truncated", "file"}


def test_experiment_with_skip_bad_images_records_them_in_each_run(tmp_path, monkeypatch):
    from synthdet.experiments import ExperimentRunner
    from synthdet.experiments.config import experiment_from_dict
    from synthdet.utils.errors import UserError

    train = _coco(tmp_path / "data", ["plain", "grayscale", "missing"], monkeypatch)
    good = _coco(tmp_path / "data", ["plain"], monkeypatch, name="good.json")
    cfg = experiment_from_dict({
        "name": "t", "data": {"objects": str(tmp_path), "backgrounds": str(tmp_path), "real_train": str(train),
                              "real_val": str(good), "real_test": str(good)},
        "detectors": ["ssd_mobilenet"], "image_size": 64, "weights": "none", "device": "cpu",
        "segmenter": {"name": "none"}, "finetune": {"iterations": 1, "batch_size": 2, "val_every": 1},
        "study": {"kind": "data_efficiency", "real_sizes": [-1], "repeats": 1}})  # first run: no_pretraining
    with pytest.raises(UserError, match="1 of 3 images cannot be used"):
        ExperimentRunner(cfg, tmp_path / "refused").run()
    rows = ExperimentRunner(cfg, tmp_path / "exp", skip_bad_images=True).run(max_runs=1)
    assert len(rows) == 1 and int(rows[0]["n_real"]) == 2
    metrics = json.loads(next((tmp_path / "exp" / "runs").glob("*/metrics.json")).read_text())
    assert [e["problem"] for e in metrics["skipped_images"]["train"]] == ["file not found"]


# --------------------------------------------------------------------------- EXIF: boxes on their pixels


class _Captured(Exception):
    pass


@pytest.mark.parametrize("stated", ["shown", "stored"])
def test_exif_box_lands_on_its_pixels_in_training(tmp_path, monkeypatch, caplog, stated):
    """The COCO box of an EXIF-rotated photo covers the bright square in the tensors finetune
    trains on, whether the annotation tool applied EXIF (stated size = shown) or not (= stored)."""
    import synthdet.training.protocol as protocol

    stored = np.ascontiguousarray(np.rot90(pattern(), 1))  # shown = pattern() after orientation 6
    path = exif_jpeg(tmp_path / "photo.jpg", stored, 6)
    if stated == "shown":
        size, box = (W, H), BOX
    else:  # the square in the stored pixels: rows 16..32, columns 8..24 of the 32 x 40 stored image
        ys, xs = np.nonzero(stored[..., 0] > 200)
        size, box = (H, W), [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"images": [{"id": 1, "file_name": "photo.jpg", "width": size[0], "height": size[1]}],
                                 "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                  "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}],
                                 "categories": [{"id": 1, "name": "sq"}]}))
    seen = {}

    def capture(model, train_dataset, *args, **kwargs):
        seen["sample"] = train_dataset[0]
        raise _Captured

    monkeypatch.setattr(protocol, "finetune", capture)
    with pytest.raises(_Captured):
        main(_train_args(train, tmp_path / "out"))
    image, target = seen["sample"]
    x0, y0, x1, y1 = (int(round(v)) for v in target["boxes"][0].tolist())
    inside = image[:, y0:y1, x0:x1]
    outside = image.clone()
    outside[:, y0:y1, x0:x1] = 0
    assert inside.mean() > 0.85 and outside.sum() / (image[0].numel() - inside[0].numel()) / 3 < 0.3
    assert ("EXIF orientation 6 ignored" in caplog.text) == (stated == "stored")


class _BrightBox(nn.Module):
    """A stand-in detector: one box around the pixels brighter than 0.8 (what the square is)."""

    def forward(self, images):
        out = []
        for im in images:
            ys, xs = torch.nonzero(im.min(0).values > 0.8, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append({"boxes": box, "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)})
        return out


def test_exif_box_lands_on_its_pixels_in_predict(tmp_path, monkeypatch, capsys):
    from synthdet.inference.predictor import Detector

    (tmp_path / "imgs").mkdir()
    exif_jpeg(tmp_path / "imgs" / "photo.jpg", np.ascontiguousarray(np.rot90(pattern(), 1)), 6)
    monkeypatch.setattr(Detector, "from_checkpoint", classmethod(lambda cls, *a, **k: cls(_BrightBox())))
    (tmp_path / "c.pt").write_bytes(b"stand-in")
    assert main(["predict", "--checkpoint", str(tmp_path / "c.pt"), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    image = json.loads((tmp_path / "pred" / "images.json").read_text())["images"][0]
    det = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert (image["width"], image["height"]) == (W, H)  # the shown size
    assert [round(v) for v in det[0]["bbox"]] == [BOX[0], BOX[1], BOX[2] - BOX[0], BOX[3] - BOX[1]]
    drawn = read_image(tmp_path / "pred" / "images" / "photo.jpg")
    assert drawn.shape == (H, W, 3)


# --------------------------------------------------------------------------- unlabelled inputs: skip, count, go on


def test_predict_over_a_folder_with_bad_files_keeps_every_good_result(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    folder = _folder(tmp_path / "imgs", list(GOOD) + sorted(BAD) + list(LATE), monkeypatch)
    out = tmp_path / "pred"
    rc = main(["predict", "--checkpoint", str(tiny_checkpoint), "--images", str(folder), "--out", str(out),
               "--score-threshold", "0", "--batch-size", "3", "--no-progress"])
    stdout = capsys.readouterr().out
    present = len(BAD) - 1 + len(LATE)  # "missing" is not in the folder to be listed
    assert rc == 0 and f"{len(GOOD)} images, {present} skipped" in stdout
    images = json.loads((out / "images.json").read_text())["images"]
    assert sorted(im["name"].split("_", 1)[1] for im in images) == sorted(
        k if k != "non_utf8_name" else os.fsdecode(b"non_utf8_name_caf\xe9") for k in GOOD)
    dets = json.loads((out / "detections.json").read_text())
    assert {d["image_id"] for d in dets} == {im["id"] for im in images}  # detections for every good image
    skipped = json.loads((out / "skipped.json").read_text())
    problems = {**BAD, **LATE}
    assert {Path(s["file"]).name.split("_", 1)[1].rsplit(".", 1)[0] for s in skipped} == set(problems) - {"missing"}
    assert all(problems[Path(s["file"]).name.split("_", 1)[1].rsplit(".", 1)[0]] in s["problem"] for s in skipped)
    assert len((out / "detections.jsonl").read_text().splitlines()) == len(GOOD)


def test_predict_with_no_usable_image_exits_1_and_still_writes_its_lists(tmp_path, monkeypatch, capsys,
                                                                         tiny_checkpoint):
    folder = _folder(tmp_path / "imgs", ["empty", "truncated"], monkeypatch)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), "--images", str(folder), "--out", str(out),
                 "--no-progress"]) == 1
    lines = _stderr_lines(capsys)
    errors = [line for line in lines if line.startswith("synthdet: error: ")]
    assert len(errors) == 1 and "no image could be processed: all 2 inputs were skipped" in errors[0]
    assert json.loads((out / "detections.json").read_text()) == []
    assert len(json.loads((out / "skipped.json").read_text())) == 2


def test_pretrain_and_synth_skip_bad_object_and_background_images(tmp_path, monkeypatch, capsys):
    kinds = list(GOOD) + sorted(set(BAD) - {"missing"})
    objs = _folder(tmp_path / "objects", kinds, monkeypatch)
    bgs = _folder(tmp_path / "backgrounds", kinds, monkeypatch)
    synth = ["--objects", str(objs), "--backgrounds", str(bgs), "--segmenter", "none", "--no-progress"]
    assert main(["synth", *synth, "--out", str(tmp_path / "synth"), "--count", "3", "--set", "canvas_size=48",
                 "--set", "object_size=16"]) == 0
    assert "skipped (cannot be used, see the warnings): 6 object images, 6 background images" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "synth" / "annotations.json").read_text())["images"]) == 3
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("canvas_size: 48\nobject_size: 16\n")
    out = tmp_path / "pre"
    assert main(["pretrain", *synth, "--synth-config", str(cfg), "--out", str(out), "--weights", "none",
                 "--detector", "ssd_mobilenet", "--recipe", "paper", "--iterations", "1", "--batch-size", "2",
                 "--image-size", "64", "--device", "cpu", "--no-tensorboard"]) == 0
    skipped = json.loads((out / "result.json").read_text())["skipped_images"]
    assert skipped["count"] == 12 and len(skipped["objects"]) == len(skipped["backgrounds"]) == 6


def test_segment_apply_skips_bad_images(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path / "objects", ["plain", "cmyk", "exif_rotated", "empty", "symlink_loop"], monkeypatch)
    assert main(["segment", "apply", "--segmenter", "ellipse", "--images", str(folder),
                 "--out", str(tmp_path / "masks")]) == 0
    assert "3 masks written to" in (stdout := capsys.readouterr().out) and "2 images skipped" in stdout
    mask = read_image(tmp_path / "masks" / "02_exif_rotated.png")
    assert mask.shape == (H, W, 3)  # the mask of the image as shown


def test_data_birds_skips_bad_package_files_and_lists_them(tmp_path, monkeypatch, capsys):
    import cv2

    from synthdet.datasets.birds import fetch as fetch_mod

    tree = tmp_path / "tree"
    birds = tree / fetch_mod.BIRDS_SUBDIR
    birds.mkdir(parents=True)
    for k, color in enumerate(((220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 20))):
        cut = np.zeros((32, 44, 4), np.uint8)
        cv2.ellipse(cut, (22, 16), (18, 11), 0, 0, 360, (*color, 255), -1)
        cv2.imwrite(str(birds / f"bird{k}.png"), cut[..., [2, 1, 0, 3]])
    for kind in ("empty", "truncated", "not_an_image", "symlink_loop"):
        p, _ = write_case(kind, tmp_path / "staging", monkeypatch)
        os.replace(p, birds / f"zz_{kind}.png")
    for k in range(4):
        write_image(tree / fetch_mod.BACKGROUNDS_SUBDIR / f"bg{k}.jpg", np.full((96, 120, 3), 40 + 50 * k, np.uint8))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("classification_count: 4\nclassification_size: 32\nscene_size: 64\ntrain_scenes: 2\n"
                   "val_scenes: 1\ntest_scenes: 1\nheld_out_identities: 1\nidentity_groups: []\n")
    assert main(["data", "birds", "--root", str(tmp_path / "root"), "--sources", str(tree), "--config", str(cfg),
                 "--no-extra-photos", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "root" / "birds" / "manifest.json").read_text())
    assert {k for k in manifest["skipped"] if k.startswith("zz_")} == {
        "zz_empty.png", "zz_truncated.png", "zz_not_an_image.png", "zz_symlink_loop.png"}


# --------------------------------------------------------------------------- killed, full disk: nothing lost


def _predict_args(ck: Path, images: Path, out: Path) -> list[str]:
    return ["predict", "--checkpoint", str(ck), "--images", str(images), "--out", str(out), "--score-threshold",
            "0.05", "--batch-size", "2", "--no-progress"]


def _same_results(a: Path, b: Path) -> None:
    ia, ib = (json.loads((p / "images.json").read_text()) for p in (a, b))
    assert ia == ib
    da, db = (json.loads((p / "detections.json").read_text()) for p in (a, b))
    assert [(d["image_id"], d["category_id"]) for d in da] == [(d["image_id"], d["category_id"]) for d in db]
    np.testing.assert_allclose([d["bbox"] + [d["score"]] for d in da], [d["bbox"] + [d["score"]] for d in db],
                               atol=1e-4)


def _run_then_kill9(argv: list[str], module: str, name: str, at_call: int) -> None:
    """Run the CLI with ``module.name`` wrapped to SIGKILL this very process at its ``at_call``-th
    call (no cleanup code runs, as with ``kill -9``)."""
    import importlib

    mod = importlib.import_module(module)
    real, calls = getattr(mod, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(mod, name, wrapped)
    main(argv)
    os._exit(0)  # not reached


def _killed(argv: list[str], module: str, name: str, at_call: int) -> None:
    """``_run_then_kill9`` in a forked child (the real code, without a fresh interpreter's imports)."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=_run_then_kill9, args=(argv, module, name, at_call))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL


def test_predict_killed_mid_run_resumes_where_it_stopped(tmp_path, capsys, caplog, tiny_checkpoint):
    import logging

    folder = tmp_path / "imgs"
    for i in range(8):
        write_image(folder / f"im{i}.jpg", pattern(seed=i))
    out = tmp_path / "pred"
    _killed(_predict_args(tiny_checkpoint, folder, out), "synthdet.inference.predictor", "_to_tensor", 5)
    kept = (out / "detections.jsonl").read_text().splitlines()
    assert len(kept) == 4 and not (out / "detections.json").exists()  # two batches were on the disk
    with caplog.at_level(logging.INFO):
        assert main(_predict_args(tiny_checkpoint, folder, out)) == 0
    assert "8 images, 0 skipped (4 of them done by the interrupted run before)" in capsys.readouterr().out
    assert "resuming an interrupted predict: 4 images already done" in caplog.text
    assert main(_predict_args(tiny_checkpoint, folder, tmp_path / "whole")) == 0
    _same_results(out, tmp_path / "whole")


def test_predict_rerun_with_other_settings_says_it_starts_over(tmp_path, caplog, tiny_checkpoint):
    from synthdet.inference.outputs import JSONL
    from synthdet.utils.outdir import write_marker

    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"im{i}.jpg", pattern(seed=i))
    out = tmp_path / "pred"
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 0
    write_marker(out, "predict", complete=False, settings={"score_threshold": 0.9})  # an interrupted other run
    assert (out / JSONL).is_file()
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 0
    assert "used other settings (" in caplog.text and "starting over" in caplog.text


def test_predict_on_a_full_disk_keeps_what_it_did_and_finishes_on_rerun(tmp_path, monkeypatch, capsys,
                                                                         tiny_checkpoint):
    """ENOSPC emulated: the fifth drawn image cannot be written."""
    import synthdet.inference.outputs as outputs

    folder = tmp_path / "imgs"
    for i in range(8):
        write_image(folder / f"im{i}.jpg", pattern(seed=i))
    out = tmp_path / "pred"
    real, calls = outputs.write_image, []

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outputs, "write_image", full_disk)
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 1
    line = _stderr_lines(capsys)[-1]
    assert "No space left on device; predict stopped: the 4 images done so far are kept in" in line
    assert len((out / "detections.jsonl").read_text().splitlines()) == 4
    monkeypatch.setattr(outputs, "write_image", real)
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 0
    assert "8 images, 0 skipped (4 of them done" in capsys.readouterr().out


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only); the test is skipped where it cannot be mounted."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode(errors='replace').strip()})")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_predict_into_a_really_full_file_system(tmp_path, tiny_tmpfs, capsys, tiny_checkpoint):
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(40):  # noise JPEGs of ~3 KiB drawn: 64 KiB fill up after a dozen or so
        write_image(folder / f"im{i:02d}.jpg", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    out = tiny_tmpfs / "pred"
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 1
    line = _stderr_lines(capsys)[-1]
    assert line.startswith("synthdet: error: ") and "No space left on device" in line and "kept in" in line
    kept = len((out / "detections.jsonl").read_text().splitlines())
    assert 0 < kept < 40
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_tmpfs)], check=True)  # space freed
    assert main(_predict_args(tiny_checkpoint, folder, out)) == 0
    assert f"40 images, 0 skipped ({kept} of them done" in capsys.readouterr().out


def test_finetune_killed_mid_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    train = _coco(tmp_path / "data", ["plain", "cmyk", "grayscale", "exif_rotated"], monkeypatch)
    args = lambda out: _train_args(train, out, "--iterations", "4", "--set", "checkpoint_every=2")  # noqa: E731
    _killed(args(tmp_path / "run"), "synthdet.training.engine", "train_one_step", 3)  # after last.pt of step 2
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "result.json").exists()
    assert main(args(tmp_path / "run")) == 0
    assert main(args(tmp_path / "whole")) == 0
    from synthdet.training.checkpoint import load_checkpoint

    a, b = (load_checkpoint(p / "last.pt")["model"] for p in (tmp_path / "run", tmp_path / "whole"))
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 4
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_synth_killed_mid_run_keeps_the_previous_output_and_reruns_clean(tmp_path, monkeypatch):
    objs = _folder(tmp_path / "objects", ["plain", "cmyk"], monkeypatch)
    bgs = _folder(tmp_path / "backgrounds", ["plain", "grayscale"], monkeypatch)
    out = tmp_path / "synth"
    args = ["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--segmenter", "none", "--no-progress",
            "--out", str(out), "--count", "4", "--set", "canvas_size=48", "--set", "object_size=16"]
    assert main(args) == 0
    before = (out / "annotations.json").read_bytes()
    _killed(args + ["--seed", "1"], "synthdet.synthesis.export", "write_image", 3)
    assert (out / "annotations.json").read_bytes() == before  # the finished output, untouched
    assert [p.name for p in tmp_path.glob(".synth.tmp-*")]  # the half-built one, left by the kill
    assert main(args + ["--seed", "1"]) == 0
    assert not list(tmp_path.glob(".synth.tmp-*")) and (out / "annotations.json").read_bytes() != before


@pytest.mark.parametrize("cmd", ["synth", "synth_no_room_at_all", "finetune"])
def test_synth_and_finetune_on_a_really_full_file_system(tmp_path, tiny_tmpfs, monkeypatch, capsys, cmd):
    if cmd == "synth_no_room_at_all":  # not even the lock file can be written
        filler = tiny_tmpfs / "filler.bin"
        with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
    if cmd.startswith("synth"):
        objs = _folder(tmp_path / "objects", ["plain"], monkeypatch)
        argv = ["synth", "--objects", str(objs), "--backgrounds", str(objs), "--segmenter", "none", "--no-progress",
                "--out", str(tiny_tmpfs / "synth"), "--count", "200", "--set", "canvas_size=48"]
    else:  # an ssd_mobilenet checkpoint is ~ 10 MB: the first last.pt cannot be written
        argv = _train_args(_coco(tmp_path / "data", ["plain"], monkeypatch), tiny_tmpfs / "run")
    assert main(argv) == 1
    lines = [line for line in _stderr_lines(capsys) if line.startswith("synthdet: error: ")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(tiny_tmpfs) in lines[0]
    left = sorted(p.name for p in tiny_tmpfs.rglob("*") if p.is_file())
    assert not [n for n in left if n.endswith(".tmp") or ".tmp-" in n]  # no half-written file or folder
    assert (left == [] if cmd == "synth" else "last.pt" not in left)
    if cmd == "synth_no_room_at_all":
        assert lines[0].endswith(".synth.lock: No space left on device") and left == ["filler.bin"]
