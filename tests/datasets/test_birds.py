"""The offline birds benchmark builder, on tiny synthetic inputs (no network, no Debian packages)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthdet.datasets.birds import (
    BirdsConfig,
    BirdsSources,
    FetchError,
    build_birds,
    build_birds_from_sources,
    fetch_sources,
    load_birds,
)
from synthdet.datasets.birds import build as build_mod
from synthdet.datasets.birds import fetch as fetch_mod
from synthdet.datasets.birds.render import alpha_box, make_cutout, render_scene
from synthdet.utils.config import ConfigError, from_dict
from synthdet.utils.files import file_digest
from synthdet.utils.image import write_image

COLORS = {  # identity -> RGB
    "red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
    "yellow": (230, 220, 20), "magenta": (210, 30, 210), "cyan": (20, 210, 220),
}
TINY = BirdsConfig(
    seed=0, classification_count=6, classification_size=32, scene_size=64,
    train_scenes=4, val_scenes=2, test_scenes=3, held_out_identities=2, identity_groups=(),
)


def _ellipse_rgba(color: tuple[int, int, int], w: int = 40, h: int = 26) -> np.ndarray:
    """An RGBA cut-out: a filled ellipse of ``color`` (alpha 255) in a transparent margin."""
    img = np.zeros((h + 6, w + 6, 4), np.uint8)
    img[..., :3] = 255  # junk colour under the transparent margin, like real cut-outs
    cv2.ellipse(img, ((w + 6) // 2, (h + 6) // 2), (w // 2, h // 2), 0, 0, 360, (*color, 255), -1)
    return img


def _write_rgba(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgba[..., [2, 1, 0, 3]])


def _backgrounds(folder: Path, n: int = 4, ext: str = ".jpg") -> list[Path]:
    rng = np.random.default_rng(123)
    paths = []
    for k in range(n):
        img = np.full((96, 120, 3), 40 + 50 * k, np.uint8)
        if k % 2:
            img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        p = folder / f"bg{k}{ext}"
        folder.mkdir(parents=True, exist_ok=True)
        write_image(p, img)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> BirdsSources:
    d = tmp_path_factory.mktemp("sources")
    birds = []
    for k, (name, color) in enumerate(COLORS.items()):
        p = d / "birds" / f"{name}.png"
        _write_rgba(p, _ellipse_rgba(color, 30 + 4 * k, 20 + 2 * k))
        birds.append(p)
    return BirdsSources(birds=birds, backgrounds=_backgrounds(d / "bg"))


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "birds"
    return build_birds_from_sources(out, sources, TINY, progress=False)


def _digests(root: Path) -> dict[str, str]:
    """Content digest of every file, but the ``.synthdet`` marker (it records when it was written)."""
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".synthdet"}


# --------------------------------------------------------------------------- render

def test_alpha_box_one_pixel_is_exclusive():
    a = np.zeros((10, 10), np.float32)
    a[7, 5] = 1.0
    np.testing.assert_array_equal(alpha_box(a), [5, 7, 6, 8])
    assert alpha_box(np.zeros((4, 4))) is None


def test_single_bird_box_equals_alpha_extent_in_pixels():
    """Box of a single pasted bird = extent of the pixels closer to the bird's colour than to the
    plain background (i.e. alpha > 0.5), measured on the rendered image itself."""
    bird, bg_color = np.array(COLORS["blue"], float), np.array((200, 200, 200), float)
    rgba = _ellipse_rgba(COLORS["blue"])
    cut = make_cutout("blue", rgba[..., :3], rgba[..., 3] / 255.0)
    bg = np.full((64, 64, 3), bg_color, np.uint8)
    for seed in range(5):
        r = render_scene(bg, [cut], np.random.default_rng(seed), scale=(0.3, 0.7), lighting=(0, 0),
                         edge_blur=(0.8, 0.8), noise_std=(0, 0))
        assert len(r.boxes) == 1
        img = r.image.astype(float)
        closer = np.linalg.norm(img - bird, axis=2) < np.linalg.norm(img - bg_color, axis=2)
        np.testing.assert_array_equal(r.boxes[0], alpha_box(closer.astype(float)))
        np.testing.assert_array_equal(r.boxes[0], alpha_box(r.masks[0].astype(float)))


def test_occluded_birds_keep_min_visible_fraction():
    rgba = _ellipse_rgba(COLORS["red"])
    cut = make_cutout("red", rgba[..., :3], rgba[..., 3] / 255.0)
    bg = np.full((64, 64, 3), 128, np.uint8)
    for seed in range(5):
        r = render_scene(bg, [cut] * 4, np.random.default_rng(seed), scale=(0.4, 0.6), min_visible=0.3)
        assert 1 <= len(r.boxes) <= 4
        for box, mask in zip(r.boxes, r.masks):
            np.testing.assert_array_equal(box, alpha_box(mask.astype(float)))  # visible extent
        # masks are of the *visible* parts: they never overlap
        assert r.masks.sum(0).max() <= 1


# --------------------------------------------------------------------------- build

def test_build_layout_counts_and_boxes(built):
    from pycocotools import mask as mask_utils

    m = built.manifest
    assert (built.root / "manifest.json").is_file() and built.contact_sheet.is_file()
    cls = built.classification_images()
    assert len(cls) == TINY.classification_count == m["counts"]["classification"]
    for p in cls:
        mask = cv2.imread(str(built.true_mask_path(p)), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        x0, y0, x1, y1 = alpha_box(mask > 127)
        assert 0.4 * 32 - 2 <= max(x1 - x0, y1 - y0) <= 0.8 * 32 + 2  # 40-80 % of the frame
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        records, names = built.split_records(split)
        assert names == {1: "bird"} and len(records) == n == m["counts"][split]["images"]
        coco = json.loads(built.annotations[split].read_text())
        for rec in records:
            assert Path(rec.image_path).is_file() and (rec.width, rec.height) == (64, 64)
            assert 1 <= len(rec.boxes) <= 4 and (rec.labels == 1).all()
            assert (rec.boxes[:, :2] >= 0).all() and (rec.boxes[:, 2:] <= 64).all()
        for ann in coco["annotations"]:  # box = extent of the stored visible mask
            seg = mask_utils.decode(ann["segmentation"])
            x0, y0, x1, y1 = alpha_box(seg)
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]


def test_splits_are_disjoint_by_identity(built):
    m = built.manifest
    seen, held = set(m["identities"]["seen"]), set(m["identities"]["held_out"])
    assert len(held) == 2 and not seen & held and seen | held == set(COLORS)
    assert set(m["classification"].values()) <= seen
    ids = {}
    for split in ("train", "val", "test"):
        coco = json.loads(built.annotations[split].read_text())
        ids[split] = {a["identity"] for a in coco["annotations"]}
    assert ids["test"] <= held and ids["train"] <= seen and ids["val"] <= seen
    assert not ids["test"] & set(m["classification"].values())
    real, synth = m["backgrounds"]["real_scenes"], m["backgrounds"]["synthesis"]
    assert real and synth and not set(real) & set(synth)
    assert sorted(p.name for p in built.backgrounds_dir.iterdir()) == sorted(f"{Path(n).stem}.jpg" for n in synth)


def test_identity_groups_stay_together():
    group = {"red", "green", "blue"}
    cfg = dataclasses.replace(TINY, identity_groups=(tuple(sorted(group)),), held_out_identities=3)
    sides = set()
    for seed in range(12):
        seen, held = build_mod._split_identities(sorted(COLORS), cfg, np.random.default_rng(seed))
        assert group <= set(seen) or group <= set(held)
        assert not set(seen) & set(held) and len(held) == 3
        sides.add(group <= set(held))
    assert sides == {True, False}  # the group is sometimes held out, sometimes seen
    explicit = dataclasses.replace(TINY, held_out=("cyan",))
    assert build_mod._split_identities(sorted(COLORS), explicit, np.random.default_rng(0))[1] == ["cyan"]


def test_same_seed_gives_identical_files(sources, built, tmp_path):
    again = build_birds_from_sources(tmp_path / "a" / "birds", sources, TINY, progress=False)
    assert _digests(again.root) == _digests(built.root)
    other = build_birds_from_sources(tmp_path / "b" / "birds", sources, dataclasses.replace(TINY, seed=1),
                                     progress=False)
    d0, d1 = _digests(built.root), _digests(other.root)
    scenes = [k for k in d0 if k.startswith("scenes/images")]
    assert scenes and scenes == [k for k in d1 if k.startswith("scenes/images")]
    assert [d0[k] for k in scenes] != [d1[k] for k in scenes]


def test_foreign_folder_is_refused_and_replaced_only_with_force(sources, tmp_path):
    out = tmp_path / "birds"
    (out / "classification" / "images").mkdir(parents=True)
    (out / "junk.txt").write_text("the user's file")
    stale = tmp_path / ".birds.tmp-999999999"
    stale.mkdir()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_birds(tmp_path)
    with pytest.raises(FileExistsError, match="did not write.*--force"):
        build_birds_from_sources(out, sources, TINY, progress=False)
    assert (out / "junk.txt").read_text() == "the user's file"
    bench = build_birds_from_sources(out, sources, TINY, progress=False, force=True)
    assert not (out / "junk.txt").exists() and not stale.exists() and (out / ".synthdet").is_file()
    assert load_birds(tmp_path).manifest == bench.manifest
    assert load_birds(out).root == out
    assert [p.name for p in tmp_path.iterdir()] == ["birds"]
    assert build_birds_from_sources(out, sources, TINY, progress=False).manifest == bench.manifest  # ours now


def test_failed_build_leaves_nothing_and_retry_works(sources, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(build_mod, "render_scene", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        build_birds_from_sources(tmp_path / "birds", sources, TINY, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert build_birds_from_sources(tmp_path / "birds", sources, TINY, progress=False).manifest["counts"]


def test_missing_benchmark_error_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthdet data birds"):
        load_birds(tmp_path)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        from_dict(BirdsConfig, {"scene_scale": [0.7, 0.2]})
    with pytest.raises(ConfigError, match="did you mean"):
        from_dict(BirdsConfig, {"scene_sise": 64})


# --------------------------------------------------------------------------- fetch

def _package_tree(root: Path) -> Path:
    """A fake extracted ``usr/share/...`` tree: photos, a cartoon, an excluded bird, an svg."""
    birds = root / fetch_mod.BIRDS_SUBDIR
    for name in ("red", "green", "blue", "albino_peahen"):
        _write_rgba(birds / f"{name}.png", _ellipse_rgba(COLORS.get(name, (250, 250, 250))))
    _write_rgba(birds / "cartoon" / "tux.png", _ellipse_rgba((0, 0, 0)))
    (birds / "swallow.svg").write_text("<svg/>")
    (birds / "red.ogg").write_bytes(b"OggS")
    _backgrounds(root / fetch_mod.BACKGROUNDS_SUBDIR, n=3)
    return root


def test_fetch_from_extracted_tree_skips_cartoons(tmp_path):
    tree = _package_tree(tmp_path / "tree")
    src = fetch_sources(tmp_path / "cache", extracted_dir=tree, extras=False)
    assert sorted(p.stem for p in src.birds) == ["blue", "green", "red"]
    assert {"tux.png", "albino_peahen.png", "swallow.svg"} <= set(src.excluded)
    assert len(src.backgrounds) == 3
    with pytest.raises(FetchError, match="usr/share"):
        fetch_sources(tmp_path / "cache", extracted_dir=tmp_path / "nowhere", extras=False)


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write_deb(path: Path, tree: Path, subdir: str) -> None:
    """A minimal Debian package (ar archive) whose data.tar.xz holds ``tree/subdir``."""
    files = {f"./{p.relative_to(tree)}": p.read_bytes() for p in sorted((tree / subdir).rglob("*")) if p.is_file()}
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz({"./control": b"Package: x\n"})),
               ("data.tar.xz", _tar_xz(files))]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(bytes(out))


@pytest.mark.parametrize("use_dpkg", [True, False])
def test_fetch_from_debs_extracts_once(tmp_path, monkeypatch, use_dpkg):
    if use_dpkg and not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed")
    if not use_dpkg:
        real_which = shutil.which
        monkeypatch.setattr(fetch_mod.shutil, "which", lambda n: None if n == "dpkg-deb" else real_which(n))
    tree = _package_tree(tmp_path / "tree")
    debs = tmp_path / "debs"
    debs.mkdir()
    _write_deb(debs / "tuxpaint-stamps-default_1.0_all.deb", tree, fetch_mod.BIRDS_SUBDIR)
    _write_deb(debs / "mate-backgrounds_1.0_all.deb", tree, fetch_mod.BACKGROUNDS_SUBDIR)
    cache = tmp_path / "cache"
    src = fetch_sources(cache, debs_dir=debs, extras=False)
    assert sorted(p.stem for p in src.birds) == ["blue", "green", "red"] and len(src.backgrounds) == 3
    assert all(str(p).startswith(str(cache)) for p in src.birds + src.backgrounds)
    assert not list(cache.rglob("*.ogg"))  # only the needed files are extracted
    assert (debs / "mate-backgrounds_1.0_all.deb").exists()  # user-given .debs are kept

    def no_extract(*a, **k):
        raise AssertionError("extracted again")

    monkeypatch.setattr(fetch_mod, "_extract_deb", no_extract)
    assert fetch_sources(cache, debs_dir=debs, extras=False).birds == src.birds


def test_half_extracted_package_is_redone(tmp_path):
    tree = _package_tree(tmp_path / "tree")
    debs = tmp_path / "debs"
    debs.mkdir()
    _write_deb(debs / "tuxpaint-stamps-default_1.0_all.deb", tree, fetch_mod.BIRDS_SUBDIR)
    _write_deb(debs / "mate-backgrounds_1.0_all.deb", tree, fetch_mod.BACKGROUNDS_SUBDIR)
    half = tmp_path / "cache" / "tuxpaint-stamps-default" / fetch_mod.BIRDS_SUBDIR
    half.mkdir(parents=True)  # no .complete marker
    src = fetch_sources(tmp_path / "cache", debs_dir=debs, extras=False)
    assert len(src.birds) == 3


def _fake_run(responses: list, calls: list):
    def run(cmd, cwd=None, capture_output=True, text=True, **kw):
        calls.append(list(cmd))
        rc, err, write = responses.pop(0)
        if write and cwd is not None:
            Path(cwd, write).write_bytes(b"deb")
        return subprocess.CompletedProcess(cmd, rc, stdout="", stderr=err)

    return run


def test_apt_missing_package_as_user_gives_clear_error(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda n: "/usr/bin/" + n)
    monkeypatch.setattr(fetch_mod, "_is_root", lambda: False)
    monkeypatch.setattr(fetch_mod.subprocess, "run", _fake_run(
        [(100, "E: Unable to locate package tuxpaint-stamps-default", None)], calls))
    with pytest.raises(FetchError, match="sudo apt-get update") as e:
        fetch_sources(tmp_path / "cache", extras=False)
    assert "--debs" in str(e.value)
    assert calls == [["apt-get", "download", "tuxpaint-stamps-default"]]
    assert not list((tmp_path / "cache").rglob("*.deb"))


def test_apt_as_root_updates_once_then_downloads(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda n: "/usr/bin/" + n)
    monkeypatch.setattr(fetch_mod, "_is_root", lambda: True)
    monkeypatch.setattr(fetch_mod.subprocess, "run", _fake_run([
        (100, "E: Unable to locate package mate-backgrounds", None),
        (0, "", None),
        (0, "", "mate-backgrounds_1.0_all.deb"),
    ], calls))
    deb = fetch_mod._apt_download("mate-backgrounds", tmp_path / "debs")
    assert deb == tmp_path / "debs" / "mate-backgrounds_1.0_all.deb" and deb.is_file()
    assert [c[:2] for c in calls] == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"]]
    assert [p.name for p in (tmp_path / "debs").iterdir()] == [deb.name]  # no temp folders left


def test_apt_network_failure_and_no_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda n: "/usr/bin/" + n)
    monkeypatch.setattr(fetch_mod.subprocess, "run", _fake_run(
        [(100, "E: Failed to fetch http://deb.debian.org/... Temporary failure resolving", None)], []))
    with pytest.raises(FetchError, match="no network"):
        fetch_mod._apt_download("mate-backgrounds", tmp_path)
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda n: None)
    with pytest.raises(FetchError, match="apt-get not found"):
        fetch_mod._apt_download("mate-backgrounds", tmp_path)


# --------------------------------------------------------------------------- API + CLI

def test_build_birds_reuses_complete_benchmark(tmp_path):
    tree = _package_tree(tmp_path / "tree")
    root = tmp_path / "data"
    a = build_birds(root, TINY, extracted_dir=tree, extra_photos=False, progress=False)
    stamp = (a.root / "manifest.json").stat().st_mtime_ns
    b = build_birds(root, TINY, extracted_dir=tree, extra_photos=False, progress=False)
    assert (b.root / "manifest.json").stat().st_mtime_ns == stamp
    c = build_birds(root, dataclasses.replace(TINY, seed=3), extracted_dir=tree, extra_photos=False,
                    progress=False)
    assert c.manifest["seed"] == 3 and load_birds(root).manifest["seed"] == 3


def test_cli_data_birds(tmp_path, capsys):
    from synthdet.cli import main

    tree = _package_tree(tmp_path / "tree")
    cfg = tmp_path / "birds.yaml"
    cfg.write_text("classification_count: 4\nclassification_size: 32\nscene_size: 64\ntrain_scenes: 2\n"
                   "val_scenes: 1\ntest_scenes: 2\nheld_out_identities: 1\n")
    rc = main(["data", "birds", "--root", str(tmp_path / "data"), "--sources", str(tree), "--config", str(cfg),
               "--seed", "5", "--no-extra-photos", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "train scenes: 2 images" in out
    bench = load_birds(tmp_path / "data")
    assert bench.manifest["seed"] == 5 and len(bench.manifest["identities"]["held_out"]) == 1
    assert main(["data", "birds", "--root", str(tmp_path / "x"), "--sources", str(tmp_path / "none"),
                 "--no-progress"]) == 1
    assert "error" in capsys.readouterr().err


def test_broken_download_is_not_reused(tmp_path):
    debs = tmp_path / "cache" / "debs"
    debs.mkdir(parents=True)
    bad = debs / "tuxpaint-stamps-default_1.0_all.deb"
    bad.write_bytes(b"not a deb at all")
    (tmp_path / "cache" / ".tuxpaint-stamps-default.tmp-x").mkdir()  # stale extraction folder
    with pytest.raises(FetchError, match="failed|not a .deb"):
        fetch_sources(tmp_path / "cache", extras=False)
    assert not bad.exists()  # the retry downloads again instead of failing forever
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["debs"]
