"""Every real-dataset reader on a tiny fixture written in that dataset's own on-disk format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.io import savemat

from synthdet.datasets import DetectionDataset, DetectionRecord, list_formats, read_dataset
from synthdet.datasets.check import check_records
from synthdet.datasets.coco import write_coco
from synthdet.datasets.fddb import ellipse_to_box, read_fddb
from synthdet.datasets.voc import read_voc, voc_background_paths, write_voc
from synthdet.datasets.wider import read_wider, read_wider_eval_mat, wider_ignore
from synthdet.datasets.yolo import label_path, read_yolo, write_yolo
from synthdet.utils.errors import UserError
from synthdet.utils.image import write_image


def _img(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    write_image(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


# ----------------------------------------------------------------------------- Pascal VOC

def _voc_xml(filename: str, w: int, h: int, objects: list[tuple[str, tuple, int]]) -> str:
    """An annotation laid out exactly like VOC2007's (tabs, source/owner blocks, a person part)."""
    objs = ""
    for name, (x0, y0, x1, y1), difficult in objects:
        part = ("\t\t<part>\n\t\t\t<name>head</name>\n\t\t\t<bndbox>\n\t\t\t\t<xmin>1</xmin>\n\t\t\t\t<ymin>1</ymin>\n"
                "\t\t\t\t<xmax>2</xmax>\n\t\t\t\t<ymax>2</ymax>\n\t\t\t</bndbox>\n\t\t</part>\n") if name == "person" else ""
        objs += (f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Left</pose>\n\t\t<truncated>1</truncated>\n"
                 f"\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
                 f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n{part}\t</object>\n")
    return (f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{filename}</filename>\n\t<source>\n"
            "\t\t<database>The VOC2007 Database</database>\n\t\t<annotation>PASCAL VOC2007</annotation>\n"
            "\t\t<image>flickr</image>\n\t\t<flickrid>341012865</flickrid>\n\t</source>\n\t<owner>\n"
            "\t\t<flickrid>Fried Camels</flickrid>\n\t\t<name>Jinky the Fruit Bat</name>\n\t</owner>\n"
            f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objs}</annotation>\n")


def _make_voc_year(root: Path, images: dict[str, list], sets: dict[str, list[str]]) -> Path:
    for image_id, objects in images.items():
        _img(root / "JPEGImages" / f"{image_id}.jpg", 64, 48)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(f"{image_id}.jpg", 64, 48, objects))
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, ids in sets.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    return _make_voc_year(tmp_path / "VOCdevkit" / "VOC2007", {
        "000005": [("dog", (1, 1, 10, 20), 0), ("person", (5, 6, 64, 48), 1)],
        "000007": [("bird", (11, 21, 30, 40), 0)],
        "000009": [],
    }, {"trainval": ["000005", "000007"], "test": ["000009"], "dog_trainval": ["000005  1", "000007 -1"]})


def test_voc_reader_converts_one_based_inclusive_boxes(voc_root: Path) -> None:
    records, names = read_voc(voc_root, split="trainval")
    assert names == {1: "bird", 2: "dog", 3: "person"}
    assert [Path(r.image_path).name for r in records] == ["000005.jpg", "000007.jpg"]
    r0 = records[0]
    assert (r0.width, r0.height) == (64, 48)
    # xmin=1 is the first pixel -> x0 = 0; xmax=10 is the 10th pixel -> exclusive end 10.
    np.testing.assert_array_equal(r0.boxes, [[0, 0, 10, 20], [4, 5, 64, 48]])
    np.testing.assert_array_equal(r0.labels, [2, 3])
    np.testing.assert_array_equal(r0.extra["difficult"], [False, True])
    assert r0.boxes.dtype == np.float32 and r0.labels.dtype == np.int64
    # Class-specific set files ("<id> <flag>") read too; test split holds the image with no objects.
    assert len(read_voc(voc_root, split="dog_trainval")[0]) == 2
    (empty,), _ = read_voc(voc_root, split="test")
    assert empty.boxes.shape == (0, 4)


