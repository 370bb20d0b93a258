import dataclasses
import os
from typing import Optional

import cv2
import numpy as np
import pytest

from synthdet.datasets.coco import read_coco, write_coco
from synthdet.datasets.records import DetectionDataset, DetectionRecord
from synthdet.utils.config import ConfigError, from_dict, to_dict
from synthdet.utils.files import atomic_write_text, list_images
from synthdet.utils.image import BadImageError, read_image, read_image_rgba, write_image


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int = 1
    r: tuple[float, float] = (0.5, 2.0)


@dataclasses.dataclass(frozen=True)
class _Outer:
    name: str = "x"
    inner: _Inner = _Inner()
    opt: Optional[int] = None


def test_from_dict_nested_and_roundtrip():
    cfg = from_dict(_Outer, {"name": "y", "inner": {"a": 3, "r": [1, 2]}, "opt": 4})
    assert cfg == _Outer("y", _Inner(3, (1.0, 2.0)), 4)
    assert from_dict(_Outer, to_dict(cfg)) == cfg


def test_from_dict_rejects_unknown_key_with_suggestion():
    with pytest.raises(ConfigError, match=r"config.inner: unknown key\(s\) 'aa' \(did you mean 'a'\?\)"):
        from_dict(_Outer, {"inner": {"aa": 1}})


def test_from_dict_type_errors_name_the_key():
    with pytest.raises(ConfigError, match="config.inner.a: expected an integer"):
        from_dict(_Outer, {"inner": {"a": "three"}})
    with pytest.raises(ConfigError, match="config.inner.r: expected 2 values"):
        from_dict(_Outer, {"inner": {"r": [1, 2, 3]}})


@pytest.mark.parametrize(
    "arr",
    [
        np.full((9, 7), 200, np.uint8),  # grey
        np.full((9, 7, 4), 200, np.uint8),  # RGBA
        np.full((9, 7, 3), 200 * 257, np.uint16),  # 16-bit
    ],
)
def test_read_image_converts_modes(tmp_path, arr):
    p = tmp_path / "img.png"
    cv2.imwrite(str(p), arr)
    rgb = read_image(p)
    assert rgb.shape == (9, 7, 3) and rgb.dtype == np.uint8
    assert abs(int(rgb[0, 0, 0]) - 200) <= 1


def test_read_image_rgba_keeps_alpha_and_channel_order(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = 128
    p = tmp_path / "a.png"
    write_image(p, rgba)
    rgb, alpha = read_image_rgba(p)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert alpha is not None and np.allclose(alpha, 128 / 255)


def test_bad_images_raise_naming_the_file(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(BadImageError, match="corrupt.jpg"):
        read_image(bad)
    tiny = tmp_path / "tiny.png"
    write_image(tiny, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(BadImageError, match="too small"):
        read_image(tiny, min_size=8)
    with pytest.raises(BadImageError, match="file not found"):
        read_image(tmp_path / "missing.png")


def test_atomic_write_leaves_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "sub" / "f.txt", "hello")
    assert (tmp_path / "sub" / "f.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "sub" / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


def test_coco_roundtrip_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    img = np.zeros((20, 30, 3), np.uint8)
    write_image(tmp_path / "images" / "0.png", img)
    rec = DetectionRecord(str(tmp_path / "images" / "0.png"), 30, 20,
                          boxes=[[5, 7, 6, 8], [0, 0, 30, 20]], labels=[1, 2], image_id=1)
    mask = np.zeros((20, 30), np.uint8)
    mask[7, 5] = 1
    write_coco(tmp_path / "ann.json", [rec], {1: "a", 2: "b"}, image_root=tmp_path,
               masks=[[mask, np.ones((20, 30), np.uint8)]])
    coco = COCO(str(tmp_path / "ann.json"))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["bbox"] for a in anns] == [[5, 7, 1, 1], [0, 0, 30, 20]]
    assert coco.annToMask(anns[0]).sum() == 1
    records, names = read_coco(tmp_path / "ann.json")
    assert names == {1: "a", 2: "b"}
    np.testing.assert_array_equal(records[0].boxes, rec.boxes)
    np.testing.assert_array_equal(records[0].labels, rec.labels)
    image, target = DetectionDataset(records, resize=10)[0]
    assert image.shape == (3, 10, 10)
    np.testing.assert_allclose(target["boxes"][1].numpy(), [0, 0, 10, 10])


def test_dataset_target_carries_difficult_flags_and_coco_ids_stay_unique(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    rec = DetectionRecord(str(tmp_path / "a.png"), 8, 8, boxes=[[0, 0, 4, 4], [4, 4, 8, 8]], labels=[1, 1],
                          extra={"difficult": [False, True]})
    _, target = DetectionDataset([rec])[0]
    assert target["difficult"].tolist() == [False, True]
    coco = __import__("synthdet.datasets.coco", fromlist=["records_to_coco"]).records_to_coco(
        [rec.replace(image_id=0), rec.replace(image_id=1)], {1: "a"})
    assert [im["id"] for im in coco["images"]] == [1, 2]  # id 0 would have collided with id 1
