"""``synthdet synth``: render N artificial detection samples to a COCO / YOLO / VOC folder."""

from __future__ import annotations

import argparse
from typing import Any

from ..utils.choices import SEGMENTERS
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
                   help="segmenter: %(choices)s; none = naive pasting (default %(default)s)")
    p.add_argument("--segmenter-arg", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="segmenter option, e.g. checkpoint=redo.pt or mask_dir=masks/ (repeatable)")
    p.add_argument("--cache-dir", default=None, help="mask cache folder (default ~/.cache/synthdet/masks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first sample")
    p.add_argument("--config", default=None,
                   help="YAML of SynthConfig settings (top level or under 'synthesis:')")
    p.add_argument("--set", type=parse_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="override one SynthConfig setting, e.g. num_objects=[1,3] (repeatable)")
    p.add_argument("--preview", action="store_true", help="also write preview.png with boxes drawn")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from ..utils.config import from_dict, load_yaml
    from .config import SynthConfig
    from ..utils.outdir import check_ours
    from .export import export_dataset
    from .stream import make_stream

    check_ours(args.out, args.force, legacy=("synth_config.yaml",), writer="synth")  # before any work

    data: dict[str, Any] = {}
    if args.config:
        data = load_yaml(args.config)
        if "synthesis" in data and isinstance(data["synthesis"], dict):
            data = data["synthesis"]
    data.update(dict(args.set))
    config = from_dict(SynthConfig, data, where=args.config or "synthesis")
    stream = make_stream(args.objects, args.backgrounds, segmenter=args.segmenter,
                         segmenter_kwargs=dict(args.segmenter_arg), cache_dir=args.cache_dir, config=config,
                         seed=args.seed, start=args.start, progress=not args.no_progress)
    export_dataset(stream, args.out, args.count, args.format, preview=args.preview,
                   progress=not args.no_progress, force=args.force)
    print(f"wrote {args.count} samples ({args.format}) to {args.out}")
    return 0
