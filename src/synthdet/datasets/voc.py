"""Pascal VOC: reader, writer, and VOC as a background source with class exclusion.

On-disk layout of one VOC year (``VOCdevkit/VOC2007``)::

    Annotations/<id>.xml        one XML per image (size, objects with name/difficult/bndbox)
    JPEGImages/<id>.jpg
    ImageSets/Main/<set>.txt    one image id per line (train, val, trainval, test)

VOC ``bndbox`` coordinates are 1-based pixel indices with an inclusive end (``xmin=1`` is the
first column), so our exclusive-end XYXY box is ``(xmin - 1, ymin - 1, xmax, ymax)``.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils.files import atomic_write_text
from ._common import clean_boxes, image_sizes, log_summary, read_lines, require_dir, require_file
from .records import DetectionRecord

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def _parse_xml(path: Path) -> ET.Element:
    require_file(path, "VOC annotation")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        line = e.position[0] if e.position else "?"
        raise ValueError(f"{path}:{line}: malformed XML ({e})") from None


def _text(elem: ET.Element, tag: str, path: Path, where: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{path}: {where} has no <{tag}>")
    return child.text.strip()


def _number(elem: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(elem, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}: {where} <{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}: {where} <{tag}> is not a finite number: {text!r}")
    return value


def _parse_objects(root: ET.Element, path: Path) -> list[tuple[str, list[float], bool, bool]]:
    """``(name, [xmin, ymin, xmax, ymax] as written, difficult, truncated)`` per ``<object>``."""
    out = []
    for k, obj in enumerate(root.findall("object"), 1):
        where = f"object {k}"
        name = _text(obj, "name", path, where)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{path}: {where} ({name}) has no <bndbox>")
        coords = [_number(bnd, t, path, f"{where} ({name}) bndbox") for t in ("xmin", "ymin", "xmax", "ymax")]
        flags = [_number(obj, tag, path, f"{where} ({name})") != 0 if (obj.findtext(tag) or "").strip() else False
                 for tag in ("difficult", "truncated")]
        out.append((name, coords, flags[0], flags[1]))
    return out


def _size(xml: ET.Element, path: Path) -> tuple[int, int]:
    """``(width, height)`` of ``<size>``; ``(0, 0)`` when it is missing or 0 (read from the image)."""
    size = xml.find("size")
    if size is None or not all((size.findtext(t) or "").strip() for t in ("width", "height")):
        return 0, 0
    w, h = (_number(size, t, path, "<size>") for t in ("width", "height"))
    if not (w >= 0 and h >= 0 and float(w).is_integer() and float(h).is_integer()):
        raise ValueError(f"{path}: <size> width and height must be non-negative integers, got {w} x {h}")
    return int(w), int(h)


def _image_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        ann = require_dir(root / "Annotations", "VOC Annotations folder")
        return sorted(p.relative_to(ann).with_suffix("").as_posix() for p in ann.rglob("*.xml"))
    set_file = root / "ImageSets" / "Main" / f"{split}.txt"
    # Class-specific set files ("bird_train.txt") hold "<id> <flag>"; the first token is the id.
    return [line.split()[0] for _, line in read_lines(set_file, f"VOC image set '{split}'")]


def read_voc(root: str | os.PathLike, split: str | None = "trainval",
             class_names: Sequence[str] | None = None,
             keep_difficult: bool = True) -> tuple[list[DetectionRecord], dict[int, str]]:
    """Read one VOC year folder (the one holding ``Annotations/``) into records.

    ``split``: an ``ImageSets/Main/<split>.txt`` name, or None for every XML in ``Annotations``.
    ``class_names``: label order (label = index + 1); objects of other classes are dropped and
    counted. Default: the sorted class names found in the annotations (for full VOC that is the
    usual 20-class order). ``keep_difficult=False`` drops ``difficult`` objects; otherwise they are
    kept and flagged in ``extra["difficult"]`` (bool ``[N]``, with ``extra["truncated"]``).
    Boxes: XYXY exclusive end, ``(xmin - 1, ymin - 1, xmax, ymax)``.
    """
    root = Path(root)
    require_dir(root, "VOC root")
    ids = _image_ids(root, split)
    parsed = []
    for image_id in ids:
        path = root / "Annotations" / f"{image_id}.xml"
        xml = _parse_xml(path)
        parsed.append((image_id, path, xml, _parse_objects(xml, path)))
    if class_names is None:
        class_names = sorted({obj[0] for *_, objs in parsed for obj in objs})
    index = {name: k + 1 for k, name in enumerate(class_names)}
    records, dropped, skipped_objects = [], 0, 0
    for n, (image_id, path, xml, objs) in enumerate(parsed, 1):
        filename = xml.findtext("filename", default="").strip()
        image_path = root / "JPEGImages" / (filename if Path(filename).suffix else f"{image_id}.jpg")
        w, h = _size(xml, path)
        if w <= 0 or h <= 0:  # some VOC-style exports leave <size> out or at 0; (0, 0): unreadable
            w, h = image_sizes([image_path], desc="VOC image sizes")[0]
        kept = [o for o in objs if o[0] in index and (keep_difficult or not o[2])]
        skipped_objects += sum(o[0] not in index for o in objs)
        boxes = np.array([[c[0] - 1, c[1] - 1, c[2], c[3]] for _, c, _, _ in kept], np.float64).reshape(-1, 4)
        per_box = {
            "labels": np.array([index[o[0]] for o in kept], np.int64),
            "difficult": np.array([o[2] for o in kept], bool),
            "truncated": np.array([o[3] for o in kept], bool),
        }
        boxes, keep, per_box = clean_boxes(boxes, w, h, str(path), per_box)
        dropped += int((~keep).sum())
        records.append(DetectionRecord(
            image_path=str(image_path), width=w, height=h, boxes=boxes, labels=per_box.pop("labels"),
            image_id=n, extra={"voc_id": image_id, **per_box},
        ))
    if skipped_objects:
        logger.info("VOC %s: %d objects of classes outside %s ignored", root, skipped_objects, list(class_names))
    log_summary(f"VOC {root} ({split or 'all'})", records, dropped)
    return records, {k + 1: name for k, name in enumerate(class_names)}


def _fmt_coord(v: float) -> str:
    """Integers as VOC writes them ("12"), other values as the shortest exact float text."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_voc(out_dir: str | os.PathLike, records: Sequence[DetectionRecord], class_names: Sequence[str],
              image_set: str = "train") -> None:
    """Write ``Annotations/<id>.xml`` and ``ImageSets/Main/<image_set>.txt`` for ``records``.

    Images must already be under ``out_dir/JPEGImages``; an image's id is its path relative to
    that folder without the suffix. Boxes (XYXY exclusive end) become 1-based inclusive
    ``bndbox`` values ``(x0 + 1, y0 + 1, x1, y1)``; ``extra["difficult"]`` is written when present.
    Files are written atomically; an existing set file of the same name is replaced.
    """
    out_dir = Path(out_dir)
    images_dir = out_dir / "JPEGImages"
    ids = []
    for rec in records:
        try:
            rel = Path(rec.image_path).resolve().relative_to(images_dir.resolve())
        except ValueError:
            raise ValueError(f"{rec.image_path}: not under {images_dir} (write_voc expects the images there)") from None
        image_id = rel.with_suffix("").as_posix()
        ids.append(image_id)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = out_dir.name
        ET.SubElement(ann, "filename").text = rel.as_posix()
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", rec.width), ("height", rec.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(v))
        ET.SubElement(ann, "segmented").text = "0"
        difficult = np.asarray(rec.extra.get("difficult", np.zeros(len(rec.boxes), bool)), bool)
        for j, (box, lab) in enumerate(zip(rec.boxes, rec.labels)):
            if not 1 <= int(lab) <= len(class_names):
                raise ValueError(f"{rec.image_path}: label {int(lab)} outside 1..{len(class_names)}")
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = class_names[int(lab) - 1]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = str(int(bool(difficult[j]))) if j < len(difficult) else "0"
            bnd = ET.SubElement(obj, "bndbox")
            x0, y0, x1, y1 = (float(v) for v in box)
            for tag, v in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
                ET.SubElement(bnd, tag).text = _fmt_coord(v)
        ET.indent(ann)
        atomic_write_text(out_dir / "Annotations" / f"{image_id}.xml", ET.tostring(ann, encoding="unicode") + "\n")
    atomic_write_text(out_dir / "ImageSets" / "Main" / f"{image_set}.txt", "".join(f"{i}\n" for i in ids))
    logger.info("wrote VOC annotations for %d images to %s (set %s)", len(ids), out_dir, image_set)


