import json

import numpy as np

from synthdet.cli import main
from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream
from synthdet.synthesis.export import export_dataset, write_preview
from synthdet.utils.image import read_image

from synth_helpers import DiskMasks

CFG = SynthConfig(canvas_size=64, object_size=24, num_objects=(1, 4), box_side=(0.1, 0.5))


def _stream(folders):
    objs, bgs = folders
    return SynthStream(FolderObjectSource(objs, masks=DiskMasks(), size=24), BackgroundSource.from_folder(bgs),
                       CFG, seed=4)


def test_coco_export_reread_by_pycocotools(folders, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    stream = _stream(folders)
    out = tmp_path / "coco"
    records = export_dataset(stream, out, 6, "coco", preview=True, progress=False)
    coco = COCO(str(out / "annotations.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["green", "red"]
    assert len(coco.getImgIds()) == 6
    for rec in records:
        s = stream.render(rec.image_id - 1)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[rec.image_id]))
        got = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                        for a in anns], np.float32).reshape(-1, 4)
        assert np.array_equal(got, s.boxes)
        assert [a["category_id"] for a in anns] == s.labels.tolist()
        for a, box, empty in zip(anns, s.boxes, s.empty):
            m = mask_utils.decode(a["segmentation"])
            if not empty:
                ys, xs = np.nonzero(m)
                assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box.tolist()
        img = read_image(out / coco.loadImgs([rec.image_id])[0]["file_name"])
        assert img.shape == (64, 64, 3)
    assert (out / "preview.png").is_file() and (out / "synth_config.yaml").is_file()


def test_yolo_and_voc_exports_reread(folders, tmp_path):
    from synthdet.datasets.voc import read_voc
    from synthdet.datasets.yolo import read_yolo

    stream = _stream(folders)
    want = [stream.render(i) for i in range(4)]
    export_dataset(stream, tmp_path / "yolo", 4, "yolo", progress=False)
    recs, names = read_yolo(tmp_path / "yolo")
    assert list(names.values()) == ["green", "red"]
    for r, s in zip(sorted(recs, key=lambda r: r.image_path), want):
        assert np.allclose(r.boxes, s.boxes, atol=1e-2) and r.labels.tolist() == s.labels.tolist()
    export_dataset(stream, tmp_path / "voc", 4, "voc", progress=False)
    recs, _ = read_voc(tmp_path / "voc", split="train", class_names=["green", "red"])
    for r, s in zip(sorted(recs, key=lambda r: r.image_path), want):
        assert np.array_equal(r.boxes, s.boxes) and r.labels.tolist() == s.labels.tolist()


def test_preview_and_cli(folders, tmp_path):
    objs, bgs = folders
    path = write_preview(_stream(folders), tmp_path / "p.png", count=4, ncols=2)
    assert read_image(path).shape[0] > 64
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("synthesis:\n  canvas_size: 48\n  num_objects: [1, 2]\n")
    rc = main(["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--out", str(tmp_path / "cli"),
               "--count", "3", "--format", "coco", "--segmenter", "none", "--config", str(cfg),
               "--set", "object_size=16", "--preview", "--no-progress"])
    assert rc == 0
    data = json.loads((tmp_path / "cli" / "annotations.json").read_text())
    assert len(data["images"]) == 3 and data["images"][0]["width"] == 48
    assert (tmp_path / "cli" / "preview.png").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("box_side: [0.9, 0.1]\n")
    assert main(["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--out", str(tmp_path / "x"),
                 "--count", "1", "--segmenter", "none", "--config", str(bad)]) == 1
