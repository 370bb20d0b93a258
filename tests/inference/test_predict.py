"""synthdet predict / Detector: COCO results that pycocotools accepts, YOLO txt, drawn images, inputs
from folders, globs and videos, and an output folder that never takes over the user's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthdet.cli import main
from synthdet.inference import Detector, collect_sources, iter_frames
from synthdet.models import build_detector
from synthdet.training.checkpoint import save_checkpoint
from synthdet.utils.image import write_image


def _checkpoint(tmp_path):
    model = build_detector("fcos_efficientnet_lite0", 2, image_size=64, weights="none", seed=0, fpn_channels=64,
                           head_convs=1)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "detector": model.synthdet_meta})
    return path


def _images(folder, n=3):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [(48, 64), (64, 64), (40, 30)]
    for i in range(n):
        write_image(folder / f"im{i}.png", rng.integers(0, 255, (*shapes[i % 3], 3), dtype=np.uint8))
    return folder


def test_predict_writes_coco_results_that_pycocotools_loads(tmp_path, capsys):
    from pycocotools.coco import COCO

    ck, images, out = _checkpoint(tmp_path), _images(tmp_path / "imgs"), tmp_path / "pred"
    rc = main(["predict", "--checkpoint", str(ck), "--images", str(images), "--out", str(out), "--score-threshold",
               "0", "--batch-size", "2", "--save-txt", "--names", "bird,cat", "--no-progress"])
    assert rc == 0 and "3 images, 0 skipped" in capsys.readouterr().out
    meta = json.loads((out / "images.json").read_text())
    dets = json.loads((out / "detections.json").read_text())
    assert [im["name"] for im in meta["images"]] == ["im0", "im1", "im2"]
    assert meta["categories"] == [{"id": 1, "name": "bird"}, {"id": 2, "name": "cat"}]
    assert dets and {d["image_id"] for d in dets} <= {1, 2, 3}
    gt = COCO()
    gt.dataset = {**meta, "annotations": []}
    gt.createIndex()
    res = gt.loadRes(str(out / "detections.json"))
    assert len(res.getAnnIds()) == len(dets)
    for d in dets:
        im = meta["images"][d["image_id"] - 1]
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0 and x + w <= im["width"] + 1e-3 and y + h <= im["height"] + 1e-3
        assert d["category_id"] in (1, 2) and 0 <= d["score"] <= 1
    for im in meta["images"]:  # YOLO txt: one line per detection of the image, normalised
        lines = (out / "labels" / f"{im['name']}.txt").read_text().splitlines()
        assert len(lines) == sum(d["image_id"] == im["id"] for d in dets)
        vals = np.array([[float(v) for v in line.split()] for line in lines])
        assert set(vals[:, 0]) <= {0, 1} and (vals[:, 1:5] >= -1e-6).all() and (vals[:, 1:5] <= 1 + 1e-6).all()
        assert (out / "images" / f"{im['name']}.jpg").is_file()


def test_detector_api_matches_the_model_and_thresholds(tmp_path):
    import synthdet

    ck = _checkpoint(tmp_path)
    assert synthdet.Detector is Detector
    det = Detector.from_checkpoint(ck, score_threshold=0.0)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 255, (64, 48, 3), dtype=np.uint8), rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)]
    write_image(tmp_path / "a.png", arrays[0])
    out = det.predict([tmp_path / "a.png", arrays[1]], batch_size=1)
    with torch.no_grad():
        ref = [det.model([torch.from_numpy(a).permute(2, 0, 1).float() / 255])[0] for a in arrays]
    for o, r, a in zip(out, ref, arrays):
        assert o["boxes"].dtype == np.float32 and o["labels"].dtype == np.int64
        np.testing.assert_allclose(o["boxes"], r["boxes"].numpy(), atol=1e-4)
        assert (o["boxes"][:, 2] <= a.shape[1] + 1e-3).all() and (o["boxes"][:, 3] <= a.shape[0] + 1e-3).all()
    high = Detector.from_checkpoint(ck, score_threshold=0.9).predict(arrays)
    assert all((h["scores"] >= 0.9).all() for h in high)
    assert sum(len(h["scores"]) for h in high) < sum(len(o["scores"]) for o in out)


def test_inputs_globs_and_videos(tmp_path):
    import cv2

    _images(tmp_path / "a")
    _images(tmp_path / "b", 1)  # b/im0.png: the same stem as a/im0.png
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for k in range(5):
        writer.write(np.full((24, 32, 3), 40 * k, np.uint8))
    writer.release()
    sources = collect_sources([str(tmp_path / "a"), str(tmp_path / "b" / "*.png"), str(video)])
    frames = list(iter_frames(sources, video_stride=2))
    assert [f.name for f in frames] == ["im0", "im1", "im2", "im0_1", "clip_000000", "clip_000002", "clip_000004"]
    assert frames[-1].image.shape == (24, 32, 3) and frames[-1].source.endswith("clip.avi#4")
    with pytest.raises(FileNotFoundError, match="no image or video file matches"):
        collect_sources([str(tmp_path / "*.jpg")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: not an image or video"):
        collect_sources([str(tmp_path / "notes.txt")])


def test_out_folder_of_the_user_is_refused_and_ours_is_rewritten(tmp_path, capsys):
    ck, images = _checkpoint(tmp_path), _images(tmp_path / "imgs")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("user data")
    args = ["predict", "--checkpoint", str(ck), "--images", str(images), "--no-progress"]
    assert main(args + ["--out", str(user)]) == 1
    assert "synthdet did not write" in capsys.readouterr().err and (user / "keep.txt").read_text() == "user data"
    out = tmp_path / "pred"
    assert main(args + ["--out", str(out)]) == 0
    assert main(["predict", "--checkpoint", str(ck), "--images", str(images / "im1.png"), "--out", str(out),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["im1.jpg"]  # the earlier run's images went


def test_finetuned_checkpoint_names_its_classes(tmp_path):
    from synthdet.training import TrainConfig, finetune

    model = build_detector("fcos_efficientnet_lite0", 1, image_size=64, weights="none", seed=0, fpn_channels=64,
                           head_convs=1)
    img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    data = [(img, {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.ones(1, dtype=torch.int64)})]
    cfg = TrainConfig(iterations=1, batch_size=1, progress=False, tensorboard=False)
    res = finetune(model, data, data, cfg, tmp_path / "run", class_names={1: "bird"})
    assert Detector.from_checkpoint(res.checkpoint).class_names == {1: "bird"}
    assert Detector.from_checkpoint(res.checkpoint, class_names=["duck"]).class_names == {1: "duck"}
