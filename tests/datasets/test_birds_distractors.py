"""Distractor images for the birds benchmark, from stamps already extracted (no download)."""

from types import SimpleNamespace

import numpy as np

from synthdet.datasets.birds.distractors import STAMPS, build_birds_distractors, fetch_distractor_cutouts
from synthdet.utils.files import list_images
from synthdet.utils.image import read_image, write_image


def _stamp(path, color):
    rgba = np.zeros((60, 50, 4), np.uint8)
    rgba[..., :3] = color
    rgba[10:50, 10:40, 3] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rgba)


def test_distractors_from_extracted_stamps(tmp_path):
    cache = tmp_path / "cache"
    root = cache / "tuxpaint-nonbird"
    _stamp(root / STAMPS / "food/fruit/apple.png", (200, 30, 30))
    _stamp(root / STAMPS / "household/mug.png", (30, 30, 200))
    _stamp(root / STAMPS / "household/rubberduck.png", (250, 250, 0))  # excluded: bird-shaped
    _stamp(root / STAMPS / "animals/mammals/cartoon/pig.png", (250, 0, 250))  # cartoon/ skipped
    (root / ".complete").write_text("test\n")
    assert [p.name for p in fetch_distractor_cutouts(cache)] == ["apple.png", "mug.png"]
    bgs = tmp_path / "bgs"
    write_image(bgs / "a.jpg", np.full((80, 100, 3), 90, np.uint8))
    out = build_birds_distractors(tmp_path / "out", SimpleNamespace(backgrounds_dir=bgs), count=5, cache_dir=cache)
    files = list_images(out)
    assert len(files) == 5 and all(read_image(f).shape == (128, 128, 3) for f in files)
    assert {f.stem.split("_", 1)[1] for f in files} == {"apple", "mug"}