def test_voc_reader_options_and_errors(voc_root: Path) -> None:
    records, names = read_voc(voc_root, split=None, class_names=["person"], keep_difficult=False)
    assert names == {1: "person"} and len(records) == 3
    assert sum(len(r.boxes) for r in records) == 0  # the only person is difficult
    records, _ = read_voc(voc_root, split="trainval", class_names=["person", "dog"])
    np.testing.assert_array_equal(records[0].labels, [2, 1])
    with pytest.raises(FileNotFoundError, match="val.txt"):
        read_voc(voc_root, split="val")
    (voc_root / "Annotations" / "000007.xml").write_text("<annotation><object><name>x</name></object>")
    with pytest.raises(ValueError, match="000007.xml"):
        read_voc(voc_root, split="trainval")


def test_voc_writer_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "export"
    recs = [
        DetectionRecord(str(_img(out / "JPEGImages" / "s0.jpg", 64, 48)), 64, 48,
                        boxes=[[0, 0, 10, 20], [3.25, 4.5, 60.125, 47.9]], labels=[1, 2],
                        extra={"difficult": np.array([False, True])}),
        DetectionRecord(str(_img(out / "JPEGImages" / "s1.jpg", 32, 40)), 32, 40),
    ]
    write_voc(out, recs, ["bird", "face"], image_set="train")
    xml = (out / "Annotations" / "s0.xml").read_text()
    assert "<xmin>1</xmin>" in xml and "<xmax>10</xmax>" in xml  # 1-based inclusive on disk
    assert (out / "ImageSets" / "Main" / "train.txt").read_text().split() == ["s0", "s1"]
    back, names = read_voc(out, split="train", class_names=["bird", "face"])
    assert names == {1: "bird", 2: "face"}
    for a, b in zip(recs, back):
        assert Path(a.image_path).resolve() == Path(b.image_path).resolve()
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(back[0].extra["difficult"], [False, True])
    with pytest.raises(ValueError, match="not under"):
        write_voc(out, [DetectionRecord(str(tmp_path / "elsewhere.jpg"), 8, 8)], ["bird"])


def test_voc_background_paths_exclude_classes(tmp_path: Path) -> None:
    devkit = tmp_path / "VOCdevkit"
    _make_voc_year(devkit / "VOC2007", {
        "000001": [("dog", (1, 1, 9, 9), 0)],
        "000002": [("person", (1, 1, 9, 9), 1)],  # difficult persons exclude too
        "000003": [("car", (1, 1, 9, 9), 0), ("Person", (2, 2, 9, 9), 0)],
        "000004": [],
    }, {"trainval": ["000001", "000002"], "test": ["000003", "000004"]})
    _make_voc_year(devkit / "VOC2012", {"2008_000001": [("cat", (1, 1, 9, 9), 0)],
                                        "2008_000002": [("person", (1, 1, 9, 9), 0)]},
                   {"train": ["2008_000001", "2008_000002"], "trainval": ["2008_000001"]})
    paths = voc_background_paths(devkit, image_sets=("VOC2007/trainval", "VOC2007/test", "VOC2012/train"))
    assert [p.relative_to(devkit).as_posix() for p in paths] == [
        "VOC2007/JPEGImages/000001.jpg", "VOC2007/JPEGImages/000004.jpg", "VOC2012/JPEGImages/2008_000001.jpg"]
    # A plain set name applies to every year that has it; a single year folder works too.
    assert len(voc_background_paths(devkit, image_sets=("trainval",))) == 2
    assert len(voc_background_paths(devkit / "VOC2007", image_sets=("trainval",), exclude=())) == 2
    with pytest.raises(FileNotFoundError, match="'val'"):
        voc_background_paths(devkit, image_sets=("val",))


# ----------------------------------------------------------------------------- YOLO

