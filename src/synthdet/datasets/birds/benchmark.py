"""A built birds benchmark on disk: its layout (:class:`BirdsBenchmark`), where it lives
(:func:`default_data_root`) and opening it (:func:`load_birds`). Building it: :mod:`.build`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...utils.files import list_images
from ..coco import read_coco
from ..records import DetectionRecord

SPLITS = ("train", "val", "test")
CATEGORIES = {1: "bird"}
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class BirdsBenchmark:
    """Paths of one built benchmark (``root`` is the ``.../birds`` folder)."""

    root: Path
    classification_dir: Path  # classification/images
    true_masks_dir: Path  # classification/true_masks (scoring only)
    backgrounds_dir: Path
    annotations: dict[str, Path]  # "train"/"val"/"test" -> COCO json
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def at(cls, root: str | os.PathLike, manifest: dict[str, Any] | None = None) -> "BirdsBenchmark":
        root = Path(root)
        return cls(
            root=root,
            classification_dir=root / "classification" / "images",
            true_masks_dir=root / "classification" / "true_masks",
            backgrounds_dir=root / "backgrounds",
            annotations={s: root / "scenes" / "annotations" / f"{s}.json" for s in SPLITS},
            manifest=manifest or {},
        )

    @property
    def contact_sheet(self) -> Path:
        return self.root / "contact_sheet.png"

    def split_records(self, split: str) -> tuple[list[DetectionRecord], dict[int, str]]:
        """Records of one scene split (boxes XYXY exclusive, label 1 = bird) and ``{1: "bird"}``."""
        if split not in self.annotations:
            raise ValueError(f"unknown split {split!r}; expected one of {list(self.annotations)}")
        return read_coco(self.annotations[split])

    def classification_images(self) -> list[Path]:
        """Sorted classification image paths (one bird each, image-level label only)."""
        return list_images(self.classification_dir)

    def true_mask_path(self, image_path: str | os.PathLike) -> Path:
        """The true mask (uint8 PNG, 255 = bird) of a classification image; for scoring only."""
        return self.true_masks_dir / f"{Path(image_path).stem}.png"


def default_data_root() -> Path:
    """``$SYNTHDET_HOME`` if set, else ``~/.cache/synthdet``."""
    env = os.environ.get("SYNTHDET_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthdet"


# --------------------------------------------------------------------------- loading

def load_birds(root: str | os.PathLike | None = None) -> BirdsBenchmark:
    """Open a built benchmark. ``root`` is the data root (holding ``birds/``; default
    :func:`default_data_root`) or the ``birds`` folder itself (the one with ``manifest.json``).
    Raises FileNotFoundError naming the command to run if it is missing or incomplete."""
    root = Path(root) if root is not None else default_data_root()
    return _open(root if (root / MANIFEST).is_file() else root / "birds")


def _open(bench: Path) -> BirdsBenchmark:
    hint = f"build it with: synthdet data birds --root {bench.parent}"
    manifest_path = bench / MANIFEST
    if not manifest_path.is_file():
        what = "not a finished benchmark (no manifest.json)" if bench.exists() else "not found"
        raise FileNotFoundError(f"birds benchmark at {bench} is {what}; {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise FileNotFoundError(f"{manifest_path}: unreadable ({e}); rebuild with --force ({hint})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FileNotFoundError(f"{manifest_path}: format version {manifest.get('format_version')} "
                                f"!= {FORMAT_VERSION}; rebuild with --force ({hint})")
    b = BirdsBenchmark.at(bench, manifest)
    missing = [p for p in (b.classification_dir, b.true_masks_dir, b.backgrounds_dir, *b.annotations.values())
               if not p.exists()]
    n_cls = len(list(b.classification_dir.glob("*.jpg"))) if b.classification_dir.is_dir() else -1
    if missing or n_cls != manifest["counts"]["classification"]:
        raise FileNotFoundError(f"birds benchmark at {bench} is incomplete (missing: "
                                f"{[str(p) for p in missing] or 'classification images'}); "
                                f"rebuild with --force ({hint})")
    return b
