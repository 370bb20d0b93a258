"""Throughput and memory of the synthesis stream, against a straightforward reference.

Prints samples/s at the canvas size (default 320x320) for the stream rendered through a
DataLoader with 1 and 2 workers (and in-process), peak RSS, and, in the same run, the rate of a
per-sample reimplementation of the authors' approach (every object re-segmented with GrabCut
every time, PIL-based augmentation, PIL paste) as a ratio, and the in-process rate of every
synthesis mode beyond the paper (occlusion drop / retry, each blending mode, a blending list,
distractors without and with occlusion) against the default. ``--many N`` also renders from N
object files (links to the same photos) to show that memory stays bounded.

    .venv/bin/python bench/stream.py                      # birds benchmark if built (synthdet data birds), else synthetic
    .venv/bin/python bench/stream.py --objects DIR --backgrounds DIR --samples 2000

Figures are from whatever machine runs it; the CPU may be shared (noisy).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream, make_loader, make_stream
from synthdet.synthesis.compose import place_boxes
from synthdet.utils.files import list_images
from synthdet.utils.image import write_image



def _birds_benchmark():
    """The built-in birds benchmark if it has been built (``synthdet data birds``), else None."""
    from synthdet.datasets.birds import load_birds

    try:
        return load_birds()
    except FileNotFoundError:
        return None


def _rss_mb() -> tuple[float, float]:
    """Peak RSS (MB) of this process and of its finished children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _prepare_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    objects = tmp / "objects"
    objects.mkdir()
    bench = None if (args.objects and args.backgrounds) else _birds_benchmark()
    if args.objects:
        src = [p for p in list_images(args.objects)]
    elif bench is not None:  # the benchmark's classification images (real photos, 128 px)
        src = list_images(bench.classification_dir)
    else:
        src = []
    if src:
        for p in src:  # flatten into one class (alpha is dropped: the segmenter finds the mask)
            os.symlink(p.resolve(), objects / f"{len(list(objects.iterdir())):05d}{p.suffix}")
    else:
        rng = np.random.default_rng(0)
        for k in range(30):
            img = np.full((160, 160, 3), 230, np.uint8)
            cv2.ellipse(img, (80, 80), (int(rng.integers(30, 70)), int(rng.integers(30, 70))), 0, 0, 360,
                        tuple(int(c) for c in rng.integers(0, 200, 3)), -1)
            write_image(objects / f"{k:05d}.png", img)
    if args.backgrounds:
        backgrounds = Path(args.backgrounds)
    elif bench is not None:
        backgrounds = bench.backgrounds_dir
    else:
        backgrounds = tmp / "backgrounds"
        rng = np.random.default_rng(1)
        for k in range(12):
            write_image(backgrounds / f"{k}.jpg", cv2.resize(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
                                                             (1280, 960), interpolation=cv2.INTER_CUBIC))
    return objects, backgrounds


def _loader_rate(stream: SynthStream, workers: int, samples: int, batch: int) -> float:
    """Samples/s through a DataLoader (after the workers delivered their first batch)."""
    loader = make_loader(stream, batch_size=batch, num_workers=workers)
    it = iter(loader)
    warm = max(2, workers) * 2
    for _ in range(warm):
        next(it)
    t0 = time.perf_counter()
    n = 0
    while n < samples:
        images, _ = next(it)
        n += len(images)
    dt = time.perf_counter() - t0
    del it, loader
    return n / dt


# ----------------------------------------------------------------------------- reference