@pytest.fixture()
def yolo_root(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    _img(root / "images" / "train" / "a.jpg", 100, 50)
    _img(root / "images" / "train" / "b.png", 40, 40)
    _img(root / "images" / "val" / "c.jpg", 20, 10)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.2 0.2\n\n1 0.1 0.2 0.5 0.2 0.3 0.4\n")  # last: a polygon
    (root / "labels" / "val" / "c.txt").write_text("")  # b has no label file: background image
    (root / "data.yaml").write_text(yaml.safe_dump(
        {"path": ".", "train": "images/train", "val": "images/val", "names": {0: "bird", 1: "cat"}}))
    return root


def test_yolo_reader_ultralytics_layout(yolo_root: Path) -> None:
    records, names = read_yolo(yolo_root / "data.yaml", split="train")
    assert names == {1: "bird", 2: "cat"}
    assert [Path(r.image_path).name for r in records] == ["a.jpg", "b.png"]
    a, b = records
    assert (a.width, a.height) == (100, 50)
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35], [0, 0, 20, 10], [10, 10, 50, 20]], atol=1e-4)
    np.testing.assert_array_equal(a.labels, [1, 2, 2])
    assert b.boxes.shape == (0, 4)
    assert len(read_yolo(yolo_root)[0]) == 3  # no split: every image under images/
    assert label_path(yolo_root / "images" / "val" / "c.jpg") == yolo_root / "labels" / "val" / "c.txt"


def test_yolo_reader_errors(yolo_root: Path) -> None:
    (yolo_root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n0 0.5 oops 0.2 0.4\n")
    with pytest.raises(ValueError, match=r"a\.txt:2"):
        read_yolo(yolo_root, split="train")
    (yolo_root / "labels" / "train" / "a.txt").write_text("5 0.5 0.5 0.2 0.4\n")
    with pytest.raises(ValueError, match=r"a\.txt:1: class id 5"):
        read_yolo(yolo_root, split="train")
    with pytest.raises(ValueError, match="no split 'test'"):
        read_yolo(yolo_root, split="test")


def test_yolo_writer_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    recs = [
        DetectionRecord(str(_img(out / "images" / "000000.jpg", 64, 48)), 64, 48,
                        boxes=[[0, 0, 10, 20], [3.25, 4.5, 60.125, 47.9]], labels=[2, 1]),
        DetectionRecord(str(_img(out / "images" / "000001.jpg", 32, 32)), 32, 32),
    ]
    write_yolo(out, recs, ["bird", "face"])
    assert (out / "labels" / "000000.txt").read_text().splitlines()[0].startswith("1 0.078125 ")
    assert (out / "labels" / "000001.txt").read_text() == ""
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "bird", 1: "face"} and "path" not in data
    back, names = read_yolo(out / "data.yaml", split="train")
    assert names == {1: "bird", 2: "face"}
    for a, b in zip(recs, back):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_array_equal(a.labels, b.labels)


# ----------------------------------------------------------------------------- FDDB

def test_ellipse_to_box_is_the_exact_extent() -> None:
    np.testing.assert_allclose(ellipse_to_box([10], [4], [0.0], [50], [60]), [[40, 56, 60, 64]])
    np.testing.assert_allclose(ellipse_to_box([10], [4], [math.pi / 2], [50], [60]), [[46, 50, 54, 70]], atol=1e-9)
    a, b, t, cx, cy = 30.0, 12.0, 0.7, 100.0, 80.0
    s = np.linspace(0, 2 * np.pi, 200001)
    xs = cx + a * np.cos(s) * np.cos(t) - b * np.sin(s) * np.sin(t)
    ys = cy + a * np.cos(s) * np.sin(t) + b * np.sin(s) * np.cos(t)
    np.testing.assert_allclose(ellipse_to_box([a], [b], [t], [cx], [cy])[0],
                               [xs.min(), ys.min(), xs.max(), ys.max()], atol=1e-6)


def _write_fddb(root: Path) -> None:
    folds = root / "FDDB-folds"
    folds.mkdir(parents=True)
    for fold in range(1, 11):
        name = f"2002/08/{fold:02d}/big/img_{fold}"
        _img(root / "originalPics" / f"{name}.jpg", 80, 60, seed=fold)
        faces = ["20.000000 10.000000 0.000000 40.000000 30.000000  1"]
        if fold == 1:  # a second, rotated face sticking out of the left edge: clipped
            faces.append("15.5 8.25 -1.570796 5.000000 30.000000  1")
        (folds / f"FDDB-fold-{fold:02d}-ellipseList.txt").write_text(
            f"{name}\n{len(faces)}\n" + "".join(f + "\n" for f in faces))
        (folds / f"FDDB-fold-{fold:02d}.txt").write_text(f"{name}\n")


