"""Distractor images for the birds benchmark: real photographs of things that are not birds.

The same Debian package as the birds (``tuxpaint-stamps-default``) holds about 230 cut-out
photographs of other things: mammals, fish, insects, fruit, vegetables, flowers, trees,
mushrooms, household objects, tools, balls and vehicles (each stamp was looked at; drawings and
bird-shaped things are excluded below). They are rendered like the benchmark's classification
images (one object on a crop of a *synthesis* background photo, never a real-scene photo) so the
pipeline segments them as it segments the birds; their alpha is not used. Then
``synthdet synth --distractors DIR`` (or ``synthesis: {distractors: DIR}``) pastes them unlabelled.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ...utils.files import list_images
from ...utils.image import BadImageError, read_image, write_image
from ...utils.outdir import build_then_rename
from .benchmark import BirdsBenchmark, default_data_root, load_birds
from .build import BirdsConfig
from .fetch import BIRDS_PACKAGE, FetchError, _extract_deb, _find_or_download_deb
from .render import load_cutout, random_crop, render_classification

logger = logging.getLogger(__name__)

STAMPS = "usr/share/tuxpaint/stamps"
DISTRACTOR_FOLDERS = ("animals/mammals", "animals/fish", "animals/insects", "food", "plants", "household",
                      "vehicles", "sports")
# Stamps of those folders that are not usable non-bird photographs (each image was looked at).
EXCLUDED_DISTRACTORS: dict[str, str] = {
    "bee.png": "line drawing", "fly.png": "line drawing", "echidna.png": "black silhouette drawing",
    "hedgehog.png": "cartoon drawing", "pizza.png": "drawing", "chineseJunk.png": "drawing",
    "walnutBoat.png": "drawing", "sedan_police.png": "mostly transparent thin strip",
    "sedan_police_mirror.png": "mostly transparent thin strip", "rugby_goal_posts.png": "thin lines only",
    "rubberduck.png": "a toy duck: bird-shaped",
}
_MARKER = ".complete"


def fetch_distractor_cutouts(cache_dir: str | os.PathLike | None = None,
                             debs_dir: str | os.PathLike | None = None) -> list[Path]:
    """The non-bird cut-out photos (RGBA PNG), extracted once into ``cache_dir/tuxpaint-nonbird``
    (default ``<data root>/cache``) from the package (``apt-get download`` or ``debs_dir``)."""
    cache = Path(cache_dir) if cache_dir is not None else default_data_root() / "cache"
    dest = cache / "tuxpaint-nonbird"
    if not (dest / _MARKER).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        deb, downloaded = _find_or_download_deb(BIRDS_PACKAGE, cache, Path(debs_dir) if debs_dir else None)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tuxpaint-nonbird.tmp-"))
        try:
            _extract_deb(deb, tmp, [f"./{STAMPS}/{d}/*.png" for d in DISTRACTOR_FOLDERS])
            (tmp / _MARKER).write_text(f"{deb.name}\n")
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if downloaded:
            deb.unlink(missing_ok=True)
    files = [p for p in sorted((dest / STAMPS).rglob("*.png"))
             if "cartoon" not in p.parts and p.name not in EXCLUDED_DISTRACTORS]
    if not files:
        raise FetchError(f"{dest}: no non-bird stamp photographs found")
    return files


def build_birds_distractors(out: str | os.PathLike | None = None, bench: BirdsBenchmark | None = None,
                            count: int = 300, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                            debs_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Render ``count`` distractor images (JPEG, the classification images' size and rendering)
    into ``out`` (default ``<data root>/birds_distractors``): the cut-outs of
    :func:`fetch_distractor_cutouts` in turn, each on a random crop of a synthesis background of
    ``bench`` (default :func:`load_birds`). Returns ``out``."""
    bench = bench or load_birds()
    out = Path(out) if out is not None else default_data_root() / "birds_distractors"
    cfg = BirdsConfig()
    cuts = []
    for p in fetch_distractor_cutouts(cache_dir, debs_dir):
        try:
            cuts.append(load_cutout(p))
        except (BadImageError, ValueError) as e:
            logger.warning("skipping distractor stamp %s", e)
    photos = [read_image(p) for p in list_images(bench.backgrounds_dir)]
    order = np.random.default_rng([seed, 7]).permutation(len(cuts))
    skipped = 0
    with build_then_rename(out, "birds-distractors", force=force) as tmp:
        for k in range(count):
            rng = np.random.default_rng([seed, 8, k])
            cut = cuts[int(order[k % len(cuts)])]
            bg = random_crop(photos[int(rng.integers(len(photos)))], cfg.classification_size, rng, cfg.crop_scale)
            try:
                r = render_classification(bg, cut, rng, scale=cfg.classification_scale, lighting=cfg.lighting,
                                          edge_blur=cfg.edge_blur, noise_std=cfg.noise_std)
            except ValueError:  # a thin stamp whose alpha vanished at this scale: no image
                skipped += 1
                continue
            write_image(tmp / f"{k:05d}_{cut.name}.jpg", r.image, quality=90)
    logger.info("wrote %d distractor images of %d non-bird stamps to %s (%d renderings left nothing "
                "visible, skipped)", count - skipped, len(cuts), out, skipped)
    return out