def _reference_sample(objs: list[Path], bgs: list[Path], cfg: SynthConfig, rng: np.random.Generator) -> tuple:
    """The authors' approach, straightforwardly: decode everything per sample, re-segment every
    object with GrabCut, augment with PIL, paste with PIL."""
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    from synthdet.segmentation.grabcut import grabcut_mask

    s = cfg.canvas_size
    bg = Image.open(bgs[int(rng.integers(len(bgs)))]).convert("RGB").resize((s, s), Image.BILINEAR)
    boxes = place_boxes(cfg, rng)
    labels = []
    for x0, y0, x1, y1 in boxes:
        obj = Image.open(objs[int(rng.integers(len(objs)))]).convert("RGB").resize(
            (cfg.object_size, cfg.object_size), Image.BILINEAR)
        mask = Image.fromarray((grabcut_mask(np.asarray(obj)) * 255).astype(np.uint8))
        # photometric, random order
        for op in rng.permutation(4):
            if op == 0 and rng.random() < cfg.blur_p:
                obj = obj.filter(ImageFilter.GaussianBlur(float(rng.uniform(*cfg.blur_sigma))))
            elif op == 1:
                obj = ImageEnhance.Contrast(obj).enhance(float(rng.uniform(*cfg.contrast)))
            elif op == 2:
                a = np.asarray(obj, np.float32) + rng.normal(0, rng.uniform(*cfg.noise_sigma), (*obj.size[::-1], 3))
                obj = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
            elif op == 3:
                obj = ImageEnhance.Brightness(obj).enhance(float(rng.uniform(*cfg.brightness)))
        # geometric, random order, same on object and mask
        w, h = obj.size
        for op in rng.permutation(3):
            if op == 0 and rng.random() < cfg.hflip_p:
                obj, mask = ImageOps.mirror(obj), ImageOps.mirror(mask)
            elif op == 1:
                l, r, t, b = rng.uniform(*cfg.crop, size=4)
                rect = (int(l * w), int(t * h), w - int(r * w), h - int(b * h))
                obj = obj.crop(rect).resize((w, h), Image.BILINEAR)
                mask = mask.crop(rect).resize((w, h), Image.BILINEAR)
            elif op == 2:
                ang = float(rng.uniform(*cfg.rotate))
                sc = float(rng.uniform(*cfg.scale))
                tr = tuple(float(v) * w for v in rng.uniform(*cfg.translate, size=2))
                sh = float(rng.uniform(*cfg.shear))
                from torchvision.transforms.functional import affine

                obj = affine(obj, ang, tr, sc, [sh, 0.0])
                mask = affine(mask, ang, tr, sc, [sh, 0.0])
        bw, bh = int(x1 - x0), int(y1 - y0)
        obj, mask = obj.resize((bw, bh), Image.BILINEAR), mask.resize((bw, bh), Image.BILINEAR)
        bg.paste(obj, (int(x0), int(y0)), mask)
        bb = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
        labels.append(bb)
    return np.asarray(bg), labels


def _reference_rate(objects: Path, backgrounds: Path, cfg: SynthConfig, samples: int) -> float:
    objs, bgs = list_images(objects), list_images(backgrounds)
    t0 = time.perf_counter()
    for i in range(samples):
        _reference_sample(objs, bgs, cfg, np.random.default_rng([0, i]))
    return samples / (time.perf_counter() - t0)


MODES = {
    "default (paper: alpha, no overlap), again with warm caches": {},
    "occlusion, drop hidden (allow_overlap)": {"allow_overlap": True},
    "occlusion, retry placement": {"allow_overlap": True, "occluded": "retry"},
    "blend gaussian": {"blend": "gaussian"},
    "blend poisson": {"blend": "poisson"},
    "blend motion": {"blend": "motion"},
    "blend list (one of the four per object)": {"blend": ("alpha", "gaussian", "poisson", "motion")},
    "distractors 1-3": {"distractors": "bench"},
    "distractors 1-3 + occlusion": {"distractors": "bench", "allow_overlap": True},
}


