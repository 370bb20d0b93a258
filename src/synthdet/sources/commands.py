"""``synthdet generator fit|sample``: train the object GAN, or sample any generator to a folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _output_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH such as -1,1 or 0,1, got {text!r}") from None
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generator", help="train or sample an object-image generator (GAN)")
    sub = p.add_subparsers(dest="generator_command", metavar="ACTION")

    fit = sub.add_parser("fit", help="train the compact GAN on a folder of object (classification) images")
    fit.add_argument("--images", required=True, type=Path, help="folder of object images (searched recursively)")
    fit.add_argument("--out", required=True, type=Path, help="output folder (checkpoint, sample grids, history)")
    fit.add_argument("--config", type=Path, help="YAML file with GanConfig fields")
    fit.add_argument("--resolution", type=int, choices=(32, 64, 128))
    fit.add_argument("--iterations", type=int)
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--channels", type=int, help="network width multiplier (32 or less on a CPU)")
    fit.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    fit.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    fit.set_defaults(func=_fit)

    sample = sub.add_parser("sample", help="write N generated images (and a grid) from any generator")
    sample.add_argument("--generator", required=True,
                        help="GAN checkpoint or folder, TorchScript file, or module:function")
    sample.add_argument("--count", type=int, required=True)
    sample.add_argument("--out", required=True, type=Path)
    sample.add_argument("--seed", type=int, default=0, help="image i uses a latent drawn from (seed, i)")
    sample.add_argument("--latent-dim", type=int, help="required if the generator does not declare it")
    sample.add_argument("--output-range", type=_output_range, help="generator value range, e.g. -1,1 or 0,1")
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--batch", type=int, default=64)
    sample.add_argument("--no-grid", action="store_true", help="do not write grid.png")
    sample.set_defaults(func=_sample)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _fit(args: argparse.Namespace) -> int:
    from ..utils.config import load_yaml
    from .gan import fit_gan, gan_config_from_args

    base = load_yaml(args.config) if args.config else {}
    cfg = gan_config_from_args(
        base, resolution=args.resolution, iterations=args.iterations, batch_size=args.batch_size,
        channels=args.channels, device=args.device, seed=args.seed,
    )
    max_seconds = args.max_minutes * 60.0 if args.max_minutes is not None else None
    res = fit_gan(args.images, cfg, args.out, resume=not args.no_resume, max_seconds=max_seconds)
    fid = f", FID-{res.fid_features or cfg.fid_features} {res.fid:.2f}" if res.fid is not None else ""
    stop = " (time budget reached)" if res.stopped_early else ""
    print(f"trained {res.steps}/{cfg.iterations} iterations in {res.seconds:.0f} s{stop}{fid}")
    print(f"checkpoint: {res.checkpoint}")
    if res.last_grid:
        print(f"samples: {res.last_grid}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import math

    from ..utils.image import write_image
    from ..utils.viz import make_grid
    from .generator import load_generator, sample_images

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    gen = load_generator(args.generator, latent_dim=args.latent_dim, output_range=args.output_range,
                         device=args.device)
    images = sample_images(gen, args.count, seed=args.seed, batch=args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(args.count - 1)))
    for i, img in enumerate(images):
        write_image(args.out / f"sample_{i:0{width}d}.png", img)
    if not args.no_grid:
        grid = images[:256]
        write_image(args.out / "grid.png", make_grid(grid, ncols=int(math.ceil(math.sqrt(len(grid))))))
    print(f"wrote {len(images)} images to {args.out}")
    return 0