def test_fddb_reader_folds_and_ellipses(tmp_path: Path) -> None:
    _write_fddb(tmp_path)
    train, names = read_fddb(tmp_path, split="train")
    assert names == {1: "face"}
    assert [r.extra["fold"] for r in train] == [1, 2, 3, 4, 5]
    assert [r.extra["fold"] for r in read_fddb(tmp_path, split="val")[0]] == [6, 7]
    assert [r.extra["fold"] for r in read_fddb(tmp_path, split="test")[0]] == [8, 9, 10]
    assert [r.extra["fold"] for r in read_fddb(tmp_path, split=[3, 9])[0]] == [3, 9]
    r = train[0]
    assert r.image_path.endswith("originalPics/2002/08/01/big/img_1.jpg") and (r.width, r.height) == (80, 60)
    np.testing.assert_allclose(r.boxes, [[20, 20, 60, 40], [0, 14.5, 13.25, 45.5]], atol=1e-4)
    assert r.extra["ellipses"].shape == (2, 5)
    np.testing.assert_array_equal(r.labels, [1, 1])
    with pytest.raises(ValueError, match="unknown FDDB split"):
        read_fddb(tmp_path, split="bogus")


def test_fddb_reader_errors(tmp_path: Path) -> None:
    _write_fddb(tmp_path)
    path = tmp_path / "FDDB-folds" / "FDDB-fold-02-ellipseList.txt"
    path.write_text("2002/08/02/big/img_2\n2\n20 10 0 40 30 1\n")
    with pytest.raises(ValueError, match=r"fold-02-ellipseList.txt:2: face count 2"):
        read_fddb(tmp_path, split="train")
    path.write_text("2002/08/02/big/img_2\n1\n20 10 zero 40 30 1\n")
    with pytest.raises(ValueError, match=r"fold-02-ellipseList.txt:3"):
        read_fddb(tmp_path, split="train")
    (tmp_path / "FDDB-folds" / "FDDB-fold-07-ellipseList.txt").unlink()
    with pytest.raises(FileNotFoundError, match="FDDB-fold-07-ellipseList.txt"):
        read_fddb(tmp_path, split="val")
    (tmp_path / "originalPics" / "2002" / "08" / "01" / "big" / "img_1.jpg").unlink()
    records, _ = read_fddb(tmp_path, split=[1])  # size unknown: the up-front check names the file
    assert (records[0].width, records[0].height) == (0, 0)
    with pytest.raises(UserError, match="1 of 1 images cannot be used") as e:
        check_records(records, "FDDB fold 1")
    assert e.value.details[0].endswith("img_1.jpg: file not found")


# ----------------------------------------------------------------------------- CUB-200-2011

def _write_cub(root: Path) -> None:
    images = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
              "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
              "002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg",
              "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
              "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg"]
    for k, rel in enumerate(images):
        _img(root / "images" / rel, 60 + k, 40, seed=k)
    (root / "images.txt").write_text("".join(f"{k + 1} {rel}\n" for k, rel in enumerate(images)))
    (root / "bounding_boxes.txt").write_text(
        "1 10.0 5.0 30.0 20.0\n2 0.0 0.0 61.0 40.0\n3 2.5 3.5 10.25 4.0\n4 1.0 1.0 5.0 5.0\n5 50.0 30.0 40.0 40.0\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n4 1\n5 0\n")
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n4 2\n5 2\n")


