"""The up-front check of a labelled dataset: every record's image probed before any work.

A record is bad when its image cannot be used (:func:`~synthdet.utils.image.probe_image`:
missing, empty, unreadable, truncated, too large, ...) or when the size its annotation file states
is neither the image's size after EXIF orientation nor its stored size (the boxes would land on
other pixels). By default bad records refuse the dataset before any work, naming the first few
files; with ``skip_bad`` they are dropped with their boxes, counted and logged.
"""

from __future__ import annotations

from typing import Sequence

from ..utils.errors import UserError
from ..utils.image import ImageInfo, orientation_for
from ..utils.inputs import BadFile, probe_all, refusal, warn_skipped
from .records import DetectionRecord


def size_problem(rec: DetectionRecord, info: ImageInfo) -> str | None:
    """Why ``rec``'s stated ``width`` / ``height`` do not fit its image ``info``, or None.

    The stated size may be the size after EXIF orientation or the stored one (then the stored
    orientation is used, see :func:`~synthdet.utils.image.orientation_for`)."""
    stated = (int(rec.width), int(rec.height))
    if stated == info.size:
        return None
    if stated == info.stored_size:
        orientation_for(info, stated)  # warns once that the stored orientation is used
        return None
    if min(stated) <= 0:
        return "the annotation gives no image size"
    turned = f" after EXIF orientation {info.orientation}" if info.orientation != 1 else ""
    return (f"size mismatch: the annotation says {stated[0]}x{stated[1]} px, the image is "
            f"{info.size[0]}x{info.size[1]} px{turned}")


def check_records(records: Sequence[DetectionRecord], where: str, skip_bad: bool = False, progress: bool = True,
                  option: str = "--skip-bad-images") -> tuple[list[DetectionRecord], list[BadFile]]:
    """``(usable records, bad files)`` of ``records`` (see the module docstring).

    Without ``skip_bad`` any bad record raises :class:`~synthdet.utils.errors.UserError` naming
    ``where``, the count, the first few files and ``option``; with it they are left out (their
    boxes too) and logged; a dataset left with no image raises."""
    infos = probe_all([r.image_path for r in records], desc=f"checking {where}", progress=progress)
    kept: list[DetectionRecord] = []
    bad: list[BadFile] = []
    for rec, info in zip(records, infos):
        problem = info.problem if isinstance(info, BadFile) else size_problem(rec, info)
        if problem is None:
            kept.append(rec)
        else:
            bad.append(BadFile(rec.image_path, problem))
    if bad and not skip_bad:
        raise refusal(bad, len(records), where, option)
    if bad and not kept:
        raise UserError(f"{where}: none of its {len(bad)} images can be used (first: {bad[0].path}: {bad[0].problem})")
    warn_skipped(bad, len(records), where, listed_in="the run's result.json / metrics.json")
    return kept, bad
