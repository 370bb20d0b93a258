"""The default mode (alpha blending, no overlap, no distractors) renders exactly what it rendered
before issue 13 (occlusion, blending modes, distractors) was added.

The reference values were recorded with the code of commit 97451d5 on these inputs. The placed
boxes, labels and object keys depend only on the random draws (numpy's Generator), so they are
compared everywhere; the pixel hashes also depend on OpenCV's warps and are compared only under
the OpenCV version they were recorded with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream
from synthdet.utils.image import write_image

from synth_helpers import DiskMasks

RECORDED_CV2 = "4.14.0"
CONFIGS = {
    "default": SynthConfig(canvas_size=64, object_size=24, num_objects=(1, 4), box_side=(0.1, 0.5)),
    "overlap": SynthConfig(canvas_size=64, object_size=24, num_objects=(2, 5), box_side=(0.2, 0.6),
                           allow_overlap=True),
}
REFERENCE = {
    "default": [
        {"placed": [[24, 9, 47, 45]], "labels": [1], "keys": ["a1.png"], "image": "bce7b9343e5aa2fb", "boxes": "a99bc3f6e0e6395d"},
        {"placed": [[29, 41, 43, 48], [26, 7, 38, 31]], "labels": [2, 2], "keys": ["b1.png", "b0.png"], "image": "0da32dd4f69960e0", "boxes": "b4348d4c281e98d1"},
        {"placed": [[7, 41, 13, 52]], "labels": [1], "keys": ["a2.png"], "image": "66184aa70961c680", "boxes": "f2647c8d52c66b07"},
        {"placed": [[10, 30, 23, 38]], "labels": [2], "keys": ["b1.png"], "image": "189d628ce4e402e6", "boxes": "0005abc503749311"},
        {"placed": [[1, 45, 5, 53], [22, 47, 38, 63], [4, 13, 26, 33]], "labels": [2, 2, 2], "keys": ["b1.png", "b2.png", "b0.png"], "image": "d11d6d0e761f2fd7", "boxes": "983bd81b3d9b7a91"},
        {"placed": [[27, 9, 44, 20]], "labels": [1], "keys": ["a0.png"], "image": "cc114315f367c15f", "boxes": "f512274352f95c73"},
    ],
    "overlap": [
        {"placed": [[22, 5, 50, 49], [16, 6, 46, 32]], "labels": [2, 1], "keys": ["b2.png", "a2.png"], "image": "fc2069f29aff7067", "boxes": "76f3317e1e2ae3b4"},
        {"placed": [[23, 35, 45, 47], [35, 25, 59, 49], [19, 2, 58, 32]], "labels": [2, 2, 1], "keys": ["b2.png", "b0.png", "a2.png"], "image": "9f045dacfde25b4e", "boxes": "78fdc9d62ee9f9aa"},
        {"placed": [[37, 32, 48, 53], [24, 13, 36, 34]], "labels": [1, 1], "keys": ["a0.png", "a0.png"], "image": "33a2ae97ff752aa1", "boxes": "1ae74d58810271f8"},
        {"placed": [[25, 34, 46, 46], [20, 8, 41, 24]], "labels": [1, 1], "keys": ["a0.png", "a1.png"], "image": "2f6c3ecc90212bde", "boxes": "54677c37f3ec2ea9"},
        {"placed": [[27, 11, 54, 46], [13, 5, 32, 17], [9, 37, 37, 53], [3, 41, 34, 63], [23, 47, 40, 58]], "labels": [1, 1, 1, 1, 2], "keys": ["a0.png", "a2.png", "a2.png", "a1.png", "b1.png"], "image": "6f4762f2a85940e1", "boxes": "9aadae3075291160"},
        {"placed": [[9, 47, 34, 63], [11, 28, 34, 63]], "labels": [2, 2], "keys": ["b0.png", "b2.png"], "image": "099e66981301c2c7", "boxes": "e7dbd204aa0203fe"},
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


def _digest(s) -> dict:
    return {"placed": s.placed.tolist(), "labels": s.labels.tolist(), "keys": [Path(k).name for k in s.keys],
            "image": hashlib.sha256(s.image.tobytes()).hexdigest()[:16],
            "boxes": hashlib.sha256(s.boxes.tobytes()).hexdigest()[:16]}


def _render_all(tmp_path: Path) -> dict:
    objs, bgs = _inputs(tmp_path)
    out = {}
    for name, cfg in CONFIGS.items():
        src = FolderObjectSource(objs, masks=DiskMasks(), size=cfg.object_size)
        stream = SynthStream(src, BackgroundSource.from_folder(bgs), cfg, seed=3)
        out[name] = [_digest(stream.render(i)) for i in range(6)]
    return out


def test_default_samples_unchanged(tmp_path):
    got = _render_all(tmp_path)
    for name, ref in REFERENCE.items():
        for i, (g, r) in enumerate(zip(got[name], ref)):
            assert (g["placed"], g["keys"]) == (r["placed"], r["keys"]), (name, i)
            if cv2.__version__ == RECORDED_CV2:  # with overlap, only the label boxes may change
                assert g["image"] == r["image"], (name, i)
            if name == "default":
                assert g["labels"] == r["labels"], i
                if cv2.__version__ == RECORDED_CV2:
                    assert g["boxes"] == r["boxes"], i