def test_cub_reader_official_split(tmp_path: Path) -> None:
    _write_cub(tmp_path)
    train, names = read_dataset("cub", tmp_path, split="train")
    assert names == {1: "bird"}
    assert [r.image_id for r in train] == [1, 3, 4]
    np.testing.assert_array_equal(train[0].boxes, [[10, 5, 40, 25]])
    np.testing.assert_allclose(train[1].boxes, [[2.5, 3.5, 12.75, 7.5]])
    assert (train[1].width, train[1].height) == (62, 40)
    test, _ = read_dataset("cub", tmp_path, split="test")
    assert [r.image_id for r in test] == [2, 5]
    np.testing.assert_array_equal(test[0].boxes, [[0, 0, 61, 40]])  # image 2 is 61 px wide
    np.testing.assert_array_equal(test[1].boxes, [[50, 30, 64, 40]])  # clipped to 64x40
    species, names = read_dataset("cub", tmp_path, split="all", one_class=False)
    assert names == {1: "Black_footed_Albatross", 2: "Laysan_Albatross"}
    assert [int(r.labels[0]) for r in species] == [1, 1, 2, 2, 2]
    assert [r.extra["species"] for r in species] == [1, 1, 2, 2, 2]


def test_cub_reader_paper_style_split(tmp_path: Path) -> None:
    _write_cub(tmp_path)
    (tmp_path / "my_test.txt").write_text("5\n001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg\n")
    kw = dict(val_size=1, seed=3, test_ids=tmp_path / "my_test.txt")
    parts = {s: [r.image_id for r in read_dataset("cub", tmp_path, split=s, **kw)[0]]
             for s in ("train", "val", "test", "trainval")}
    assert parts["test"] == [1, 5] and len(parts["val"]) == 1 and len(parts["train"]) == 2
    assert sorted(parts["train"] + parts["val"]) == parts["trainval"] == [2, 3, 4]
    assert parts == {s: [r.image_id for r in read_dataset("cub", tmp_path, split=s, **kw)[0]] for s in parts}
    (tmp_path / "bounding_boxes.txt").write_text("1 10.0 5.0 30.0\n")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt:1"):
        read_dataset("cub", tmp_path)


# ----------------------------------------------------------------------------- Stanford Cars

def _cars_struct(rows: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array laid out like the devkit's (uint8/uint16 scalars, char fname)."""
    fields = list(rows[0])
    arr = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for k, row in enumerate(rows):
        arr[0, k] = tuple(np.array([[v]], np.uint16 if v > 255 else np.uint8) if isinstance(v, int)
                          else np.array([v]) for v in row.values())
    return arr


def _write_cars(root: Path) -> None:
    _img(root / "cars_train" / "00001.jpg", 300, 200)
    _img(root / "cars_train" / "00002.jpg", 50, 40)
    _img(root / "cars_train" / "00003.jpg", 50, 40)
    _img(root / "cars_test" / "00001.jpg", 64, 64)
    train = [dict(bbox_x1=1, bbox_y1=2, bbox_x2=290, bbox_y2=200, **{"class": 2}, fname="00001.jpg"),
             dict(bbox_x1=10, bbox_y1=5, bbox_x2=40, bbox_y2=30, **{"class": 1}, fname="00002.jpg"),
             dict(bbox_x1=3, bbox_y1=3, bbox_x2=9, bbox_y2=9, **{"class": 1}, fname="00003.jpg")]
    (root / "devkit").mkdir(parents=True)
    savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _cars_struct(train)})
    savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _cars_struct(
        [dict(bbox_x1=5, bbox_y1=6, bbox_x2=64, bbox_y2=70, **{"class": 2}, fname="00001.jpg")])})
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Acura RL Sedan 2012"
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})


def test_cars_reader_devkit_mat(tmp_path: Path) -> None:
    _write_cars(tmp_path)
    train, names = read_dataset("cars", tmp_path, split="train")
    assert names == {1: "car"} and len(train) == 3
    # 1-based inclusive (x1=1 .. x2=290) -> exclusive-end (0 .. 290); uint16 values survive.
    np.testing.assert_array_equal(train[0].boxes, [[0, 1, 290, 200]])
    np.testing.assert_array_equal(train[1].boxes, [[9, 4, 40, 30]])
    assert (train[0].width, train[0].height) == (300, 200) and train[0].extra["car_class"] == 2
    (test,), _ = read_dataset("cars", tmp_path, split="test")
    assert test.image_path.endswith("cars_test/00001.jpg")
    np.testing.assert_array_equal(test.boxes, [[4, 5, 64, 64]])  # clipped to the 64x64 image
    models, names = read_dataset("cars", tmp_path, split="all", one_class=False)
    assert names == {1: "AM General Hummer SUV 2000", 2: "Acura RL Sedan 2012"}
    assert [int(r.labels[0]) for r in models] == [2, 1, 1, 2]
    val = read_dataset("cars", tmp_path, split="val", val_size=1, seed=0)[0]
    rest = read_dataset("cars", tmp_path, split="train", val_size=1, seed=0)[0]
    assert len(val) == 1 and len(rest) == 2
    assert {r.image_path for r in val} | {r.image_path for r in rest} == {r.image_path for r in train}


