"""A bounded fuzz of the dataset readers: random byte flips, cuts and structure-aware mutations
(JSON values, YOLO tokens, VOC XML text) of tiny COCO / YOLO / VOC datasets, a fixed number of
cases from a fixed seed (seconds in all).

Every case must end in what a command does with it: a clear error (an exception of the CLI's
user-error set, one line, naming a file of the dataset), or records whose bad images are counted
and left out; and the boxes that reach training must be finite, of positive size, inside their
image, with labels in 1..K. Never a traceback, never a box off its image.
"""

from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from synthdet.cli import _USER_ERRORS, error_message
from synthdet.datasets import DetectionDataset, read_dataset
from synthdet.datasets.check import check_records
from synthdet.utils.image import write_image

CASES = 120  # per format
SEED = 23
WEIRD = [None, -1, 0, 1, 0.5, 1e308, -1e308, float("nan"), float("inf"), "x", "", [], {}, True, 10**30, [1, 2],
         [0, 0, 0, 0], [-5, -5, 1e9, 1e9]]
WEIRD_TEXT = ["-1", "0", "nan", "inf", "-inf", "1e308", "abc", "", "3.5", "99999999", "1e-320", "0x10"]


def _images(folder: Path, names: list[str], rng: np.random.Generator) -> None:
    for name in names:
        write_image(folder / name, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


def _coco(root: Path, rng: np.random.Generator) -> tuple[str, Path, dict]:
    _images(root, ["a.jpg", "b.png"], rng)
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24},
                       {"id": 2, "file_name": "b.png", "width": 32, "height": 24}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8]},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [20, 10, 12, 14], "iscrowd": 0},
                            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 32, 24]}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (root / "ann.json").write_text(json.dumps(data))
    return "coco", root / "ann.json", {}


def _yolo(root: Path, rng: np.random.Generator) -> tuple[str, Path, dict]:
    _images(root / "images", ["a.jpg", "b.png"], rng)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.2 0.2\n")
    (root / "labels" / "b.txt").write_text("1 0.9 0.9 0.3 0.3\n0 0.2 0.2 0.4 0.2 0.3 0.6\n")
    (root / "data.yaml").write_text("names: [cat, dog]\ntrain: images\n")
    return "yolo", root, {}


def _voc(root: Path, rng: np.random.Generator) -> tuple[str, Path, dict]:
    _images(root / "JPEGImages", ["a.jpg", "b.jpg"], rng)
    for stem, objs in (("a", [("cat", 3, 4, 12, 20, 0)]), ("b", [("dog", 1, 1, 32, 24, 1), ("cat", 10, 5, 20, 9, 0)])):
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{stem}.jpg"
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", 32), ("height", 24), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for name, x0, y0, x1, y1, diff in objs:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = name
            ET.SubElement(obj, "difficult").text = str(diff)
            bnd = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
                ET.SubElement(bnd, tag).text = str(v)
        (root / "Annotations").mkdir(exist_ok=True)
        ET.ElementTree(ann).write(root / "Annotations" / f"{stem}.xml")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return "voc", root, {"split": "train"}


# --------------------------------------------------------------------------- mutations


def _flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    return bytes(b)


def _cut(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _mutate_json(data: bytes, rng: np.random.Generator) -> bytes:
    obj = json.loads(data)
    paths = [p for p in _json_paths(obj) if p]
    path = paths[int(rng.integers(len(paths)))]
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    choice = rng.random()
    if choice < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif choice < 0.25 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[path[-1]]))  # a duplicate entry
    else:
        parent[path[-1]] = copy.deepcopy(WEIRD[int(rng.integers(len(WEIRD)))])
    return json.dumps(obj).encode()


def _mutate_tokens(data: bytes, rng: np.random.Generator) -> bytes:
    lines = [line.split() for line in data.decode().splitlines()] or [[]]
    line = lines[int(rng.integers(len(lines)))]
    r = rng.random()
    if r < 0.2:
        line.append(WEIRD_TEXT[int(rng.integers(len(WEIRD_TEXT)))])
    elif r < 0.35 and line:
        line.pop(int(rng.integers(len(line))))
    elif line:
        line[int(rng.integers(len(line)))] = WEIRD_TEXT[int(rng.integers(len(WEIRD_TEXT)))] or "x"
    return ("\n".join(" ".join(t) for t in lines) + "\n").encode()


def _mutate_xml(data: bytes, rng: np.random.Generator) -> bytes:
    root = ET.fromstring(data)
    elems = list(root.iter())[1:]
    e = elems[int(rng.integers(len(elems)))]
    if rng.random() < 0.2:
        for parent in root.iter():
            if e in list(parent):
                parent.remove(e)
                break
    else:
        e.text = WEIRD_TEXT[int(rng.integers(len(WEIRD_TEXT)))]
    return ET.tostring(root)


def _mutation(fmt: str, target: Path, rng: np.random.Generator):
    suffix = target.suffix
    smart = {".json": _mutate_json, ".txt": _mutate_tokens, ".xml": _mutate_xml, ".yaml": _mutate_tokens}.get(suffix)
    options = [_flip_bytes, _cut] + ([smart, smart] if smart else [])
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------- the invariants


def _check_outcome(fmt: str, path: Path, kwargs: dict, root: Path, what: str) -> str:
    try:
        records, names = read_dataset(fmt, path, **kwargs)
        records, bad = check_records(records, str(path), skip_bad=True, progress=False)
        k = max(names) if names else 0
        for i in range(len(records)):
            image, target = DetectionDataset(records)[i]
            h, w = image.shape[1:]
            boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
            assert np.isfinite(boxes).all(), what
            assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all(), what
            assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= w + 1e-4).all() and (boxes[:, 3] <= h + 1e-4).all(), what
            assert ((labels >= 1) & ((labels <= k) if k else True)).all(), what
        return f"ok, {len(bad)} skipped"
    except _USER_ERRORS as e:
        msg = error_message(e)
        assert "\n" not in msg and msg, what
        named = [p for p in root.rglob("*") if p.name in msg] or ([root] if str(root) in msg else [])
        assert named, f"{what}: the message names no file of the dataset: {msg!r}"
        return type(e).__name__


@pytest.mark.parametrize("build", [_coco, _yolo, _voc], ids=["coco", "yolo", "voc"])
def test_readers_survive_random_mutations(tmp_path, build):
    rng = np.random.default_rng(SEED)
    pristine = tmp_path / "pristine"
    fmt, path, kwargs = build(pristine, rng)
    path = Path(str(path).replace(str(pristine), str(tmp_path / "case")))
    files = sorted(p.relative_to(pristine) for p in pristine.rglob("*") if p.is_file())
    outcomes: dict[str, int] = {}
    for case in range(CASES):
        work = tmp_path / "case"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        target = work / files[int(rng.integers(len(files)))]
        mutate = _mutation(fmt, target, rng)
        try:
            target.write_bytes(mutate(target.read_bytes(), rng))
        except (ValueError, UnicodeDecodeError, ET.ParseError):  # the structure-aware one needs a parsable file
            target.write_bytes(_flip_bytes(target.read_bytes(), rng))
        what = f"case {case}: {mutate.__name__} of {target.relative_to(work)}"
        outcome = _check_outcome(fmt, path, kwargs, work, what)
        key = "ok" if outcome.startswith("ok") else outcome
        outcomes[key] = outcomes.get(key, 0) + 1
    assert sum(outcomes.values()) == CASES and "ok" in outcomes and len(outcomes) > 1  # both outcomes reached
