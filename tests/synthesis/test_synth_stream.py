import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdet.sources import BackgroundSource, FolderObjectSource, ObjectSource
from synthdet.synthesis import SynthConfig, SynthPool, SynthStream, make_loader, make_stream
from synthdet.synthesis.compose import any_overlap, mask_box
from synthdet.utils.image import write_image

from synth_helpers import DiskMasks, make_backgrounds, make_objects

SMALL = SynthConfig(canvas_size=64, object_size=24, num_objects=(1, 4), box_side=(0.1, 0.5))


def _stream(folders, masks=None, cfg=SMALL, **kw):
    objs, bgs = folders
    src = FolderObjectSource(objs, masks=masks, size=cfg.object_size)
    return SynthStream(src, BackgroundSource.from_folder(bgs), cfg, **kw)


def test_sample_contract_and_boxes_equal_mask_extent(folders):
    stream = _stream(folders, masks=DiskMasks())
    assert isinstance(stream.objects, ObjectSource)
    for i in range(30):
        s = stream.render(i)
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
        assert not any_overlap(s.placed)
        full = s.full_masks()
        for k in range(len(s.boxes)):
            x0, y0, x1, y1 = s.placed[k]
            assert s.placed[k].tolist() == [x0, y0, x1, y1] and (x1 - x0, y1 - y0) == s.masks[k].shape[::-1]
            if s.empty[k]:
                assert s.boxes[k].tolist() == s.placed[k].tolist()
            else:
                assert s.boxes[k].tolist() == list(mask_box(full[k]))
                bx = s.boxes[k]
                assert bx[0] >= x0 and bx[1] >= y0 and bx[2] <= x1 and bx[3] <= y1
    image, target = stream.sample(3)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].shape[1] == 4 and target["labels"].dtype == torch.int64


def test_box_matches_visible_pixels(tmp_path):
    """White objects with a hard disk mask on a black background: the label box is where the
    object became visible (up to the half-pixel soft edge of the interpolated mask)."""
    objs = make_objects(tmp_path / "o", {"white": (255, 255, 255)}, per_class=1, size=48)
    bgs = make_backgrounds(tmp_path / "b", count=1, value=0)
    cfg = SMALL.replace(photometric=False, num_objects=(1, 1))
    stream = _stream((objs, bgs), masks=DiskMasks(), cfg=cfg)
    checked = 0
    for i in range(25):
        s = stream.render(i)
        if s.empty[0]:
            continue
        visible = mask_box((s.image.max(axis=2) > 0).astype(np.float32))
        x0, y0, x1, y1 = s.boxes[0]
        assert visible[0] >= x0 and visible[1] >= y0 and visible[2] <= x1 and visible[3] <= y1
        assert max(abs(a - b) for a, b in zip(visible, s.boxes[0])) <= 1
        checked += 1
    assert checked > 15


def test_naive_mode_boxes_are_the_pasted_frame(folders):
    """Objects without a mask (segmenter `none`) are pasted whole and labelled with the placed box."""
    stream = _stream(folders)  # masks=None: nothing segmented
    assert stream.objects.draw(np.random.default_rng(0)).mask is None
    for i in range(10):
        s = stream.render(i)
        assert np.array_equal(s.boxes, s.placed.astype(np.float32)) and not s.empty.any()
        assert all((m == 1).all() for m in s.masks)


def test_naive_pasting_is_opaque_whole_frame(tmp_path):
    """Dark objects on white backgrounds, no augmentation: every pixel of each placed box is the
    object's frame (nothing of the background shows), the box is the label."""
    objs = make_objects(tmp_path / "o", {"dark": (10, 20, 30)}, per_class=2, size=32)
    bgs = make_backgrounds(tmp_path / "b", count=1, value=255)
    cfg = SMALL.replace(photometric=False, geometric=False)
    stream = _stream((objs, bgs), cfg=cfg)
    for i in range(5):
        s = stream.render(i)
        for (x0, y0, x1, y1), box in zip(s.placed, s.boxes):
            assert (s.image[y0:y1, x0:x1] < 200).all() and box.tolist() == [x0, y0, x1, y1]


def test_naive_paste_key_is_rejected_with_what_to_write():
    from synthdet.synthesis.config import synth_config
    from synthdet.utils.config import ConfigError

    with pytest.raises(ConfigError, match="naive_paste.*the segmenter `none`"):
        synth_config({"canvas_size": 64, "naive_paste": True})