def test_cars_reader_all_in_one_mat_and_errors(tmp_path: Path) -> None:
    _img(tmp_path / "car_ims" / "000001.jpg", 40, 30)
    _img(tmp_path / "car_ims" / "000002.jpg", 40, 30)
    rows = [dict(relative_im_path="car_ims/000001.jpg", bbox_x1=1, bbox_y1=1, bbox_x2=40, bbox_y2=30,
                 **{"class": 1}, test=0),
            dict(relative_im_path="car_ims/000002.jpg", bbox_x1=2, bbox_y1=2, bbox_x2=20, bbox_y2=20,
                 **{"class": 1}, test=1)]
    savemat(tmp_path / "cars_annos.mat", {"annotations": _cars_struct(rows)})
    (train,), _ = read_dataset("cars", tmp_path, split="train")
    np.testing.assert_array_equal(train.boxes, [[0, 0, 40, 30]])
    assert [Path(r.image_path).name for r in read_dataset("cars", tmp_path, split="test")[0]] == ["000002.jpg"]
    with pytest.raises(FileNotFoundError, match="cars_train_annos.mat"):
        read_dataset("cars", tmp_path / "car_ims")


# ----------------------------------------------------------------------------- WIDER Face

_WIDER_VAL = """0--Parade/0_Parade_marchingband_1_465.jpg
3
10 5 20 30 2 0 0 0 1 0 
40 40 8 6 2 0 1 0 2 1 
0 0 0 0 2 0 0 1 0 0 
0--Parade/0_Parade_Parade_0_904.jpg
0
0 0 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_Handshaking_1_35.jpg
1
60 2 30 30 0 1 0 1 0 0 
"""


def _cell(items: list) -> np.ndarray:
    arr = np.empty((len(items), 1), dtype=object)
    for k, v in enumerate(items):
        arr[k, 0] = v
    return arr


def _write_wider(root: Path) -> Path:
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(_WIDER_VAL)
    (root / "wider_face_split" / "wider_face_test_filelist.txt").write_text("0--Parade/0_Parade_marchingband_1_9.jpg\n")
    for k, line in enumerate(_WIDER_VAL.splitlines()):
        if line.endswith(".jpg"):
            _img(root / "WIDER_val" / "images" / line, 80, 60, seed=k)
    _img(root / "WIDER_test" / "images" / "0--Parade" / "0_Parade_marchingband_1_9.jpg", 30, 20)
    gt = root / "eval_tools" / "ground_truth"
    gt.mkdir(parents=True)
    events = _cell(["0--Parade", "1--Handshaking"])
    files = _cell([_cell(["0_Parade_marchingband_1_465", "0_Parade_Parade_0_904"]),
                   _cell(["1_Handshaking_Handshaking_1_35"])])
    idx = lambda *v: np.array(v, np.float64).reshape(-1, 1) if v else np.zeros((0, 0))  # noqa: E731
    levels = {"easy": [[idx(1), idx()], [idx()]], "medium": [[idx(1), idx()], [idx(1)]],
              "hard": [[idx(1, 2), idx()], [idx(1)]]}
    for level, gts in levels.items():
        content = {"gt_list": _cell([_cell(g) for g in gts])}
        if level != "hard":  # hard takes event/file lists from wider_face_val.mat
            content.update(event_list=events, file_list=files)
        savemat(gt / f"wider_{level}_val.mat", content)
    savemat(gt / "wider_face_val.mat", {"event_list": events, "file_list": files})
    return gt


