"""``synthdet segment fit | apply | eval``: thin CLI over :mod:`synthdet.segmentation`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..utils.choices import SEGMENTERS

log = logging.getLogger(__name__)


def _segmenter_kwargs(args: argparse.Namespace) -> dict:
    kw: dict = {}
    if getattr(args, "checkpoint", None):
        kw["checkpoint"] = args.checkpoint
        kw["device"] = args.device
    if getattr(args, "mask_dir", None):
        kw["mask_dir"] = args.mask_dir
        if "file" in args.segmenter.split(","):
            kw["image_root"] = args.images
    if "," in args.segmenter:  # a fallback chain: settings per member
        own = {"redo": ("checkpoint", "device"), "file": ("mask_dir", "image_root")}
        kw = {n: {k: v for k, v in kw.items() if k in own[n]} for n in args.segmenter.split(",") if n in own}
    if getattr(args, "gates", None):
        kw["gates"] = _gates_spec(args.gates)
    return kw


def _gates_spec(text: str):
    """``--gates default`` or ``--gates min_area=0.02,max_border=0.3`` -> a gates spec."""
    from ..utils.config import parse_key_value

    if text in ("default", "true", "on"):
        return True
    try:
        return dict(parse_key_value(kv) for kv in text.split(","))
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--gates: {e}") from None


def _add_segmenter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--segmenter", required=True, choices=SEGMENTERS, metavar="NAME",
                   help="segmenter: %(choices)s; NAME,NAME...: try each in turn under the quality gates")
    p.add_argument("--gates", metavar="SPEC",
                   help="mask quality gates: 'default' or KEY=VALUE,... of MaskGates (min_area, max_area, "
                        "max_border, max_components, min_component, min_largest, orient); a rejected "
                        "image falls back to the next segmenter or is skipped")
    p.add_argument("--checkpoint", type=Path, help="ReDO checkpoint (file or training folder), for redo")
    p.add_argument("--mask-dir", type=Path,
                   help="folder of existing masks laid out like the images (cat/001.png), for file")
    p.add_argument("--device", default="cpu", help="device for redo inference: cpu | cuda | auto")


def register(subparsers: argparse._SubParsersAction) -> None:
    seg = subparsers.add_parser("segment", help="unsupervised object segmentation (ReDO, GrabCut, ...)")
    sub = seg.add_subparsers(dest="segment_command", metavar="ACTION")

    p = sub.add_parser("fit", help="train ReDO on unlabelled classification images (the CPU recipe)",
                       description="Train ReDO (the CPU recipe of docs/segmentation.md, section ReDO, unless "
                                   "--config says otherwise) on a class's images: no masks, no boxes. Prints "
                                   "the losses, the object's share of the pixels and collapse warnings as it goes.")
    p.add_argument("--segmenter", default="redo", choices=("redo",),
                   help="the segmenter to train (redo, the one that learns; default redo)")
    p.add_argument("--images", type=Path, required=True, help="folder of object images (searched recursively)")
    p.add_argument("--out", type=Path, help="output folder: best.pt (the one to use), last.pt, good.pt, "
                   "history.json (losses, collapse restarts), previews/, done.json (default: the cache "
                   "$SYNTHDET_CACHE/redo/<digest> that `segment apply/eval --segmenter redo` without "
                   "--checkpoint reuses); a finished fit there with the same settings is reused")
    p.add_argument("--config", type=Path, help="YAML file of RedoConfig fields")
    p.add_argument("--minutes", type=float,
                   help="budget of the whole fit in wall minutes, loading and features included (default 30)")
    p.add_argument("--resolution", type=int, choices=(32, 64, 128), help="working resolution (default 32)")
    p.add_argument("--iterations", type=int, help="most training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--channels", type=int, help="set every network's base width (default 64 mask, 16 the others)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: config's, auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is much faster on a busy shared CPU)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    p.set_defaults(func=_fit)

    p = sub.add_parser("apply", help="write one mask PNG per image (value x 255)")
    _add_segmenter_args(p)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the masks, laid out like the images (cat/001.jpg -> OUT/cat/001.png)")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=_apply)

    p = sub.add_parser("eval", help="mean IoU / pixel accuracy against true masks (same stems)")
    _add_segmenter_args(p)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--true-masks", type=Path, required=True)
    p.add_argument("--limit", type=int)
    p.set_defaults(func=_eval)
    seg.set_defaults(func=lambda args: (seg.print_help(), 2)[1])


def _fit(args: argparse.Namespace) -> int:
    import torch

    from ..utils.config import from_dict, load_yaml
    from ..utils.files import list_images
    from ..utils.inputs import check_images, warn_skipped
    from .redo import RedoConfig, redo_config_with
    from .redo_segmenter import fit_cached, fit_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(RedoConfig, load_yaml(args.config), where=str(args.config)) if args.config else RedoConfig()
    ch = args.channels
    cfg = redo_config_with(cfg, resolution=args.resolution, iterations=args.iterations, batch_size=args.batch_size,
                           device=args.device, seed=args.seed, time_limit_minutes=args.minutes,
                           mask_channels=ch, gen_channels=ch, disc_channels=ch, enc_channels=ch)
    paths = list_images(args.images)
    good, bad = check_images(paths, desc=f"checking {args.images}")  # bad files skipped before any work
    warn_skipped(bad, len(paths), str(args.images))
    paths = [paths[i] for i in good]
    if len(paths) < 2:
        raise ValueError(f"{args.images}: ReDO needs at least 2 readable images, found {len(paths)}")
    out = args.out if args.out is not None else fit_dir(cfg, paths)
    ckpt, how = fit_cached(paths, cfg, out, resume=not args.no_resume)
    print(f"ReDO checkpoint ({'reused' if how == 'loaded' else 'trained'}): {ckpt}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..utils.files import list_images
    from ..utils.image import BadImageError, read_readable, write_image
    from . import get_segmenter

    from .gates import fit_if_needed, segment_checked

    from ..utils.inputs import check_images, warn_skipped

    seg = get_segmenter(args.segmenter, **_segmenter_kwargs(args))
    paths = list_images(args.images)
    good, bad = check_images(paths, desc=f"checking {args.images}")  # bad files skipped before any work
    warn_skipped(bad, len(paths), str(args.images))
    paths = [paths[i] for i in good]
    fit_if_needed(seg, paths)
    written, skipped = 0, len(bad)
    for i in tqdm(range(0, len(paths), args.batch_size), desc=f"segment [{seg.name}]"):
        images, ok, bad = read_readable(paths[i : i + args.batch_size])
        skipped += bad
        for p, im in zip(ok, images):
            try:
                m, note = segment_checked(seg, [im], [p])[0]
            except BadImageError as e:
                skipped += 1
                log.warning("skipping %s", e)
                continue
            if m is None:
                log.info("no mask for %s: %s", p, note)
                continue
            rel = p.relative_to(args.images).with_suffix(".png")  # cat/001.jpg -> OUT/cat/001.png
            write_image(args.out / rel, np.clip(np.round(m * 255), 0, 255).astype(np.uint8))
            written += 1
    print(f"{written} masks written to {args.out}, {skipped} images skipped")
    if hasattr(seg, "summary"):
        print(seg.summary())
    return 0 if written else 1


def _eval(args: argparse.Namespace) -> int:
    from . import get_segmenter
    from .metrics import evaluate_segmenter

    seg = get_segmenter(args.segmenter, **_segmenter_kwargs(args))
    r = evaluate_segmenter(seg, args.images, args.true_masks, limit=args.limit)
    print(f"{r['segmenter']}: mean IoU {r['iou']:.3f}, pixel accuracy {r['accuracy']:.3f}, "
          f"{r['ms_per_image']:.1f} ms/image over {r['images']} images ({r['skipped']} skipped)"
          + (f", fitted in {r['fit_seconds']:.1f} s" if r["fit_seconds"] >= 0.05 else ""))
    if "rejected" in r:
        kept = r["images"] - r["rejected"]
        print(f"{r['gates']}; mean IoU over the {kept} masks let through "
              + (f"{r['iou_accepted']:.3f}" if kept else "-"))
    return 0
