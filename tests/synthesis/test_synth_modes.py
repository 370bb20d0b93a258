"""Every synthesis mode through the stream: determinism across workers, labels unchanged by
blending, distractors never labelled, COCO occlusion fields, diagnostics (``--stats``)."""

import json

import numpy as np
import pytest

from synthdet.cli import main
from synthdet.sources import BackgroundSource, FolderObjectSource
from synthdet.synthesis import SynthConfig, SynthStream, make_loader, make_stream
from synthdet.synthesis.export import export_dataset
from synthdet.synthesis.stats import real_stats, stream_stats, write_stats
from synthdet.utils.image import read_image

from synth_helpers import DiskMasks, make_objects

BASE = SynthConfig(canvas_size=48, object_size=20, num_objects=(2, 4), box_side=(0.2, 0.6))
MODES = {
    "overlap_drop": BASE.replace(allow_overlap=True),
    "overlap_retry": BASE.replace(allow_overlap=True, occluded="retry", min_visibility=0.5),
    "gaussian": BASE.replace(blend="gaussian"),
    "poisson": BASE.replace(blend="poisson"),
    "motion": BASE.replace(blend="motion"),
    "blend_list": BASE.replace(blend=("alpha", "gaussian", "poisson", "motion")),
    "distractors": BASE.replace(distractors="d"),
    "distractors_overlap": BASE.replace(distractors="d", allow_overlap=True, blend=("alpha", "motion")),
}


def _stream(folders, cfg, **kw):
    objs, bgs = folders
    src = FolderObjectSource(objs, masks=DiskMasks(), size=cfg.object_size)
    dis = FolderObjectSource(objs, masks=DiskMasks(), size=cfg.object_size, one_class=True,
                             class_name="distractor") if cfg.distractors else None
    return SynthStream(src, BackgroundSource.from_folder(bgs), cfg, distractors=dis, **kw)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_same_samples_for_0_and_2_workers(folders, mode):
    stream = _stream(folders, MODES[mode], seed=7, length=6)

    def collect(workers):
        return [(im.numpy().tobytes(), t["boxes"].numpy().tobytes(), t["labels"].numpy().tobytes())
                for images, targets in make_loader(stream, batch_size=2, num_workers=workers)
                for im, t in zip(images, targets)]

    ref = collect(0)
    assert len(ref) == 6 and len({r[0] for r in ref}) == 6
    assert collect(2) == ref


@pytest.mark.parametrize("mode", ["gaussian", "poisson", "motion", "blend_list"])
def test_blending_changes_pixels_not_labels(folders, mode):
    alpha, other = _stream(folders, BASE, seed=3), _stream(folders, MODES[mode], seed=3)
    differ = 0
    for i in range(8):
        a, b = alpha.render(i), other.render(i)
        for name in ("boxes", "labels", "placed", "amodal", "visible"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (name, i)
        differ += not np.array_equal(a.image, b.image)
    assert differ >= 6


def test_occlusion_boxes_inside_amodal_and_match_visible_masks(folders):
    stream = _stream(folders, MODES["overlap_drop"].replace(num_objects=(4, 6), box_side=(0.4, 0.7)), seed=1)
    partial = 0
    for i in range(20):
        s = stream.render(i)
        full = s.full_masks()
        for k in range(len(s.boxes)):
            bx, am = s.boxes[k], s.amodal[k]
            assert (bx[:2] >= am[:2]).all() and (bx[2:] <= am[2:]).all()
            ys, xs = np.nonzero(full[k])
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == bx.tolist()
            assert 0.25 <= s.visible[k] <= 1.0
            partial += s.visible[k] < 1.0
    assert partial > 5 and stream.stats["dropped"] > 0


def test_distractors_are_pasted_never_labelled(folders):
    plain, with_d = _stream(folders, BASE, seed=2), _stream(folders, MODES["distractors"], seed=2)
    for i in range(10):
        s = with_d.render(i)
        assert set(s.labels.tolist()) <= {1, 2} and len(s.labels) == len(s.placed)
        # the targets are where they were without distractors, all labelled (in pasting order)
        assert sorted(s.placed.tolist()) == sorted(plain.render(i).placed.tolist())
    assert with_d.stats["distractors"] > 5 and with_d.stats["distractors"] + with_d.stats["rejected"] >= 10
    with pytest.raises(ValueError, match="distractor"):
        SynthStream(plain.objects, plain.backgrounds, MODES["distractors"])


def test_make_stream_segments_a_distractor_folder(folders, tmp_path):
    objs, bgs = folders
    junk = make_objects(tmp_path / "junk", {"junk": (0, 0, 255)}, per_class=2)
    stream = make_stream(objs, bgs, segmenter="grabcut", cache_dir=tmp_path / "masks", config=BASE,
                         progress=False, distractors=junk / "junk")
    assert stream.config.distractors == str(junk / "junk") and stream.distractors.class_names == ["distractor"]
    stream.render(0)
    assert stream.stats["distractors"] + stream.stats["rejected"] >= 1


def test_coco_export_has_amodal_and_visibility(folders, tmp_path):
    stream = _stream(folders, MODES["overlap_drop"], seed=4)
    export_dataset(stream, tmp_path / "coco", 6, "coco", progress=False)
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for i in range(6):
        s = stream.render(i)
        anns = by_image.get(i + 1, [])
        assert [a["bbox"] for a in anns] == [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in s.boxes.tolist()]
        assert [a["amodal_bbox"] for a in anns] == [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in s.amodal.tolist()]
        assert [a["visible_fraction"] for a in anns] == pytest.approx(s.visible.tolist())


def test_stats_json_png_and_real_side_by_side(folders, tmp_path):
    stream = _stream(folders, MODES["distractors_overlap"], seed=0)
    synth = stream_stats(stream, 12)
    assert synth["images"] == 12 and sum(synth["count"]["counts"]) == 12
    assert synth["objects"] == sum(synth["classes"].values()) == sum(synth["side"]["counts"])
    assert synth["counters"]["distractors"] > 0 and synth["counters"]["samples"] == 12
    export_dataset(_stream(folders, BASE), tmp_path / "real", 5, "coco", progress=False)
    real = real_stats(tmp_path / "real" / "annotations.json")
    assert real["images"] == 5 and real["visible"]["mean"] == 1.0
    png, js = write_stats(synth, tmp_path / "out", real)
    assert read_image(png).shape[1] > 1000
    saved = json.loads(js.read_text())
    assert saved["synthetic"]["objects"] == synth["objects"] and saved["real"]["images"] == 5


def test_cli_stats_and_distractors(folders, tmp_path):
    objs, bgs = folders
    junk = make_objects(tmp_path / "junk", {"junk": (0, 0, 255)}, per_class=2)
    out = tmp_path / "cli"
    rc = main(["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--out", str(out), "--count", "4",
               "--segmenter", "none", "--set", "canvas_size=48", "--set", "object_size=16",
               "--set", "allow_overlap=true", "--distractors", str(junk / "junk"), "--stats", "--no-progress"])
    assert rc == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["synthetic"]["images"] == 4 and stats["real"] is None
    assert stats["synthetic"]["counters"]["distractors"] > 0 and (out / "stats.png").is_file()
