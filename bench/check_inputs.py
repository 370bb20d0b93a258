"""How long the up-front input check takes: ``probe_image`` over N small image files.

Writes N tiny images (64 x 48, half JPEG and half PNG, a COCO file listing them) into a folder
once, then times :func:`synthdet.utils.inputs.probe_all` with one thread and with the default
thread count, and :func:`synthdet.datasets.check.check_records` over the COCO file's records
(what ``finetune`` / ``eval`` run before their first step). The files are in the page cache after
the first pass; ``--cold`` evicts these files (and only these) from it before every pass with
``posix_fadvise(DONTNEED)``, so the disk is read again, which is where the threads pay.

    python bench/check_inputs.py --count 10000 --folder /tmp/check10k [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from synthdet.datasets import read_dataset
from synthdet.datasets.check import check_records
from synthdet.utils.image import write_image
from synthdet.utils.inputs import default_threads, probe_all


def make_files(folder: Path, count: int) -> Path:
    ann = folder / "annotations.json"
    if ann.is_file() and len(json.loads(ann.read_text())["images"]) == count:
        return ann
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        name = f"im{i:06d}.{'jpg' if i % 2 else 'png'}"
        write_image(folder / "images" / name, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"images/{name}", "width": 64, "height": 48})
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in range(count)]
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    return ann


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        return f"{name}, {'AVX-512' if 'avx512f' in out else 'no AVX-512'}"
    except (OSError, StopIteration):
        return platform.processor() or "unknown processor"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/synthdet-check-bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="evict the files from the page cache before each pass")
    args = ap.parse_args()
    ann = make_files(args.folder, args.count)
    paths = sorted((args.folder / "images").iterdir())
    print(f"{len(paths)} files in {args.folder}; {cpu_name()}; {os.cpu_count()} CPUs")
    probe_all(paths, progress=False)  # warm the page cache
    cache = "cold (evicted)" if args.cold else "warm"
    for threads in (1, default_threads(len(paths))):
        best = min(_timed(lambda: probe_all(paths, progress=False, threads=threads), paths, args.cold)
                   for _ in range(args.repeats))
        per_file = best / len(paths) * 1e6
        print(f"probe_all, {threads:2d} thread(s), {cache} cache: {best:.2f} s ({per_file:.0f} us per file)")
    records, _ = read_dataset("coco", ann)
    best = min(_timed(lambda: check_records(records, str(ann), progress=False), paths, args.cold)
               for _ in range(args.repeats))
    print(f"check_records (COCO, default threads), {cache} cache: {best:.2f} s")


def _evict(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _timed(fn, paths: list[Path], cold: bool) -> float:
    if cold:
        _evict(paths)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