def test_empty_and_full_masks(folders):
    stream = _stream(folders, masks=DiskMasks("empty"))
    s = stream.render(0)
    assert s.empty.all() and np.array_equal(s.boxes, s.placed.astype(np.float32))
    assert stream.stats["empty_masks"] == len(s.boxes) and stream.objects.stats["empty_masks"] >= 1
    full = _stream(folders, masks=DiskMasks("full"))
    full.render(0)
    assert full.objects.stats["full_masks"] >= 1


def test_multiclass_labels_follow_subfolders(folders):
    cfg = SMALL.replace(photometric=False, geometric=False)
    stream = _stream(folders, cfg=cfg)
    assert stream.class_names == ["green", "red"]
    seen = set()
    for i in range(20):
        s = stream.render(i)
        for (x0, y0, x1, y1), lab in zip(s.placed, s.labels):
            pix = s.image[(y0 + y1) // 2, (x0 + x1) // 2]
            assert (pix.argmax(), lab) in ((1, 1), (0, 2))  # green -> 1, red -> 2
            seen.add(int(lab))
    assert seen == {1, 2}


def test_one_class_merges_subfolders(folders):
    from synthdet.sources import FolderObjectSource

    src = FolderObjectSource(folders[0], class_name="thing", one_class=True)
    assert src.class_names == ["thing"] and len(src.files) == 1
    assert len(src) == len(FolderObjectSource(folders[0]))
    assert {src.draw(np.random.default_rng(k)).label for k in range(10)} == {1}


def _collect(stream, workers, batch=2):
    out = []
    for images, targets in make_loader(stream, batch_size=batch, num_workers=workers):
        out.append([(im.numpy().tobytes(), t["boxes"].numpy().tobytes()) for im, t in zip(images, targets)])
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_same_samples_for_0_1_4_workers_no_duplicates(folders):
    stream = _stream(folders, cfg=SMALL.replace(canvas_size=48), seed=5, length=9)
    ref = _collect(stream, 0)
    assert [len(b) for b in ref] == [2, 2, 2, 2, 1]
    assert _collect(stream, 1) == ref
    assert _collect(stream, 4) == ref
    flat = [x for b in ref for x in b]
    assert len(set(im for im, _ in flat)) == 9
    direct = [stream.sample(i)[0].numpy().tobytes() for i in range(9)]
    assert [im for im, _ in flat] == direct


def test_seed_changes_samples_and_pickle_roundtrip(folders):
    stream = _stream(folders, masks=DiskMasks(), seed=1)
    stream.render(0)  # warm caches: they must not travel or matter
    clone = pickle.loads(pickle.dumps(stream))
    for i in (0, 7):
        a, b = stream.render(i), clone.render(i)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    other = _stream(folders, masks=DiskMasks(), seed=2)
    assert not np.array_equal(other.render(0).image, stream.render(0).image)


def test_pool_is_fixed_prefix_of_stream(folders):
    stream = _stream(folders)
    pool = SynthPool(stream, 5)
    assert len(pool) == 5
    assert torch.equal(pool[4][0], stream.sample(4)[0])
    with pytest.raises(IndexError):
        pool[5]
    batches = list(make_loader(pool, batch_size=2, shuffle=True, seed=0))
    assert sum(len(b[0]) for b in batches) == 5


def test_bad_object_files_skipped_and_counted(tmp_path):
    d = tmp_path / "objs"
    d.mkdir()
    (d / "corrupt.jpg").write_bytes(b"not an image at all")
    write_image(d / "grey.png", np.full((30, 20), 128, np.uint8))
    import cv2

    cv2.imwrite(str(d / "deep.png"), np.full((30, 30, 3), 40000, np.uint16))
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[..., 3] = 255
    cv2.imwrite(str(d / "rgba.png"), rgba)
    write_image(d / "tiny.png", np.full((1, 1, 3), 9, np.uint8))
    write_image(d / "huge.png", np.full((1500, 900, 3), 7, np.uint8))
    src = FolderObjectSource(d, size=16)
    rng = np.random.default_rng(0)
    keys = set()
    for _ in range(80):
        o = src.draw(rng)
        assert o.image.shape == (16, 16, 3) and o.mask is None  # no masks given: naive pasting
        keys.add(Path(o.key).name)
    assert "corrupt.jpg" not in keys and len(keys) == 5
    assert src.stats["bad_files"] == 1


def test_all_bad_or_empty_folders_raise_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty"):
        FolderObjectSource(empty)
    with pytest.raises(ValueError, match="empty"):
        BackgroundSource.from_folder(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"xx")
    with pytest.raises(RuntimeError, match="no usable object image"):
        FolderObjectSource(bad).draw(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="no usable background"):
        BackgroundSource.from_folder(bad).draw(np.random.default_rng(0), 32)


def test_small_background_is_upscaled(tmp_path):
    bgs = make_backgrounds(tmp_path / "b", count=1, size=(8, 10))
    src = BackgroundSource.from_folder(bgs, crop=(0.5, 1.0), flip_p=0.5)
    out = src.draw(np.random.default_rng(0), 64)
    assert out.shape == (64, 64, 3) and out.flags.writeable
    assert src.stats["upscaled"] == 1


def test_make_stream_naive_from_folders(folders):
    objs, bgs = folders
    stream = make_stream(objs, bgs, segmenter="none", config=SMALL, seed=3)
    assert stream.class_names == ["green", "red"] and stream.config == SMALL
    by_hand = _stream(folders, seed=3)  # the one path: objects without masks
    for i in range(4):
        s, h = stream.render(i), by_hand.render(i)
        assert np.array_equal(s.boxes, s.placed.astype(np.float32))
        assert np.array_equal(s.image, h.image) and np.array_equal(s.boxes, h.boxes)


def test_uint8_images_option(folders):
    stream = _stream(folders)
    f, _ = stream.sample(2)
    u8 = _stream(folders, uint8_images=True)
    b, t = u8.sample(2)
    assert b.dtype == torch.uint8 and b.shape == f.shape
    assert torch.allclose(b.float() / 255, f, atol=1e-6)
    masks = _stream(folders, with_masks=True).sample(2)[1]["masks"]
    assert masks.shape == (len(t["boxes"]), 64, 64) and masks.dtype == torch.uint8


def test_flat_folder_with_junk_subfolder_is_one_class(tmp_path):
    d = tmp_path / "birds"
    make_objects(d, {"cartoon": (1, 2, 3)}, per_class=2)
    for k in range(3):
        write_image(d / f"b{k}.png", np.full((20, 20, 3), 50, np.uint8))
    src = FolderObjectSource(d, size=16)
    assert src.class_names == ["birds"] and len(src) == 3
    assert FolderObjectSource(d, class_name="bird").class_names == ["bird"]


def test_bad_file_does_not_break_determinism(folders, tmp_path):
    objs, bgs = folders
    (objs / "red" / "broken.png").write_bytes(b"\x89PNG broken")
    warm = _stream((objs, bgs))
    for i in range(20):
        warm.render(i)  # learns which file is bad
    assert warm.objects.stats["bad_files"] == 1
    fresh = _stream((objs, bgs))
    for i in (19, 3, 11):
        assert np.array_equal(warm.render(i).image, fresh.render(i).image)


def test_backgrounds_from_voc_skip_excluded_classes(tmp_path):
    from synthdet.datasets.records import DetectionRecord
    from synthdet.datasets.voc import write_voc

    root = tmp_path / "VOC2007"
    recs = []
    for k, lab in enumerate([1, 2, 1]):  # 1 = cat, 2 = person
        path = root / "JPEGImages" / f"{k:06d}.jpg"
        write_image(path, np.full((40, 50, 3), 60 * k, np.uint8))
        recs.append(DetectionRecord(str(path), 50, 40, boxes=[[1, 1, 10, 10]], labels=[lab]))
    write_voc(root, recs, ["cat", "person"], image_set="trainval")
    src = BackgroundSource.from_voc(root, exclude=("person",))
    assert [p.name for p in src.paths] == ["000000.jpg", "000002.jpg"]
    assert src.draw(np.random.default_rng(0), 32).shape == (32, 32, 3)


def test_caches_are_bounded_and_not_pickled(folders):
    objs, bgs = folders
    src = FolderObjectSource(objs, size=16, cache_items=2)
    bg = BackgroundSource.from_folder(bgs, cache_items=2, crop=(0.5, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(30):
        src.draw(rng)
        bg.draw(rng, 32)
    assert len(src._cache) <= 2 and len(bg._cache) <= 2 and src.stats["loaded"] > 2
    assert pickle.loads(pickle.dumps(src))._cache == {} and pickle.loads(pickle.dumps(bg))._cache == {}


def test_make_stream_with_real_mask_cache(folders, tmp_path):
    objs, bgs = folders
    stream = make_stream(objs, bgs, segmenter="ellipse", cache_dir=tmp_path / "masks", config=SMALL,
                         progress=False)
    assert stream.objects.draw(np.random.default_rng(0)).mask is not None
    assert any((tmp_path / "masks").rglob("*"))
    s = stream.render(1)
    full = s.full_masks()
    for k in range(len(s.boxes)):
        assert s.boxes[k].tolist() == list(mask_box(full[k])) or s.empty[k]