def test_wider_reader_gt_txt(tmp_path: Path) -> None:
    _write_wider(tmp_path)
    records, names = read_wider(tmp_path, split="val")
    assert names == {1: "face"} and len(records) == 3
    r0, r1, r2 = records
    # The third face of r0 has zero size: dropped; the count-0 image keeps its dummy line out.
    np.testing.assert_array_equal(r0.boxes, [[10, 5, 30, 35], [40, 40, 48, 46]])
    np.testing.assert_array_equal(r0.extra["occlusion"], [1, 2])
    np.testing.assert_array_equal(r0.extra["pose"], [0, 1])
    np.testing.assert_array_equal(r0.extra["face_index"], [1, 2])
    assert r1.boxes.shape == (0, 4) and r1.labels.shape == (0,)
    np.testing.assert_array_equal(r2.boxes, [[60, 2, 80, 32]])  # clipped to the 80 px width
    assert len(read_wider(tmp_path, split="val", drop_invalid=True)[0][2].boxes) == 0
    (test,), _ = read_wider(tmp_path, split="test")
    assert test.boxes.shape == (0, 4) and (test.width, test.height) == (30, 20)
    (tmp_path / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text(_WIDER_VAL.replace("3\n10 5", "4\n10 5"))
    with pytest.raises(ValueError, match=r"wider_face_val_bbx_gt.txt:6: expected a face line.*count 4 on line 2"):
        read_wider(tmp_path, split="val")


def test_wider_easy_medium_hard_from_official_mat(tmp_path: Path) -> None:
    gt = _write_wider(tmp_path)
    assert read_wider_eval_mat(gt / "wider_hard_val.mat") == {
        "0--Parade/0_Parade_marchingband_1_465": [1, 2], "0--Parade/0_Parade_Parade_0_904": [],
        "1--Handshaking/1_Handshaking_Handshaking_1_35": [1]}
    r0, r1, r2 = read_dataset("wider", tmp_path, split="val", eval_dir=gt)[0]
    np.testing.assert_array_equal(r0.extra["easy"], [True, False])
    np.testing.assert_array_equal(r0.extra["hard"], [True, True])
    np.testing.assert_array_equal(wider_ignore(r0, "medium"), [False, True])
    assert r2.extra["easy"].tolist() == [False] and r2.extra["medium"].tolist() == [True]
    with pytest.raises(ValueError, match="no 'easy' flags"):
        wider_ignore(read_wider(tmp_path, split="val")[0][0], "easy")


# ----------------------------------------------------------------------------- registry, COCO

def test_registry_lists_formats_and_rejects_unknown(tmp_path: Path) -> None:
    assert set(list_formats()) == {"coco", "voc", "yolo", "fddb", "cub", "cars", "wider"}
    with pytest.raises(ValueError, match="available: coco, voc"):
        read_dataset("kitti", tmp_path)
    with pytest.raises(TypeError, match="options"):
        read_dataset("fddb", tmp_path, fold=3)
    with pytest.raises(FileNotFoundError, match="COCO file not found"):
        read_dataset("coco", tmp_path / "missing.json")


def test_registry_coco_round_trip_and_dataset_loading(tmp_path: Path) -> None:
    img = _img(tmp_path / "imgs" / "a.jpg", 64, 48)
    rec = DetectionRecord(str(img), 64, 48, boxes=[[5, 7, 6, 8], [0, 0, 64, 48]], labels=[1, 2])
    write_coco(tmp_path / "ann.json", [rec], {1: "bird", 2: "face"}, image_root=tmp_path)
    (back,), names = read_dataset("coco", tmp_path / "ann.json", split=None)  # unset options ignored
    assert names == {1: "bird", 2: "face"}
    np.testing.assert_array_equal(back.boxes, rec.boxes)
    image, target = DetectionDataset([back], resize=32)[0]
    assert tuple(image.shape) == (3, 32, 32)
    np.testing.assert_allclose(target["boxes"].numpy(), [[2.5, 14 / 3, 3, 16 / 3], [0, 0, 32, 32]], rtol=1e-5)