def _mode_rates(stream: SynthStream, cfg: SynthConfig, distractors: Path, tmp: Path, segmenter: str,
                samples: int) -> None:
    """In-process samples/s of each mode of MODES (same inputs), printed with the ratio to the first."""
    dis = make_stream(distractors, stream.backgrounds, segmenter=segmenter, cache_dir=tmp / "masks",
                      config=cfg, progress=False, one_class=True).objects
    default_rate = None
    for name, changes in MODES.items():
        mode_cfg = cfg.replace(**changes)
        s = SynthStream(stream.objects, stream.backgrounds, mode_cfg,
                        distractors=dis if mode_cfg.distractors else None)
        for i in range(20):
            s.render(i)
        t0 = time.perf_counter()
        for i in range(20, 20 + samples):
            s.render(i)
        rate = samples / (time.perf_counter() - t0)
        default_rate = default_rate or rate
        st = s.stats
        print(f"in-process render, {name}: {rate:7.1f} samples/s ({rate / default_rate:.2f}x the default; "
              f"{st['objects'] / max(1, st['samples']):.2f} labelled objects/sample, {st['dropped']} dropped, "
              f"{st['retries']} redrawn, {st['rejected']} left out, {st['distractors']} distractors)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", help="object image folder (default: the birds benchmark classification images if built, else synthetic)")
    ap.add_argument("--backgrounds", help="background folder (default: the birds benchmark backgrounds if built, else synthetic)")
    ap.add_argument("--segmenter", default="grabcut")
    ap.add_argument("--canvas", type=int, default=320)
    ap.add_argument("--samples", type=int, default=1000, help="samples timed per configuration")
    ap.add_argument("--reference-samples", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--backend", default="affine", choices=["affine", "albumentations"])
    ap.add_argument("--many", type=int, default=3000, help="object files for the memory check (0: skip)")
    ap.add_argument("--distractors", help="distractor image folder for the distractor modes (default: the "
                    "object images themselves; the rate is what is measured)")
    ap.add_argument("--no-modes", action="store_true", help="skip the per-mode rates")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import albumentations  # noqa: F401  (imported before the baseline so it is not counted as growth)

    base = _current_rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="synthdet-bench-"))
    try:
        objects, backgrounds = _prepare_inputs(args, tmp)
        cfg = SynthConfig(canvas_size=args.canvas, geometric_backend=args.backend)
        t0 = time.perf_counter()
        stream = make_stream(objects, backgrounds, segmenter=args.segmenter, cache_dir=tmp / "masks", config=cfg,
                             progress=False)
        prep = time.perf_counter() - t0
        n_obj, n_bg = len(stream.objects), len(stream.backgrounds)
        print(f"inputs: {n_obj} object images ({args.segmenter} masks cached in {prep:.1f} s), "
              f"{n_bg} backgrounds; canvas {args.canvas}x{args.canvas}; geometric backend {args.backend}; "
              f"cpu count {os.cpu_count()}")
        # in-process
        for i in range(50):
            stream.render(i)
        t0 = time.perf_counter()
        for i in range(50, 50 + args.samples):
            stream.render(i)
        inproc = args.samples / (time.perf_counter() - t0)
        objs_per = stream.stats["objects"] / max(1, stream.stats["samples"])
        print(f"in-process render: {inproc:7.1f} samples/s ({objs_per:.2f} objects/sample)")
        alb = SynthStream(stream.objects, stream.backgrounds, cfg.replace(geometric_backend="albumentations"))
        for i in range(20):
            alb.render(i)
        n_alb = max(50, args.samples // 4)
        t0 = time.perf_counter()
        for i in range(20, 20 + n_alb):
            alb.render(i)
        alb_rate = n_alb / (time.perf_counter() - t0)
        print(f"in-process render, albumentations geometric backend: {alb_rate:7.1f} samples/s "
              f"(one-warp affine backend is {inproc / alb_rate:.2f}x that)")
        if not args.no_modes:
            _mode_rates(stream, cfg, objects if args.distractors is None else Path(args.distractors), tmp,
                        args.segmenter, max(50, args.samples // 4))
        rates = {}
        for workers in (1, 2):
            rates[workers] = _loader_rate(stream, workers, args.samples, args.batch)
            print(f"DataLoader {workers} worker(s), batch {args.batch}: {rates[workers]:7.1f} samples/s "
                  f"({rates[workers] / workers:.1f} per worker)")
        u8 = SynthStream(stream.objects, stream.backgrounds, cfg, uint8_images=True)
        rate_u8 = _loader_rate(u8, 1, args.samples, args.batch)
        print(f"DataLoader 1 worker, uint8 images (consumer divides by 255): {rate_u8:7.1f} samples/s")
        own, kids = _rss_mb()
        print(f"RSS: {base:.0f} MB after imports; peak {own:.0f} MB main process, {kids:.0f} MB largest "
              f"worker (forked: shares the parent's pages)")
        ref = _reference_rate(objects, backgrounds, cfg, args.reference_samples)
        print(f"reference (GrabCut every object every sample, PIL augmentation): {ref:7.2f} samples/s")
        print(f"speed-up: in-process {inproc / ref:.0f}x, 1 worker {rates[1] / ref:.0f}x, "
              f"2 workers {rates[2] / ref:.0f}x")
        if args.many:
            many = tmp / "many"
            many.mkdir()
            files = list_images(objects)
            for k in range(args.many):
                p = files[k % len(files)]
                os.symlink(p.resolve(), many / f"{k:06d}{p.suffix}")
            src = FolderObjectSource(many, masks=stream.objects.masks, size=cfg.object_size)
            big = SynthStream(src, BackgroundSource.from_folder(backgrounds), cfg)
            rss = []
            t0 = time.perf_counter()
            for i in range(args.many):
                big.render(i)
                if i in (args.many // 4, args.many - 1):
                    rss.append(_current_rss_mb())
            print(f"memory check: {args.many} object files, {args.many} samples "
                  f"({src.stats['loaded']} object decodes, cache {src.cache_items} items) at "
                  f"{args.many / (time.perf_counter() - t0):.0f} samples/s: RSS {rss[0]:.0f} MB after "
                  f"{args.many // 4 + 1} samples, {rss[1]:.0f} MB at the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
