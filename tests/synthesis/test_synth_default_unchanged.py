"""The default mode (alpha blending, no overlap, no distractors) renders what it rendered before
issue 13 (occlusion, blending modes, distractors) was added.

The placed boxes, labels and object keys depend only on the random draws (numpy's Generator) and
are compared exactly, as are the label boxes. The pixels also depend on OpenCV's warps, whose
kernels are picked by the processor's vector units (AVX-512, AVX2, SSE): the same inputs give
images that differ by rounding in the last grey level on another processor (measured: one pixel
of one sample differs by 1 between the AVX-512 and the AVX2 / SSE4 paths, `OPENCV_CPU_DISABLE`).
So pixels are compared with a tolerance: at most 2 grey levels anywhere and a mean absolute
difference under 0.1, far below what any change of the rendering would give (a different
object, position, scale or blending moves hundreds of pixels by tens of levels).

The reference arrays (``data/default_samples_97451d5.npz``) were written on an AVX-512 machine by
code whose image hashes were still those recorded with commit 97451d5's code (the previous form
of this test), so they are that commit's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream
from synthdet.utils.image import write_image

from synth_helpers import DiskMasks

REFERENCE_FILE = Path(__file__).parent / "data" / "default_samples_97451d5.npz"
MAX_GREY_DIFF, MAX_MEAN_DIFF = 2, 0.1

CONFIGS = {
    "default": SynthConfig(canvas_size=64, object_size=24, num_objects=(1, 4), box_side=(0.1, 0.5)),
    "overlap": SynthConfig(canvas_size=64, object_size=24, num_objects=(2, 5), box_side=(0.2, 0.6),
                           allow_overlap=True),
}
# the random draws, exact on every machine: placed boxes (before blending) and object files, in order
REFERENCE = {
    "default": [
        {"placed": [[24, 9, 47, 45]], "labels": [1], "keys": ["a1.png"]},
        {"placed": [[29, 41, 43, 48], [26, 7, 38, 31]], "labels": [2, 2], "keys": ["b1.png", "b0.png"]},
        {"placed": [[7, 41, 13, 52]], "labels": [1], "keys": ["a2.png"]},
        {"placed": [[10, 30, 23, 38]], "labels": [2], "keys": ["b1.png"]},
        {"placed": [[1, 45, 5, 53], [22, 47, 38, 63], [4, 13, 26, 33]], "labels": [2, 2, 2], "keys": ["b1.png", "b2.png", "b0.png"]},
        {"placed": [[27, 9, 44, 20]], "labels": [1], "keys": ["a0.png"]},
    ],
    "overlap": [
        {"placed": [[22, 5, 50, 49], [16, 6, 46, 32]], "labels": [2, 1], "keys": ["b2.png", "a2.png"]},
        {"placed": [[23, 35, 45, 47], [35, 25, 59, 49], [19, 2, 58, 32]], "labels": [2, 2, 1], "keys": ["b2.png", "b0.png", "a2.png"]},
        {"placed": [[37, 32, 48, 53], [24, 13, 36, 34]], "labels": [1, 1], "keys": ["a0.png", "a0.png"]},
        {"placed": [[25, 34, 46, 46], [20, 8, 41, 24]], "labels": [1, 1], "keys": ["a0.png", "a1.png"]},
        {"placed": [[27, 11, 54, 46], [13, 5, 32, 17], [9, 37, 37, 53], [3, 41, 34, 63], [23, 47, 40, 58]], "labels": [1, 1, 1, 1, 2], "keys": ["a0.png", "a2.png", "a2.png", "a1.png", "b1.png"]},
        {"placed": [[9, 47, 34, 63], [11, 28, 34, 63]], "labels": [2, 2], "keys": ["b0.png", "b2.png"]},
    ],
}


def _inputs(root: Path) -> tuple[Path, Path]:
    """Gradient objects (two classes) and noise backgrounds, all PNG (lossless)."""
    yy, xx = np.mgrid[:40, :36]
    for c, name in enumerate(("a", "b")):
        d = root / "objects" / name
        d.mkdir(parents=True)
        for k in range(3):
            img = np.stack([xx * 7 % 256, yy * (5 + k) % 256, np.full_like(xx, 60 + 90 * c)], -1)
            write_image(d / f"{name}{k}.png", img.astype(np.uint8))
    rng = np.random.default_rng(0)
    bg = root / "backgrounds"
    bg.mkdir()
    for k in range(3):
        write_image(bg / f"bg{k}.png", rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    return root / "objects", bg


def _render_all(tmp_path: Path) -> dict:
    objs, bgs = _inputs(tmp_path)
    out = {}
    for name, cfg in CONFIGS.items():
        src = FolderObjectSource(objs, masks=DiskMasks(), size=cfg.object_size)
        stream = SynthStream(src, BackgroundSource.from_folder(bgs), cfg, seed=3)
        out[name] = [stream.render(i) for i in range(6)]
    return out


def test_default_samples_unchanged(tmp_path):
    got = _render_all(tmp_path)
    ref = np.load(REFERENCE_FILE)
    for name, draws in REFERENCE.items():
        for i, (s, r) in enumerate(zip(got[name], draws)):
            assert s.placed.tolist() == r["placed"] and [Path(k).name for k in s.keys] == r["keys"], (name, i)
            assert s.labels.tolist() == r["labels"], (name, i)
            np.testing.assert_array_equal(s.boxes, ref[f"{name}_{i}_boxes"], err_msg=f"{name} sample {i}")
            diff = np.abs(s.image.astype(np.int16) - ref[f"{name}_{i}_image"].astype(np.int16))
            assert diff.max() <= MAX_GREY_DIFF and diff.mean() < MAX_MEAN_DIFF, (name, i, diff.max(), diff.mean())


def test_the_pixel_tolerance_catches_a_real_change(tmp_path):
    """The tolerance is not so loose that a rendering change passes: sample 0 drawn with the next
    sample's object (same background) fails it, and so does an image shifted by one pixel."""
    got = _render_all(tmp_path)
    ref = np.load(REFERENCE_FILE)
    image = got["default"][0].image.astype(np.int16)
    for changed in (got["default"][1].image.astype(np.int16), np.roll(image, 1, axis=1)):
        diff = np.abs(changed - ref["default_0_image"].astype(np.int16))
        assert diff.max() > MAX_GREY_DIFF and diff.mean() > MAX_MEAN_DIFF
