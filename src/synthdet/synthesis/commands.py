"""``synthdet synth``: render N artificial detection samples to a COCO / YOLO / VOC folder."""

from __future__ import annotations

import argparse
from typing import Any

from ..utils.choices import DATASET_FORMATS, SEGMENTERS
from ..utils.config import parse_key_value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth", help="render artificial detection samples to disk (COCO/YOLO/VOC)",
        description="Paste segmented object images onto background photos (paper section III) and "
                    "write COUNT samples as a detection dataset.")
    p.add_argument("--objects", required=True, help="folder of object images (class subfolders allowed)")
    p.add_argument("--backgrounds", required=True, help="folder of background photos")
    p.add_argument("--out", required=True, help="output folder (replaced by each run; a folder synthdet did "
                   "not write is refused)")
    p.add_argument("--force", action="store_true", help="replace --out even if synthdet did not write it")
    p.add_argument("--count", type=int, required=True, help="number of samples")
    p.add_argument("--format", choices=("coco", "yolo", "voc"), default="coco")
    p.add_argument("--segmenter", default="grabcut", choices=SEGMENTERS, metavar="NAME",
                   help="segmenter: %(choices)s; none = naive pasting; NAME,NAME...: try each in turn "
                        "under the mask quality gates (default %(default)s)")
    p.add_argument("--segmenter-arg", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="segmenter option, e.g. checkpoint=redo.pt or mask_dir=masks/, or gates=true "
                        "(mask quality gates; a failing image is skipped) (repeatable)")
    p.add_argument("--cache-dir", default=None, help="mask cache folder (default ~/.cache/synthdet/masks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first sample")
    p.add_argument("--config", default=None,
                   help="YAML of SynthConfig settings (top level or under 'synthesis:')")
    p.add_argument("--set", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override one SynthConfig setting, e.g. num_objects=[1,3] (repeatable)")
    p.add_argument("--preset", choices=("faces", "birds", "cars"), default=None,
                   help="the authors' per-class geometry (objects per image, box side, aspect); "
                        "--config / --set keys win over it")
    p.add_argument("--placement", choices=("uniform", "fitted"), default=None,
                   help="uniform: the paper's ranges (default); fitted: count, side, aspect and position "
                        "drawn from the real boxes of --real-annotations")
    p.add_argument("--real-annotations", default=None, metavar="FILE",
                   help="real box-labelled data (read as --real-format): the boxes --placement fitted "
                        "draws from, and the histograms --stats compares with")
    p.add_argument("--real-format", default="coco", choices=DATASET_FORMATS, metavar="FORMAT",
                   help="dataset format of --real-annotations: %(choices)s (default %(default)s)")
    p.add_argument("--preview", action="store_true", help="also write preview.png with boxes drawn")
    p.add_argument("--distractors", default=None, metavar="DIR",
                   help="folder of non-target images pasted unlabelled (segmented like --objects)")
    p.add_argument("--stats", action="store_true",
                   help="also write stats.png / stats.json: objects per image, box side, aspect, visible "
                        "fraction and class histograms (next to those of --real-annotations if given), "
                        "dropped / redrawn / left-out counts")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from ..utils.config import load_yaml
    from .config import synth_config
    from .placement import load_box_prior
    from ..utils.outdir import check_ours
    from .export import export_dataset
    from .stats import SampleStats, real_stats, write_stats
    from .stream import make_stream

    check_ours(args.out, args.force, legacy=("synth_config.yaml",), writer="synth")  # before any work

    data: dict[str, Any] = {}
    if args.config:
        data = load_yaml(args.config)
        if "synthesis" in data and isinstance(data["synthesis"], dict):
            data = data["synthesis"]
    data.update(dict(args.set))
    if args.preset:
        data["preset"] = args.preset
    if args.placement:
        data["placement"] = args.placement
    config = synth_config(data, where=args.config or "synthesis")
    prior = None
    if config.placement == "fitted":
        if not args.real_annotations:
            raise ValueError("--placement fitted needs --real-annotations FILE (the real boxes to fit)")
        prior = load_box_prior(args.real_annotations, args.real_format)
    stream = make_stream(args.objects, args.backgrounds, segmenter=args.segmenter,
                         segmenter_kwargs=dict(args.segmenter_arg), cache_dir=args.cache_dir, config=config,
                         seed=args.seed, start=args.start, progress=not args.no_progress, box_prior=prior,
                         distractors=args.distractors)
    stats = SampleStats(stream.class_names) if args.stats else None
    export_dataset(stream, args.out, args.count, args.format, preview=args.preview,
                   progress=not args.no_progress, force=args.force, stats=stats)
    if stats is not None:
        real = real_stats(args.real_annotations, args.real_format) if args.real_annotations else None
        png, _ = write_stats({**stats.summary(), "counters": dict(stream.stats)}, args.out, real)
        print(f"wrote {png} and {png.with_suffix('.json')}")
    print(f"wrote {args.count} samples ({args.format}) to {args.out}")
    left = {what: len(getattr(src, "skipped", [])) for what, src in
            (("object", stream.objects), ("background", stream.backgrounds), ("distractor", stream.distractors))}
    if any(left.values()):
        print("skipped (cannot be used, see the warnings): "
              + ", ".join(f"{n} {what} images" for what, n in left.items() if n))
    mc = getattr(stream.objects, "mask_counts", None)
    if mc:
        print(f"object masks ({args.segmenter}): {mc['computed'] + mc['cached']} of {mc['total']} images, "
              f"{mc.get('rejected', 0)} rejected by the quality gates, {mc['skipped']} unreadable")
    return 0
