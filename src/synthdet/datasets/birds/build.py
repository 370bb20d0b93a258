"""Build the offline "birds" benchmark: classification images, real detection scenes, backgrounds.

Structure of the paper's Birds experiment (CUB), at a size that runs on 2 CPU cores:

- ``classification/images/*.jpg``: one bird per image, centred, 40-80 % of the frame, on a
  random crop of a real photo (the background is kept, as in CUB). Image-level label only.
  ``classification/true_masks/<stem>.png`` holds the true masks, used only to *score*
  segmentation, never read by the pipeline.
- ``scenes/images/{train,val,test}/*.jpg`` + ``scenes/annotations/{split}.json`` (COCO, one
  category ``1: bird``): "real" scenes of 1-4 birds rendered by :mod:`.render` (not by the
  synthesis pipeline). Test scenes only use *held-out* bird identities that never appear in
  the classification images (no leakage, like the paper's CUB protocol).
- ``backgrounds/*.jpg``: the background photos left for synthesis; the photos behind the real
  scenes are a disjoint pool.
- ``contact_sheet.png`` for checking by eye, and ``manifest.json`` (written last: it marks the
  benchmark as complete).

Everything is a pure function of the sources and :class:`BirdsConfig` (including its seed).
The build goes into a temporary sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...utils.config import to_dict
from ...utils.files import atomic_write_json, file_digest
from ...utils.image import BadImageError, read_image, write_image
from ...utils.outdir import build_then_rename, check_ours
from ..coco import records_to_coco
from ..records import DetectionRecord
# the layout and loading of a built benchmark (importable from here as before)
from .benchmark import (CATEGORIES, FORMAT_VERSION, MANIFEST, SPLITS, BirdsBenchmark, _open,  # noqa: F401
                        default_data_root, load_birds)
from .fetch import BirdsSources, fetch_sources
from .render import Cutout, RenderedImage, load_cutout, random_crop, render_classification, render_scene

logger = logging.getLogger(__name__)

# Cut-outs showing the same species: such identities are always on the same side of the
# seen / held-out split (duck and drake are both mallards, etc.).
DEFAULT_IDENTITY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("duck", "drake"),
    ("guineafowl", "helmeted_guineafowl"),
    ("heron_greatblue", "heron_greatblue_flying"),
    ("seagull", "silver-gull"),
    ("hen", "chicken_profile", "rooster"),
    ("peacock", "albino_peahen"),
)


@dataclass(frozen=True)
class BirdsConfig:
    """Settings of the birds benchmark (defaults sized for 2 CPU cores).

    Scales are the bird's longer side as a fraction of the image side. Ranges are ``(low, high)``.
    """

    seed: int = 0
    # classification images (image-level label only)
    classification_count: int = 600
    classification_size: int = 128
    classification_scale: tuple[float, float] = (0.4, 0.8)
    # real detection scenes
    scene_size: int = 256
    train_scenes: int = 300
    val_scenes: int = 60
    test_scenes: int = 100
    birds_per_scene: tuple[int, int] = (1, 4)
    scene_scale: tuple[float, float] = (0.15, 0.6)
    min_visible: float = 0.3
    placement_tries: int = 30
    # identities: held-out birds appear only in test scenes
    held_out_identities: int = 8
    held_out: tuple[str, ...] = ()  # explicit held-out identities (overrides the random choice)
    identity_groups: tuple[tuple[str, ...], ...] = DEFAULT_IDENTITY_GROUPS
    # background photos: this fraction (per source) goes to real scenes, the rest to synthesis
    real_background_fraction: float = 0.5
    background_max_side: int = 640  # stored synthesis backgrounds
    work_max_side: int = 1024  # photos are downscaled to this before cropping
    crop_scale: tuple[float, float] = (0.35, 1.0)  # background crop side / photo short side
    # rendering of the "real" images
    lighting: tuple[float, float] = (0.15, 0.45)
    edge_blur: tuple[float, float] = (0.5, 1.2)
    noise_std: tuple[float, float] = (0.0, 3.0)
    jpeg_quality: tuple[int, int] = (60, 92)
    contact_sheet: bool = True

    def __post_init__(self) -> None:
        def rng_ok(name: str, lo: float, hi: float) -> None:
            a, b = getattr(self, name)
            if not (lo <= a <= b <= hi):
                raise ValueError(f"{name}={getattr(self, name)} must satisfy {lo} <= low <= high <= {hi}")

        rng_ok("classification_scale", 0.01, 1.0)
        rng_ok("scene_scale", 0.01, 1.0)
        rng_ok("birds_per_scene", 1, 1000)
        rng_ok("crop_scale", 0.01, 1.0)
        rng_ok("lighting", 0.0, 1.0)
        rng_ok("edge_blur", 0.0, 20.0)
        rng_ok("noise_std", 0.0, 100.0)
        rng_ok("jpeg_quality", 1, 100)
        for name in ("classification_count", "train_scenes", "val_scenes", "test_scenes", "held_out_identities"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if min(self.classification_size, self.scene_size) < 8:
            raise ValueError("classification_size and scene_size must be at least 8 px")
        if not 0.0 < self.real_background_fraction < 1.0:
            raise ValueError("real_background_fraction must be in (0, 1)")
        if not 0.0 <= self.min_visible <= 1.0:
            raise ValueError("min_visible must be in [0, 1]")


# --------------------------------------------------------------------------- building

def build_birds(
    root: str | os.PathLike | None = None,
    config: BirdsConfig = BirdsConfig(),
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    debs_dir: str | os.PathLike | None = None,
    extracted_dir: str | os.PathLike | None = None,
    extra_photos: bool = True,
    progress: bool = True,
) -> BirdsBenchmark:
    """Fetch the sources and build ``<root>/birds``, or reuse it if complete and built with ``config``.

    ``root`` defaults to :func:`default_data_root`; ``cache_dir`` (downloads) to ``<root>/cache``.
    ``debs_dir`` / ``extracted_dir`` / ``extra_photos``: see :func:`fetch_sources` (``extras``).
    """
    root = Path(root) if root is not None else default_data_root()
    out = root / "birds"
    check_ours(out, force, legacy=(MANIFEST,), writer="data birds")  # before any download
    if not force:
        try:
            bench = _open(out)
        except FileNotFoundError as e:
            if out.exists():
                logger.info("%s", e)
        else:
            if _same_config(bench.manifest.get("config"), config):
                logger.info("birds benchmark already built at %s (seed %d)", out, config.seed)
                return bench
            logger.info("birds benchmark at %s was built with other settings: rebuilding", out)
    sources = fetch_sources(cache_dir if cache_dir is not None else root / "cache",
                            debs_dir=debs_dir, extracted_dir=extracted_dir, extras=extra_photos)
    return build_birds_from_sources(out, sources, config, progress=progress, force=force)


def _same_config(stored: Any, config: BirdsConfig) -> bool:
    return json.dumps(stored, sort_keys=True) == json.dumps(to_dict(config), sort_keys=True)


def build_birds_from_sources(
    out_dir: str | os.PathLike,
    sources: BirdsSources,
    config: BirdsConfig = BirdsConfig(),
    progress: bool = True,
    force: bool = False,
) -> BirdsBenchmark:
    """Build the benchmark into ``out_dir`` (replacing a previous build) from fetched ``sources``.

    Pure function of ``(sources, config)``: the same seed gives byte-identical files.
    Built in a temporary sibling folder, renamed into place when complete. An ``out_dir`` that
    synthdet did not write is refused (:class:`~synthdet.utils.outdir.NotOursError`) unless
    ``force``; a second build into the same folder at the same time is refused too.
    """
    out = Path(out_dir)
    with build_then_rename(out, "data birds", force=force, legacy=(MANIFEST,)) as tmp:
        manifest = _build_into(tmp, sources, config, progress)
    logger.info("birds benchmark written to %s", out)
    return BirdsBenchmark.at(out, manifest)


def _split_identities(names: list[str], config: BirdsConfig, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """``(seen, held_out)`` identity names; groups of the same species stay on one side."""
    known = set(names)
    if config.held_out:
        unknown = sorted(set(config.held_out) - known)
        if unknown:
            raise ValueError(f"held_out names unknown identities {unknown}; available: {sorted(known)}")
        held = sorted(config.held_out)
    else:
        grouped: dict[str, list[str]] = {n: [n] for n in names}
        for group in config.identity_groups:
            members = sorted(n for n in group if n in known)
            for n in members:
                grouped[n] = members
        units = sorted({tuple(g) for g in grouped.values()})
        order = rng.permutation(len(units))
        want = min(config.held_out_identities, len(names) - 1)
        held = []
        for i in order:
            if len(held) + len(units[i]) <= want:
                held += units[i]
        held = sorted(held)
    seen = sorted(n for n in names if n not in held)
    if not seen:
        raise ValueError("no seen identities left for the classification images")
    if not held and (config.test_scenes > 0):
        raise ValueError("no held-out identities for the test scenes (need at least 2 bird cut-outs)")
    return seen, held


def _split_backgrounds(sources: BirdsSources, config: BirdsConfig, rng: np.random.Generator
                       ) -> tuple[list[Path], list[Path]]:
    """``(real-scene pool, synthesis pool)``: disjoint, stratified by origin, groups kept together."""
    by_origin: dict[str, dict[str, list[Path]]] = {}
    for p in sources.backgrounds:
        origin = sources.origin.get(p.name, "other")
        group = sources.background_groups.get(p.name, p.name)
        by_origin.setdefault(origin, {}).setdefault(group, []).append(p)
    real, synth = [], []
    carry = 0.0  # spreads rounding across origins so the overall fraction stays close
    for origin in sorted(by_origin):
        groups = [by_origin[origin][g] for g in sorted(by_origin[origin])]
        order = rng.permutation(len(groups))
        want = len(groups) * config.real_background_fraction + carry
        k = int(np.floor(want + 0.5))
        carry = want - k
        for rank, i in enumerate(order):
            (real if rank < k else synth).extend(groups[i])
    if not real or not synth:
        if len(sources.backgrounds) < 2:
            raise ValueError("need at least 2 background photos (one for real scenes, one for synthesis)")
        # tiny inputs: make sure both pools are non-empty
        allp = real + synth
        real, synth = allp[:1], allp[1:]
    return sorted(real), sorted(synth)


def _load_photos(paths: list[Path], max_side: int) -> tuple[list[np.ndarray], list[Path], dict[str, str]]:
    photos, kept, skipped = [], [], {}
    for p in paths:
        try:
            img = read_image(p, min_size=32)
        except BadImageError as e:
            logger.warning("skipping background %s", e)
            skipped[p.name] = e.reason
            continue
        h, w = img.shape[:2]
        s = max_side / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        photos.append(img)
        kept.append(p)
    return photos, kept, skipped


def _progress(it: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", leave=False)


def _quality(rng: np.random.Generator, config: BirdsConfig) -> int:
    return int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))


def _build_into(tmp: Path, sources: BirdsSources, config: BirdsConfig, progress: bool) -> dict[str, Any]:
    seed = config.seed
    skipped: dict[str, str] = {}
    # ---- bird identities
    cuts: dict[str, Cutout] = {}
    for p in sorted(sources.birds):
        try:
            cut = load_cutout(p)
        except (BadImageError, ValueError) as e:
            logger.warning("skipping bird cut-out %s", e)
            skipped[p.name] = str(e)
            continue
        if cut.name in cuts:
            raise ValueError(f"two bird cut-outs are named {cut.name!r} ({p}); identities must be unique")
        cuts[cut.name] = cut
    if len(cuts) < 2:
        raise ValueError(f"need at least 2 usable bird cut-outs, got {len(cuts)}")
    seen, held = _split_identities(sorted(cuts), config, np.random.default_rng([seed, 0, 0]))
    # ---- background pools
    real_paths, synth_paths = _split_backgrounds(sources, config, np.random.default_rng([seed, 0, 1]))
    real_photos, real_paths, sk = _load_photos(real_paths, config.work_max_side)
    skipped.update(sk)
    synth_photos, synth_paths, sk = _load_photos(synth_paths, config.work_max_side)
    skipped.update(sk)
    if not real_photos or not synth_photos:
        raise ValueError("no readable background photos left in one of the pools (real scenes / synthesis)")
    bg_dir = tmp / "backgrounds"
    bg_dir.mkdir()
    bg_names = []
    for p, img in zip(synth_paths, synth_photos):
        h, w = img.shape[:2]
        s = config.background_max_side / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        name = f"{p.stem}.jpg"
        write_image(bg_dir / name, img, quality=95)
        bg_names.append(name)

    # ---- classification images (seen identities only)
    cls_img_dir = tmp / "classification" / "images"
    cls_mask_dir = tmp / "classification" / "true_masks"
    cls_img_dir.mkdir(parents=True)
    cls_mask_dir.mkdir(parents=True)
    order = [seen[i] for i in np.random.default_rng([seed, 0, 2]).permutation(len(seen))]
    cls_ids: dict[str, str] = {}
    sheet_cls: list[tuple[np.ndarray, np.ndarray]] = []
    for k in _progress(range(config.classification_count), config.classification_count,
                       "classification images", progress):
        rng = np.random.default_rng([seed, 1, k])
        name = order[k % len(order)]
        bg = random_crop(synth_photos[int(rng.integers(len(synth_photos)))], config.classification_size, rng,
                         config.crop_scale)
        r = render_classification(bg, cuts[name], rng, scale=config.classification_scale,
                                  lighting=config.lighting, edge_blur=config.edge_blur,
                                  noise_std=config.noise_std)
        stem = f"bird_{k:05d}"
        write_image(cls_img_dir / f"{stem}.jpg", r.image, quality=_quality(rng, config))
        write_image(cls_mask_dir / f"{stem}.png", r.masks[0].astype(np.uint8) * 255)
        cls_ids[stem] = name
        if len(sheet_cls) < 8:
            sheet_cls.append((r.image, r.masks[0]))

    # ---- real detection scenes
    counts: dict[str, Any] = {"classification": config.classification_count}
    split_ids: dict[str, list[str]] = {"classification": sorted(set(cls_ids.values()))}
    sheet_scenes: dict[str, list[RenderedImage]] = {}
    ann_dir = tmp / "scenes" / "annotations"
    ann_dir.mkdir(parents=True)
    n_scenes = {"train": config.train_scenes, "val": config.val_scenes, "test": config.test_scenes}
    for si, split in enumerate(SPLITS):
        pool = held if split == "test" else seen
        img_dir = tmp / "scenes" / "images" / split
        img_dir.mkdir(parents=True)
        records, masks, idents = [], [], []
        for k in _progress(range(n_scenes[split]), n_scenes[split], f"{split} scenes", progress):
            rng = np.random.default_rng([seed, 2 + si, k])
            n = int(rng.integers(config.birds_per_scene[0], config.birds_per_scene[1] + 1))
            names = list(rng.choice(pool, size=n, replace=n > len(pool)))
            bg = random_crop(real_photos[int(rng.integers(len(real_photos)))], config.scene_size, rng,
                             config.crop_scale)
            r = render_scene(bg, [cuts[str(x)] for x in names], rng, scale=config.scene_scale,
                             min_visible=config.min_visible, tries=config.placement_tries,
                             lighting=config.lighting, edge_blur=config.edge_blur, noise_std=config.noise_std)
            path = img_dir / f"{split}_{k:05d}.jpg"
            write_image(path, r.image, quality=_quality(rng, config))
            records.append(DetectionRecord(str(path), config.scene_size, config.scene_size, r.boxes,
                                           np.ones(len(r.boxes), np.int64), image_id=k + 1))
            masks.append(list(r.masks))
            idents.append(r.identities)
            if len(sheet_scenes.setdefault(split, [])) < 4:
                sheet_scenes[split].append(r)
        coco = records_to_coco(records, CATEGORIES, image_root=ann_dir, masks=masks)
        flat = [name for names in idents for name in names]
        for ann, name in zip(coco["annotations"], flat):
            ann["identity"] = name
        coco["info"] = {"description": f"synthdet offline birds benchmark, {split} scenes", "seed": seed}
        atomic_write_json(ann_dir / f"{split}.json", coco)
        counts[split] = {"images": len(records), "boxes": len(flat)}
        split_ids[split] = sorted(set(flat))

    if config.contact_sheet:
        _write_contact_sheet(tmp / "contact_sheet.png", sheet_cls, sheet_scenes)

    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "config": to_dict(config),
        "identities": {"seen": seen, "held_out": held},
        "identities_per_split": split_ids,
        "counts": counts,
        "backgrounds": {
            "real_scenes": [p.name for p in real_paths],
            "synthesis": [p.name for p in synth_paths],
            "synthesis_files": bg_names,
        },
        "sources": {
            "birds": {p.name: {"origin": sources.origin.get(p.name, "given"), "digest": file_digest(p)}
                      for p in sorted(sources.birds) if p.stem in cuts},
            "backgrounds": {p.name: {"origin": sources.origin.get(p.name, "given"), "digest": file_digest(p)}
                            for p in sorted(real_paths + synth_paths)},
        },
        "excluded": dict(sorted(sources.excluded.items())),
        "skipped": skipped,
        "classification": cls_ids,
    }
    atomic_write_json(tmp / MANIFEST, manifest)  # last: marks the build as complete
    return manifest


def _header(text: str, width: int) -> np.ndarray:
    band = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(band, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def _write_contact_sheet(path: Path, cls: list[tuple[np.ndarray, np.ndarray]],
                         scenes: dict[str, list[RenderedImage]]) -> None:
    """Grid of classification images, their true masks, and annotated real scenes (for a person)."""
    from ...utils.viz import draw_boxes, make_grid

    blocks: list[tuple[str, np.ndarray]] = []
    if cls:
        blocks.append(("classification images (image-level label only)", make_grid([c[0] for c in cls], 8, 128)))
        blocks.append(("true masks (scoring only, never read by the pipeline)",
                       make_grid([c[1].astype(np.uint8) * 255 for c in cls], 8, 128)))
    titles = {"train": "real train scenes (boxes = visible extent)", "val": "real val scenes",
              "test": "real test scenes (held-out bird identities)"}
    for split in ("train", "test"):
        rs = scenes.get(split)
        if rs:
            drawn = [draw_boxes(r.image, r.boxes, np.ones(len(r.boxes), np.int64), thickness=2) for r in rs]
            blocks.append((titles[split], make_grid(drawn, 4, 256)))
    if not blocks:
        return
    width = max(b.shape[1] for _, b in blocks)
    rows = []
    for title, b in blocks:
        rows.append(_header(title, width))
        if b.shape[1] < width:
            b = np.concatenate([b, np.full((b.shape[0], width - b.shape[1], 3), 255, np.uint8)], 1)
        rows.append(b)
    write_image(path, np.concatenate(rows, 0))