def _year_roots(voc_root: Path) -> list[Path]:
    if (voc_root / "Annotations").is_dir():
        return [voc_root]
    years = sorted(p for p in voc_root.iterdir() if p.is_dir() and (p / "Annotations").is_dir()) \
        if voc_root.is_dir() else []
    if not years:
        raise FileNotFoundError(f"no VOC Annotations folder in {voc_root} or its sub-folders (e.g. VOC2007/)")
    return years


def voc_background_paths(voc_root: str | os.PathLike, image_sets: Sequence[str] = ("trainval",),
                         exclude: Sequence[str] = ("person",)) -> list[Path]:
    """Image paths whose annotations contain none of the ``exclude`` classes (difficult ones included).

    ``voc_root`` is one VOC year folder or a ``VOCdevkit`` holding several (``VOC2007``, ``VOC2012``).
    A set name applies to every year that has it; ``"VOC2007/test"`` names one year's set. Each set
    must exist in at least one year. The paper's backgrounds: ``("VOC2007/trainval", "VOC2007/test",
    "VOC2012/train")`` excluding ``person`` for faces. Returns sorted unique paths.
    """
    voc_root = Path(voc_root)
    years = _year_roots(voc_root)
    exclude_set = {e.lower() for e in exclude}
    out: set[Path] = set()
    excluded = 0
    for spec in image_sets:
        year_name, _, set_name = spec.rpartition("/")
        targets = [y for y in years if not year_name or y.name == year_name]
        found = False
        for year in targets:
            set_file = year / "ImageSets" / "Main" / f"{set_name}.txt"
            if not set_file.is_file():
                continue
            found = True
            for image_id in _image_ids(year, set_name):
                xml_path = year / "Annotations" / f"{image_id}.xml"
                xml = _parse_xml(xml_path)
                if any(o[0].lower() in exclude_set for o in _parse_objects(xml, xml_path)):
                    excluded += 1
                    continue
                filename = xml.findtext("filename", default="").strip()
                out.add(year / "JPEGImages" / (filename if Path(filename).suffix else f"{image_id}.jpg"))
        if not found:
            where = ", ".join(str(t) for t in targets) or f"{voc_root} (no year folder named {year_name!r})"
            raise FileNotFoundError(f"VOC image set '{set_name}' not found in {where}")
    logger.info("VOC backgrounds: %d images kept, %d excluded (contain %s)", len(out), excluded, sorted(exclude_set))
    return sorted(out)
