"""Segmentation quality benchmark: mean IoU / pixel accuracy / ms per image against true masks.

Scores the centred-ellipse baseline, ``none``, ``grabcut``, ``cosegment`` (fitted on the scored
images first; fitting time reported) and (with ``--redo-checkpoint``) ``redo`` on images whose
true masks share their file stem, each also under the mask quality gates (``--gates``, default
the defaults of ``MaskGates``): how many masks they reject and the mean IoU of those they let
through. Prints two Markdown tables: mask quality, and the quality of the labels the masks give
(pixel precision / recall, IoU of each mask's tight box with the true mask's box).

    python bench/segmentation.py --images ROOT/birds/classification/images \
        --true-masks ROOT/birds/classification/true_masks [--redo-checkpoint /tmp/redo_birds] [--limit N]

Other classes, for the check that a segmenter is not tuned to the birds: ``--make-class-set NAME
OUT`` renders 150 images of one class (``mammals``, ``fruit``, ``fish``, ``insects``, ``tools``: the
tuxpaint cut-out photographs of the Debian package the birds come from, fetched like the
benchmark's distractors) exactly like the benchmark's classification images (128 px, one object
centred on a crop of a synthesis background photo), with the cut-out's alpha as true mask, into
``OUT/images`` and ``OUT/true_masks``; then score with ``--images OUT/images --true-masks
OUT/true_masks``.

Without the birds benchmark, ``--make-dev-set OUT`` builds a small stand-in: bird cut-outs with
alpha (tuxpaint stamps) pasted roughly centred on crops of nature photos, the alpha as true mask,
split by bird into ``OUT/train/images`` (for ReDO) and ``OUT/eval/{images,true_masks}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from synthdet.segmentation import get_segmenter
from synthdet.segmentation.gates import GatedSegmenter, MaskGates
from synthdet.segmentation.metrics import evaluate_segmenter
from synthdet.utils.config import parse_key_value
from synthdet.utils.files import list_images
from synthdet.utils.image import read_image, read_image_rgba, write_image

BIRDS = Path("/tmp/rawdata/usr/share/tuxpaint/stamps/animals/birds")
NATURE = Path("/tmp/rawdata/usr/share/backgrounds/mate/nature")


def _paste(bird: np.ndarray, alpha: np.ndarray, photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(alpha > 0.5)
    bird, alpha = bird[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = int(rng.integers(96, 200)), int(rng.integers(96, 200))
    ph, pw = photo.shape[:2]
    side = rng.uniform(0.3, 0.8) * min(ph, pw)
    ch, cw = int(side * h / max(h, w)), int(side * w / max(h, w))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    canvas = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    s = rng.uniform(0.5, 0.9) * min(w / bird.shape[1], h / bird.shape[0])
    bw, bh = max(2, int(bird.shape[1] * s)), max(2, int(bird.shape[0] * s))
    if rng.random() < 0.5:
        bird, alpha = bird[:, ::-1], alpha[:, ::-1]
    b = cv2.resize(np.ascontiguousarray(bird), (bw, bh), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(np.ascontiguousarray(alpha), (bw, bh), interpolation=cv2.INTER_AREA)[:, :, None]
    cx = int((w - bw) / 2 + rng.uniform(-0.1, 0.1) * w)
    cy = int((h - bh) / 2 + rng.uniform(-0.1, 0.1) * h)
    cx, cy = int(np.clip(cx, 0, w - bw)), int(np.clip(cy, 0, h - bh))
    region = canvas[cy : cy + bh, cx : cx + bw]
    canvas[cy : cy + bh, cx : cx + bw] = b * a + region * (1 - a)
    mask = np.zeros((h, w), np.uint8)
    mask[cy : cy + bh, cx : cx + bw] = (a[:, :, 0] > 0.5) * 255
    return canvas.round().clip(0, 255).astype(np.uint8), mask


def make_dev_set(out: Path, n_train: int = 600, n_eval: int = 150, seed: int = 0) -> None:
    """Build the stand-in birds set under ``out`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    birds = [p for p in sorted(BIRDS.glob("*.png")) if p.stem not in ("tux", "pengwin")]
    photos = [read_image(p) for p in sorted(NATURE.glob("*.jpg"))]
    photos = [cv2.resize(p, (p.shape[1] * 640 // max(p.shape[:2]), p.shape[0] * 640 // max(p.shape[:2])),
                         interpolation=cv2.INTER_AREA) for p in photos]
    order = rng.permutation(len(birds))
    n_eval_birds = max(1, len(birds) // 5)
    splits = {"eval": [birds[i] for i in order[:n_eval_birds]], "train": [birds[i] for i in order[n_eval_birds:]]}
    cutouts = {p: read_image_rgba(p) for p in birds}
    for split, count in (("train", n_train), ("eval", n_eval)):
        for i in range(count):
            bp = splits[split][int(rng.integers(len(splits[split])))]
            rgb, alpha = cutouts[bp]
            img, mask = _paste(rgb, alpha, photos[int(rng.integers(len(photos)))], rng)
            write_image(out / split / "images" / f"{split}_{i:04d}.jpg", img, quality=92)
            if split == "eval":
                write_image(out / split / "true_masks" / f"{split}_{i:04d}.png", mask)
    print(f"dev set: {n_train} train / {n_eval} eval images in {out} "
          f"({len(splits['train'])} train birds, {len(splits['eval'])} eval birds)")


# Class name -> tuxpaint stamp folder (usr/share/tuxpaint/stamps/...) of --make-class-set.
CLASS_FOLDERS = {"mammals": "animals/mammals", "fruit": "food/fruit", "fish": "animals/fish",
                 "insects": "animals/insects", "tools": "household/tools"}


def make_class_set(name: str, out: Path, count: int = 150, seed: int = 0) -> None:
    """Render ``count`` classification-style images of class ``name`` with true masks (module docstring)."""
    from synthdet.datasets.birds import load_birds
    from synthdet.datasets.birds.build import BirdsConfig
    from synthdet.datasets.birds.distractors import fetch_distractor_cutouts
    from synthdet.datasets.birds.render import load_cutout, random_crop, render_classification

    folder = f"/{CLASS_FOLDERS[name]}/"
    cuts = [load_cutout(p) for p in fetch_distractor_cutouts() if folder in p.as_posix()]
    cfg, bench = BirdsConfig(), load_birds()
    photos = [read_image(p) for p in list_images(bench.backgrounds_dir)]
    written = 0
    for k in range(count):
        rng = np.random.default_rng([seed, 11, k])
        bg = random_crop(photos[int(rng.integers(len(photos)))], cfg.classification_size, rng, cfg.crop_scale)
        try:
            r = render_classification(bg, cuts[k % len(cuts)], rng, scale=cfg.classification_scale,
                                      lighting=cfg.lighting, edge_blur=cfg.edge_blur, noise_std=cfg.noise_std)
        except ValueError:  # a thin cut-out whose alpha vanished at this scale
            continue
        write_image(out / "images" / f"{name}_{k:04d}.jpg", r.image, quality=90)
        write_image(out / "true_masks" / f"{name}_{k:04d}.png", r.masks[0].astype(np.uint8) * 255)
        written += 1
    print(f"{name}: {written} images of {len(cuts)} cut-outs in {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="default: the birds benchmark's classification images")
    ap.add_argument("--true-masks", type=Path, help="default: the birds benchmark's true masks")
    ap.add_argument("--redo-checkpoint", type=Path, help="ReDO checkpoint file or folder (adds the redo row)")
    ap.add_argument("--segmenters", default="ellipse,none,grabcut,cosegment",
                    help="registry names, comma-separated; a fallback chain joins names with '+' (cosegment+grabcut)")
    ap.add_argument("--gates", default="default",
                    help="'default', 'off' or KEY=VALUE,... of MaskGates (min_area, max_area, max_border, ...)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--make-dev-set", type=Path, metavar="OUT", help="build the stand-in dev set and exit")
    ap.add_argument("--make-class-set", nargs=2, metavar=("NAME", "OUT"),
                    help=f"render a 150-image class set ({', '.join(CLASS_FOLDERS)}) with true masks and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.make_dev_set:
        make_dev_set(args.make_dev_set)
        return 0
    if args.make_class_set:
        name, out = args.make_class_set
        if name not in CLASS_FOLDERS:
            ap.error(f"--make-class-set: unknown class {name!r}; choose one of {', '.join(CLASS_FOLDERS)}")
        make_class_set(name, Path(out))
        return 0
    if not (args.images and args.true_masks):
        from synthdet.datasets.birds import load_birds

        try:  # default: the built-in birds benchmark (built by `synthdet data birds`)
            bench = load_birds()
        except FileNotFoundError as e:
            ap.error(f"--images and --true-masks not given and no birds benchmark: {e}")
        args.images, args.true_masks = bench.classification_dir, bench.true_masks_dir
    names = [n.replace("+", ",") for n in args.segmenters.split(",") if n]
    segmenters = [get_segmenter(n) for n in names]
    if args.redo_checkpoint:
        segmenters.append(get_segmenter("redo", checkpoint=args.redo_checkpoint))
    gates = None if args.gates == "off" else MaskGates.from_spec(
        True if args.gates == "default" else dict(parse_key_value(kv) for kv in args.gates.split(",")))
    rows = [evaluate_segmenter(s, args.images, args.true_masks, limit=args.limit, progress=False,
                               gates=None if isinstance(s, GatedSegmenter) else gates) for s in segmenters]
    n = len(list_images(args.images)) if args.limit is None else args.limit
    print(f"\nSegmentation on {args.images} ({rows[0]['images']} of {n} images scored; IoU of foreground at 0.5)\n")
    print("| segmenter | mean IoU | pixel accuracy | ms / image | fitting s | rejected by the gates | IoU of the rest |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gated = "- | -" if "rejected" not in r else \
            f"{r['rejected']} | " + ("-" if r["rejected"] == r["images"] else f"{r['iou_accepted']:.3f}")
        print(f"| {r['segmenter']} | {r['iou']:.3f} | {r['accuracy']:.3f} | {r['ms_per_image']:.1f} "
              f"| {r['fit_seconds']:.1f} | {gated} |")
    print("\n| segmenter | pixel precision | pixel recall | tight-box IoU with the true box | box IoU >= 0.5 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['segmenter']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['box_iou']:.3f} "
              f"| {100 * r['box_iou_50']:.0f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
