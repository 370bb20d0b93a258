"""Bad-input catalogue: one test per user mistake or hostile input (issue 11, items 4-8).

Each case ends in a clear one-line message (exit 1 from the CLI, 2 for command-line syntax) or a
counted skip, and loses nothing that was there before.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from synthdet.cli import error_message, main
from synthdet.datasets.coco import read_coco, read_coco_with_stats, write_coco
from synthdet.datasets.records import DetectionDataset, DetectionRecord
from synthdet.utils.image import BadImageError, read_image, write_image
from synthdet.utils.outdir import LockedError, NotOursError, locked


# --------------------------------------------------------------------------- helpers

def _huge_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A valid PNG header claiming ``w x h`` pixels, with almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _folders(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for k in range(3):
        img = np.zeros((32, 32, 3), np.uint8)
        img[8:24, 8:24] = (250, 40, 40)
        write_image(root / "objects" / f"o{k}.png", img)
        write_image(root / "backgrounds" / f"b{k}.jpg", rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    return root / "objects", root / "backgrounds"


def _synth(objs: Path, bgs: Path, out: Path, count: int = 2, *extra: str) -> int:
    return main(["synth", "--objects", str(objs), "--backgrounds", str(bgs), "--out", str(out),
                 "--count", str(count), "--segmenter", "none", "--no-progress", "--set", "canvas_size=48",
                 "--set", "object_size=16", *extra])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("synthdet: error: "), err
    return err[0]


def _coco(path: Path, images=None, annotations=None, categories=None) -> Path:
    data = {"images": images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 100,
                                                           "height": 80}],
            "annotations": annotations if annotations is not None else [],
            "categories": categories if categories is not None else [{"id": 1, "name": "bird"}]}
    path.write_text(json.dumps(data))
    return path


def _ann(bbox, image_id=1, category_id=1, ann_id=1) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox}


# --------------------------------------------------------------------------- item 4: nothing deleted

def test_data_birds_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "thesis.tex").write_text("years of work")
    assert main(["data", "birds", "--root", str(tmp_path), "--no-progress"]) == 1
    line = _one_line_error(capsys)
    assert "did not write" in line and "--force" in line
    assert (tmp_path / "birds" / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "cache").exists()  # refused before any download


def test_synth_refuses_a_foreign_out_folder(tmp_path, capsys):
    objs, bgs = _folders(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _synth(objs, bgs, out) == 1
    assert "did not write" in _one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert _synth(objs, bgs, out, 2, "--force") == 0
    assert not (out / "notes.txt").exists() and (out / ".synthdet").is_file()


def test_synth_rerun_replaces_its_own_output_without_mixing(tmp_path):
    objs, bgs = _folders(tmp_path)
    out = tmp_path / "out"
    assert _synth(objs, bgs, out, 4) == 0
    assert _synth(objs, bgs, out, 2, "--seed", "1") == 0
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["images"]) == 2 and len(list((out / "images").glob("*.jpg"))) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp or lock left


def test_synth_second_concurrent_writer_is_refused(tmp_path, capsys):
    objs, bgs = _folders(tmp_path)
    out = tmp_path / "out"
    assert _synth(objs, bgs, out, 2) == 0
    before = (out / "annotations.json").read_bytes()
    with locked(out):  # another writer holds the folder
        assert _synth(objs, bgs, out, 3) == 1
        assert "being written by another synthdet process" in _one_line_error(capsys)
    assert (out / "annotations.json").read_bytes() == before


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    objs, bgs = _folders(tmp_path)
    (tmp_path / ".out.lock").write_text("999999999\n")
    assert _synth(objs, bgs, tmp_path / "out", 1) == 0
    assert not (tmp_path / ".out.lock").exists()


def test_locked_refuses_a_second_holder_in_process(tmp_path):
    with locked(tmp_path / "x"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with locked(tmp_path / "x"):
                pass
    with locked(tmp_path / "x"):  # released
        pass


def _experiment_cfg(tmp_path: Path, **changes):
    from synthdet.experiments.config import experiment_from_dict

    raw = {"name": "t", "data": {"objects": "o", "backgrounds": "b", "real_train": "t.json",
                                 "real_val": "v.json", "real_test": "t.json"},
           "detectors": ["ssd_mobilenet"], "image_size": 64, "weights": "none",
           "pretrain": {"iterations": 2}, "study": {"real_sizes": [0, 2], "repeats": 1}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw.get(section, {}), field: value}
        else:
            raw[key] = value
    return experiment_from_dict(raw)


def test_experiment_with_changed_settings_is_refused_not_mixed(tmp_path):
    from synthdet.experiments import ExperimentRunner
    from synthdet.utils.config import ConfigError

    out = tmp_path / "exp"
    ExperimentRunner(_experiment_cfg(tmp_path), out)._claim()
    saved = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"other settings \(pretrain.iterations: 2 -> 5\)"):
        ExperimentRunner(_experiment_cfg(tmp_path, pretrain__iterations=5), out)._claim()
    assert (out / "config.yaml").read_text() == saved  # not overwritten with the new settings
    # more sizes / another device only plan new runs: accepted
    ExperimentRunner(_experiment_cfg(tmp_path, study__real_sizes=[0, 2, 4], device="cpu"), out)._claim()
    assert "- 4" in (out / "config.yaml").read_text()


def test_experiment_refuses_a_foreign_folder(tmp_path):
    from synthdet.experiments import ExperimentRunner

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "data.csv").write_text("a,b\n")
    with pytest.raises(NotOursError, match="choose another --out"):
        ExperimentRunner(_experiment_cfg(tmp_path), tmp_path / "exp").run()
    assert (tmp_path / "exp" / "data.csv").read_text() == "a,b\n"


# --------------------------------------------------------------------------- item 5: strict readers

@pytest.mark.parametrize("case, match", [
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 10}]}, r"images\[0\] \(id 1\): missing 'height'"),
    ({"annotations": [{"id": 7, "image_id": 1, "bbox": [0, 0, 1, 1]}]},
     r"annotations\[0\] \(id 7\): missing 'category_id'"),
    ({"annotations": [_ann([1, 1, 5, 5], category_id=9, ann_id=3)]},
     r"annotations\[0\] \(id 3\): category_id 9 is not declared"),
    ({"annotations": [_ann([1, 1, 5])]}, r"'bbox' must be 4 numbers"),
    ({"annotations": [_ann("1 1 5 5")]}, r"'bbox' must be 4 numbers"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}] * 2}, r"duplicate image id 1"),
    ({"categories": [{"name": "bird"}]}, r"categories\[0\]: missing 'id'"),
])
def test_coco_refuses_what_it_cannot_interpret_naming_file_and_entry(tmp_path, case, match):
    path = _coco(tmp_path / "bad.json", **case)
    with pytest.raises(ValueError, match=match) as e:
        read_coco(path)
    assert str(path) in str(e.value)


def test_coco_drops_and_counts_unusable_boxes_and_reports_clipped(tmp_path, caplog):
    anns = [_ann([10, 10, 20, 20], ann_id=1),            # fine
            _ann([10, 10, -5, 20], ann_id=2),            # negative width
            _ann([10, 10, 0, 20], ann_id=3),             # zero size
            _ann([float("nan"), 10, 5, 5], ann_id=4),    # NaN
            _ann([200, 10, 5, 5], ann_id=5),             # entirely off the image
            _ann([90, 70, 20, 20], ann_id=6),            # partly off: clipped
            _ann([1, 1, 5, 5], image_id=42, ann_id=7)]   # unknown image
    path = _coco(tmp_path / "a.json", annotations=anns)
    records, _, stats = read_coco_with_stats(path)
    assert (stats.dropped, stats.clipped, stats.unknown_image) == (4, 1, 1)
    assert records[0].boxes.tolist() == [[10, 10, 30, 30], [90, 70, 100, 80]]
    with caplog.at_level(logging.WARNING):
        read_coco(path)
    assert "4 unusable boxes dropped" in caplog.text and "1 boxes clipped" in caplog.text


def test_degenerate_boxes_never_reach_training(tmp_path):
    from synthdet.datasets import read_dataset

    write_image(tmp_path / "a.jpg", np.zeros((40, 50, 3), np.uint8))
    rec = DetectionRecord(str(tmp_path / "a.jpg"), 50, 40, [[5, 5, 20, 20], [7, 7, 7, 30], [1, 1, 3, 3]], [1, 1, 1],
                          extra={"difficult": [False, True, False]})
    _, target = DetectionDataset([rec], resize=32)[0]
    assert target["boxes"].shape == (2, 4) and target["difficult"].tolist() == [False, False]
    write_coco(tmp_path / "x.json", [rec], {1: "bird"}, image_root=tmp_path)
    records, _ = read_dataset("coco", tmp_path / "x.json")
    assert len(records[0].boxes) == 2


def test_huge_image_header_is_refused_before_decoding(tmp_path):
    path = _huge_png(tmp_path / "huge.png")
    with pytest.raises(BadImageError, match="too large"):
        read_image(path)


def test_synth_skips_and_counts_huge_object_and_background(tmp_path, caplog):
    objs, bgs = _folders(tmp_path)
    _huge_png(objs / "zz_huge.png")
    _huge_png(bgs / "zz_huge.png")
    with caplog.at_level(logging.WARNING):
        assert _synth(objs, bgs, tmp_path / "out", 6) == 0
    assert len(json.loads((tmp_path / "out" / "annotations.json").read_text())["images"]) == 6
    assert "too large" in caplog.text


def test_experiment_config_is_validated_before_any_work(tmp_path):
    from synthdet.experiments.config import load_experiment
    from synthdet.utils.config import ConfigError

    empty = tmp_path / "empty.yaml"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="empty experiment file"):
        load_experiment(empty)
    for study, match in (("{real_sizes: [0, -5]}", "real_sizes"), ("{repeats: 0}", "repeats"),
                         ("{mixed_real_fraction: 2}", "mixed_real_fraction"), ("{kind: nope}", "kind"),
                         ("{pool_multipliers: [0]}", "pool_multipliers"), ("{real_sizes: [1, x]}", "real_sizes")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"study: {study}\n")
        with pytest.raises(ConfigError, match=match) as e:
            load_experiment(bad)
        assert str(bad) in str(e.value)


# --------------------------------------------------------------------------- item 6: archives

def _deb_with(tmp_path: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(payload) if m.isfile() else None)
    data = buf.getvalue()
    ar = bytearray(b"!<arch>\n")
    for name, content in (("debian-binary", b"2.0\n"), ("data.tar.gz", data)):
        ar += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode()
        ar += content + (b"\n" if len(content) % 2 else b"")
    deb = tmp_path / "evil.deb"
    deb.write_bytes(bytes(ar))
    return deb


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, match", [
    (_file("./usr/share/birds/../../../../../escaped.png"), "absolute path or '..'"),
    (_link("./usr/share/birds/evil.png", "/etc/passwd"), "leaves the folder"),
    (_link("./usr/share/birds/evil.png", "../../../../x.png"), "leaves the folder"),
    (_link("./usr/share/birds/hard.png", "../../etc/passwd", tarfile.LNKTYPE), "leaves the folder"),
])
def test_archive_extraction_refuses_escaping_members(tmp_path, member, match):
    from synthdet.datasets.birds.fetch import FetchError, _extract_deb_python

    deb = _deb_with(tmp_path, [_file("./usr/share/birds/ok.png"), member])
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(FetchError, match=match):
        _extract_deb_python(deb, dest, ("./usr/share/birds/*.png",))
    assert not list(tmp_path.rglob("escaped.png"))


def test_archive_extraction_via_tar_refuses_links_leaving(tmp_path):
    from synthdet.datasets.birds.fetch import FetchError, _check_links

    dest = tmp_path / "dest"
    (dest / "usr").mkdir(parents=True)
    (dest / "usr" / "ok.png").write_bytes(b"x")
    _check_links(Path("x.deb"), dest)
    (dest / "usr" / "evil.png").symlink_to("/etc/passwd")
    with pytest.raises(FetchError, match="leaves the folder"):
        _check_links(Path("x.deb"), dest)


def test_fetch_refuses_to_delete_a_foreign_cache_folder(tmp_path):
    from synthdet.datasets.birds.fetch import FetchError, _ensure_extracted

    dest = tmp_path / "tuxpaint-stamps-default"
    dest.mkdir()
    (dest / "mine.txt").write_text("x")
    with pytest.raises(FetchError, match="not an extraction"):
        _ensure_extracted("tuxpaint-stamps-default", tmp_path, tmp_path)
    assert (dest / "mine.txt").is_file()


# --------------------------------------------------------------------------- item 7: CLI boundary

def test_user_error_is_one_line_and_traceback_only_with_verbose(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 1
    assert str(missing) in _one_line_error(capsys)
    with pytest.raises(FileNotFoundError):
        main(["report", str(missing), "-v"])  # -v after the sub-command
    with pytest.raises(FileNotFoundError):
        main(["-v", "report", str(missing)])


def test_malformed_set_value_is_one_line(tmp_path, capsys):
    objs, bgs = _folders(tmp_path)
    with pytest.raises(SystemExit) as e:
        _synth(objs, bgs, tmp_path / "out", 1, "--set", "num_objects=[1,")
    assert e.value.code == 2
    assert "not valid YAML" in _one_line_error(capsys)


def test_report_on_malformed_csv_names_file_and_line(tmp_path, capsys):
    (tmp_path / "results.csv").write_text("study,detector,variant,n_real,n_real_requested,ap50,run_id\n"
                                          "d,ssd,pretrained,10,10,0.5,r1\nd,ssd,pretrained,ten,10,0.5,r2\n")
    assert main(["report", str(tmp_path)]) == 1
    assert f"{tmp_path / 'results.csv'}:3: 'n_real' is 'ten'" in _one_line_error(capsys)
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(tmp_path)]) == 1
    assert "no 'study' value" in _one_line_error(capsys)


def test_finetune_split_option_on_a_json_is_one_line(tmp_path, capsys):
    path = _coco(tmp_path / "x.json")
    assert main(["finetune", "--train", str(path), "--train-split", "train", "--out", str(tmp_path / "o"),
                 "--weights", "none", "--iterations", "1"]) == 1
    assert "has no option split='train'" in _one_line_error(capsys)


def test_os_errors_name_the_file(tmp_path, capsys):
    e = PermissionError(13, "Permission denied", "/data/out/metrics.json")
    assert error_message(e) == "/data/out/metrics.json: Permission denied"
    assert error_message(KeyError("missing 'study'")) == "missing 'study'"
    objs, bgs = _folders(tmp_path)
    (tmp_path / "file").write_text("x")
    assert _synth(objs, bgs, tmp_path / "file" / "out", 1) == 1
    assert str(tmp_path / "file") in _one_line_error(capsys)


def test_eval_prints_the_ap_before_writing(tmp_path, monkeypatch, capsys):
    import synthdet.evaluation.evaluate as ev
    import synthdet.models as models

    monkeypatch.setattr(models, "load_detector", lambda *a, **k: object())
    monkeypatch.setattr(ev, "evaluate_detector", lambda *a, **k: {"ap50": 0.25, "per_class": {"bird": 0.25},
                                                                  "num_gt": {"bird": 1}, "num_images": 1})
    (tmp_path / "file").write_text("x")
    path = _coco(tmp_path / "x.json")
    write_image(tmp_path / "a.jpg", np.zeros((80, 100, 3), np.uint8))  # the image it lists (checked up front)
    rc = main(["eval", "--data", str(path), "--checkpoint", "c.pt", "--out", str(tmp_path / "file" / "o"),
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and "AP50 25.00 on 1 images" in out and err.startswith("synthdet: error: ")


@pytest.mark.parametrize("argv", [["pretrain", "--out", "o", "--objects", "o", "--backgrounds", "b", "--detector", "nope"],
                                  ["eval", "--data", "x", "--checkpoint", "c", "--format", "nope"],
                                  ["synth", "--objects", "o", "--backgrounds", "b", "--out", "o", "--count", "1",
                                   "--segmenter", "nope"],
                                  ["pretrain", "--out", "o", "--objects", "o", "--backgrounds", "b", "--resume"]])
def test_unknown_registry_names_and_dead_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    line = _one_line_error(capsys)
    assert "invalid choice" in line or "unrecognized arguments: --resume" in line


def test_help_does_not_import_torch():
    code = "import sys; from synthdet.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# --------------------------------------------------------------------------- item 8: smaller ones

def test_file_masks_are_keyed_by_relative_path(tmp_path):
    from synthdet.segmentation.simple import FileSegmenter

    images, masks = tmp_path / "objects", tmp_path / "masks"
    for cls, value in (("cat", 255), ("dog", 60)):
        write_image(images / cls / "001.jpg", np.zeros((8, 8, 3), np.uint8))
        write_image(masks / cls / "001.png", np.full((8, 8), value, np.uint8))
    seg = FileSegmenter(masks)
    img = np.zeros((8, 8, 3), np.uint8)
    got = seg.segment([img, img], paths=[images / "cat" / "001.jpg", images / "dog" / "001.jpg"])
    assert got[0].mean() == pytest.approx(1.0) and got[1].mean() == pytest.approx(60 / 255, abs=1e-3)


def test_flat_mask_claimed_by_two_images_is_refused(tmp_path):
    from synthdet.segmentation.simple import FileSegmenter

    write_image(tmp_path / "masks" / "001.png", np.full((8, 8), 255, np.uint8))
    seg = FileSegmenter(tmp_path / "masks")
    img = np.zeros((8, 8, 3), np.uint8)
    seg.segment([img], paths=[tmp_path / "cat" / "001.jpg"])
    with pytest.raises(BadImageError, match="also the match of"):
        seg.segment([img], paths=[tmp_path / "dog" / "001.jpg"])


def test_segment_apply_writes_masks_by_relative_path(tmp_path):
    for cls in ("cat", "dog"):
        write_image(tmp_path / "objects" / cls / "001.jpg", np.zeros((12, 12, 3), np.uint8))
    assert main(["segment", "apply", "--segmenter", "ellipse", "--images", str(tmp_path / "objects"),
                 "--out", str(tmp_path / "m")]) == 0
    assert sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.png")) == [
        "cat/001.png", "dog/001.png"]


def test_coco_export_encodes_each_mask_once_and_spools(tmp_path, monkeypatch):
    import synthdet.datasets.coco as coco

    calls = []
    real = coco._rle
    monkeypatch.setattr(coco, "_rle", lambda m: calls.append(1) or real(m))
    objs, bgs = _folders(tmp_path)
    assert _synth(objs, bgs, tmp_path / "out", 5) == 0
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert len(calls) == len(data["annotations"]) > 0
    assert all(a["area"] > 0 for a in data["annotations"])
    assert not (tmp_path / "out" / ".annotations.jsonl").exists()


def test_gan_metric_says_when_it_falls_back_to_random_features(monkeypatch, caplog):
    import synthdet.sources.fid as fid

    def missing():
        raise ImportError("no efficientnet weights")

    monkeypatch.setattr(fid, "_EffNetFeatures", missing)
    with caplog.at_level(logging.WARNING):
        net = fid.feature_network("efficientnet_lite0")
    assert net.feature_name == "random" and "RANDOM-CNN" in caplog.text


def test_stale_atomic_temp_files_are_removed_on_the_next_run(tmp_path):
    from synthdet.utils import files

    stale = tmp_path / ".metrics.json.999999999.abcd.tmp"
    stale.write_text("half")
    live = tmp_path / f".metrics.json.{os.getppid()}.efgh.tmp"  # a live process's write in progress
    live.write_text("busy")
    files._CLEANED.discard(str(tmp_path.absolute()))
    files.atomic_write_json(tmp_path / "metrics.json", {"ap": 1})
    assert not stale.exists() and live.exists()


def test_synth_refuses_a_folder_another_synthdet_command_wrote(tmp_path, capsys):
    from synthdet.utils.outdir import write_marker

    objs, bgs = _folders(tmp_path)
    exp = tmp_path / "exp"
    exp.mkdir()
    write_marker(exp, "experiment")
    (exp / "results.csv").write_text("x\n")
    assert _synth(objs, bgs, exp) == 1
    assert "written by 'synthdet experiment', not by 'synthdet synth'" in _one_line_error(capsys)
    assert (exp / "results.csv").is_file()
