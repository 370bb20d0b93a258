"""GAN training speed and generated-object throughput.

Prints (1) seconds per training iteration of the compact GAN (one discriminator + one generator
update, DiffAugment on) on random data, and (2) objects per second from
:class:`~synthdet.sources.generator.GeneratorObjectSource` with ``draw`` (one latent per call, what
the synthesis stream uses) and ``draw_many`` (batched), without a segmenter and, with
``--segmenter grabcut``, with one.

    python bench/gan.py [--resolution 64] [--channels 16] [--batch-size 16] [--iterations 10]
                        [--draws 200] [--segmenter grabcut] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthdet.segmentation import get_segmenter
from synthdet.sources.gan import GanConfig, fit_gan
from synthdet.sources.generator import GeneratorObjectSource, load_generator
from synthdet.utils.image import write_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--segmenter", default=None, help="segmenter registry name for the draw benchmark")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(64):
            write_image(root / "images" / f"{i}.png", rng.integers(0, 256, (args.resolution, args.resolution, 3),
                                                                     dtype=np.uint8))
        cfg = GanConfig(resolution=args.resolution, channels=args.channels, batch_size=args.batch_size,
                        iterations=2, fid_every=0, sample_every=0, checkpoint_every=10**9, device=args.device)
        fit_gan(root / "images", cfg, root / "run", progress=False)  # warm-up (also writes the checkpoint)
        cfg = dataclasses.replace(cfg, iterations=2 + args.iterations)
        t0 = time.perf_counter()
        fit_gan(root / "images", cfg, root / "run", progress=False)
        dt = time.perf_counter() - t0
        print(f"training: {dt / args.iterations:.3f} s/iteration at {args.resolution}px, channels "
              f"{args.channels}, batch {args.batch_size} (includes one final checkpoint + grid)")

        gen = load_generator(root / "run", device=args.device)
        for seg in [None] + ([args.segmenter] if args.segmenter else []):
            src = GeneratorObjectSource(gen, segmenter=get_segmenter(seg) if seg else None, size=128)
            src.draw(np.random.default_rng(0))
            t0 = time.perf_counter()
            r = np.random.default_rng(1)
            for _ in range(args.draws):
                src.draw(r)
            single = args.draws / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            src.draw_many(np.random.default_rng(1), args.draws)
            many = args.draws / (time.perf_counter() - t0)
            print(f"segmenter {seg or 'none'}: draw {single:.1f} objects/s, draw_many(batch={src.batch}) "
                  f"{many:.1f} objects/s (128x128 output)")


if __name__ == "__main__":
    main()
