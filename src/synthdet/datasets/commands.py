"""``synthdet data ...``: build the offline benchmark data (thin layer over :mod:`synthdet.datasets`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build datasets (the offline birds benchmark)")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    birds = sub.add_parser(
        "birds",
        help="build the offline birds benchmark (classification images, real scenes, backgrounds)",
        description="Fetch the Debian packages tuxpaint-stamps-default and mate-backgrounds (no root "
        "needed) and the scikit-image/scikit-learn sample photos, then build <root>/birds: "
        "classification images + true masks, real detection scenes (COCO train/val/test), "
        "synthesis backgrounds, a contact sheet and manifest.json. Reused if already built.",
    )
    birds.add_argument("--root", type=Path, default=None,
                       help="data root; the benchmark goes to ROOT/birds (default: $SYNTHDET_HOME "
                       "or ~/.cache/synthdet)")
    birds.add_argument("--seed", type=int, default=None, help="random seed (default 0, or the config's)")
    birds.add_argument("--force", action="store_true", help="rebuild even if a complete benchmark exists, and replace a ROOT/birds "
                       "folder that synthdet did not write")
    birds.add_argument("--cache", type=Path, default=None,
                       help="where downloaded/extracted packages are kept (default: ROOT/cache)")
    birds.add_argument("--debs", type=Path, default=None,
                       help="folder with the two .deb files (instead of 'apt-get download')")
    birds.add_argument("--sources", type=Path, default=None,
                       help="folder holding the packages' extracted usr/share/... trees (e.g. / when "
                       "they are installed); nothing is downloaded")
    birds.add_argument("--config", type=Path, default=None,
                       help="YAML file of BirdsConfig settings (sizes, split counts, ...)")
    birds.add_argument("--no-extra-photos", action="store_true",
                       help="do not use the scikit-image/scikit-learn sample photos as backgrounds")
    birds.add_argument("--no-progress", action="store_true", help="no progress bars")
    birds.add_argument("--distractors", type=int, nargs="?", const=300, default=None, metavar="COUNT",
                       help="also render COUNT (default 300) images of non-bird photographs (same package) "
                            "into ROOT/birds_distractors, for `synthdet synth --distractors`")
    birds.set_defaults(func=_birds)


def _birds(args: argparse.Namespace) -> int:
    import dataclasses

    from ..utils.config import from_dict, load_yaml
    from .birds import BirdsConfig, build_birds, default_data_root

    config = from_dict(BirdsConfig, load_yaml(args.config), where=str(args.config)) if args.config else BirdsConfig()
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    root = args.root if args.root is not None else default_data_root()
    t0 = time.perf_counter()
    bench = build_birds(root, config, force=args.force, cache_dir=args.cache, debs_dir=args.debs,
                        extracted_dir=args.sources,
                        extra_photos=not args.no_extra_photos, progress=not args.no_progress)
    m = bench.manifest
    c = m["counts"]
    print(f"birds benchmark: {bench.root}  ({time.perf_counter() - t0:.1f} s)")
    print(f"  classification images: {c['classification']}  ({bench.classification_dir})")
    for split in ("train", "val", "test"):
        print(f"  {split:5s} scenes: {c[split]['images']} images, {c[split]['boxes']} boxes  "
              f"({bench.annotations[split]})")
    ids = m["identities"]
    print(f"  identities: {len(ids['seen'])} seen, {len(ids['held_out'])} held out for test: "
          f"{', '.join(ids['held_out'])}")
    print(f"  synthesis backgrounds: {len(m['backgrounds']['synthesis_files'])} ({bench.backgrounds_dir}); "
          f"real-scene photos: {len(m['backgrounds']['real_scenes'])}")
    print(f"  contact sheet: {bench.contact_sheet}")
    if args.distractors:
        from .birds.distractors import build_birds_distractors

        out = build_birds_distractors(root / "birds_distractors", bench, count=args.distractors, seed=config.seed,
                                      cache_dir=args.cache if args.cache is not None else root / "cache",
                                      debs_dir=args.debs, force=args.force)
        print(f"  distractors (non-bird photographs): {out}")
    return 0
