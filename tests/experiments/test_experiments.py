"""Experiment planning, config validation, and a tiny end-to-end experiment with resume."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from synthdet.datasets.coco import write_coco
from synthdet.datasets.records import DetectionRecord
from synthdet.experiments import ExperimentConfig, ExperimentRunner, build_report, load_experiment, plan_runs
from synthdet.experiments.config import DataSpec, StudySpec, experiment_from_dict
from synthdet.experiments.report import results_tables
from synthdet.experiments.runner import read_results
from synthdet.utils.config import ConfigError
from synthdet.utils.image import write_image

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _cfg(**kw) -> ExperimentConfig:
    base = dict(data=DataSpec(objects="o", backgrounds="b", real_train="t", real_val="v", real_test="t"))
    base.update(kw)
    return ExperimentConfig(**base)


def test_plan_data_efficiency_shares_pretraining_and_orders_runs():
    runs = plan_runs(_cfg(study=StudySpec(real_sizes=(0, 10, -1), repeats=2)))
    assert len(runs) == 2 * (1 + 2 * 2)
    assert len({r.run_id for r in runs}) == len(runs)
    pre = {r.pretrain.run_id for r in runs if r.pretrain}
    assert len(pre) == 2  # one pretraining per repeat, shared by all pretrained runs of that repeat
    assert {r.variant for r in runs} == {"pretrain_only", "no_pretraining", "pretrained"}
    assert all(r.pretrain is None for r in runs if r.variant == "no_pretraining")


def test_plan_ablations():
    mixed = plan_runs(_cfg(study=StudySpec(kind="mixed", real_size=100, pool_multipliers=(1, 8), repeats=1)))
    assert [(r.variant, r.pool) for r in mixed] == [
        ("pretrain+finetune", None), ("mixed_pool100", 100), ("mixed_pool800", 800), ("mixed_stream", None)]
    seg = plan_runs(_cfg(study=StudySpec(kind="segmentation", real_size=50, repeats=1)))
    assert {r.pretrain.segmenter for r in seg if r.pretrain} == {"none", "default"}
    with pytest.raises(ValueError, match="generator"):
        _cfg(study=StudySpec(kind="objects"))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key.*'detectorz'"):
        experiment_from_dict({"detectorz": ["x"]})
    with pytest.raises(ConfigError, match="pretrain: unknown key"):
        experiment_from_dict({"pretrain": {"iterationz": 3}})
    with pytest.raises(ConfigError, match="synthesis: unknown key"):
        experiment_from_dict({"synthesis": {"no_such_knob": 1}})
    with pytest.raises(ConfigError, match="data needs"):
        experiment_from_dict({"data": {"objects": "x"}})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    cfg = load_experiment(path)
    assert plan_runs(cfg)


def _ellipse_image(rng, size, n, color_bg=None):
    img = (rng.random((size, size, 3)) * 60 + (color_bg if color_bg is not None else 40)).astype(np.uint8)
    boxes = []
    for _ in range(n):
        r = int(rng.integers(size // 8, size // 4))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        cv2.ellipse(img, (cx, cy), (r, r // 2 + 2), 0, 0, 360, (230, 200, 40), -1)
        boxes.append([cx - r, cy - (r // 2 + 2), cx + r + 1, cy + (r // 2 + 2) + 1])
    return img, np.array(boxes, np.float32)


def write_tiny_data(root, objects: int = 6, boxes_per_image: int = 1):
    """Object images (one yellow ellipse), noise backgrounds and real COCO splits (4 / 2 / 2 images
    of ``boxes_per_image`` ellipses) under ``root``."""
    rng = np.random.default_rng(0)
    for i in range(objects):
        img, _ = _ellipse_image(rng, 48, 0)
        cv2.ellipse(img, (24, 24), (15, 9), 0, 0, 360, (230, 200, 40), -1)
        write_image(root / "objects" / f"o{i}.png", img)
        write_image(root / "backgrounds" / f"b{i}.jpg", (rng.random((80, 96, 3)) * 255).astype(np.uint8))
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        recs = []
        for i in range(count):
            img, boxes = _ellipse_image(rng, 64, boxes_per_image)
            p = root / "real" / split / f"{i}.jpg"
            write_image(p, img)
            recs.append(DetectionRecord(str(p), 64, 64, boxes, np.ones(len(boxes), np.int64), image_id=i + 1))
        write_coco(root / "real" / f"{split}.json", recs, {1: "blob"}, image_root=root / "real")
    return root


@pytest.fixture()
def tiny_data(tmp_path):
    return write_tiny_data(tmp_path)


def test_tiny_experiment_end_to_end_resumes_and_reports(tiny_data, tmp_path):
    cfg = experiment_from_dict({
        "name": "tiny",
        "data": {"objects": str(tiny_data / "objects"), "backgrounds": str(tiny_data / "backgrounds"),
                 "real_format": "coco", "real_train": str(tiny_data / "real/train.json"),
                 "real_val": str(tiny_data / "real/val.json"), "real_test": str(tiny_data / "real/test.json")},
        "segmenter": {"name": "grabcut"},
        "synthesis": {"canvas_size": 64, "num_objects": [1, 2]},
        "detectors": ["ssd_mobilenet"], "image_size": 64, "weights": "none", "device": "cpu",
        "pretrain": {"iterations": 2, "batch_size": 2},
        "finetune": {"iterations": 2, "batch_size": 2, "val_every": 1},
        "study": {"kind": "data_efficiency", "real_sizes": [0, 2, -1], "repeats": 1},
    })
    out = tmp_path / "exp"
    executed = []
    runner = ExperimentRunner(cfg, out, on_run_done=lambda run, m: executed.append(run.run_id))
    runner.run(max_runs=2)  # "interrupted" after two runs
    assert len(executed) == 2 and len(read_results(out)) == 2
    finished = {rid: (out / "runs" / rid / "metrics.json").stat().st_mtime_ns for rid in executed}

    executed.clear()
    rows = ExperimentRunner(cfg, out, on_run_done=lambda run, m: executed.append(run.run_id)).run()
    assert len(rows) == 5 and len(executed) == 3
    assert not set(executed) & set(finished)  # finished runs were not redone
    for rid, mtime in finished.items():
        assert (out / "runs" / rid / "metrics.json").stat().st_mtime_ns == mtime
    assert {r["variant"] for r in rows} == {"pretrain_only", "no_pretraining", "pretrained"}
    assert all(0.0 <= float(r["ap50"]) <= 1.0 for r in rows)
    assert {int(r["n_real"]) for r in rows} == {0, 2, 4}

    tables = build_report(out).read_text()
    assert tables == results_tables(read_results(out))
    assert build_report(out).read_text() == tables  # rebuilt identically from the CSV
    assert "| pretrained |" in tables and (out / "report" / "ap_vs_n.png").is_file()


def tiny_generator():
    """A ``module:function`` generator spec for the test below: latents [B, 8] -> images [B, 3, 16, 16]."""
    import torch

    def generate(z):
        return torch.tanh(z[:, :3, None, None].expand(-1, 3, 16, 16))

    generate.latent_dim = 8
    return generate


def test_generated_object_pool_is_sampled_once(tmp_path):
    cfg = _cfg(data=DataSpec(objects="o", backgrounds="b", real_train="t", real_val="v", real_test="t",
                             generator="test_experiments:tiny_generator", generator_pool=5),
               study=StudySpec(kind="objects", real_size=2, repeats=1))
    assert {r.pretrain.objects for r in plan_runs(cfg)} == {"real", "generated"}
    runner = ExperimentRunner(cfg, tmp_path)
    folder = runner.generated_pool()
    files = sorted(folder.glob("*.png"))
    assert len(files) == 5
    stamps = [f.stat().st_mtime_ns for f in files]
    assert runner.generated_pool() == folder
    assert [f.stat().st_mtime_ns for f in files] == stamps  # reused, not resampled


def test_demo_config_file_matches_the_demo():
    from pathlib import Path

    from synthdet.experiments.config import load_experiment
    from synthdet.experiments.demo import demo_config

    path = Path(__file__).parents[2] / "configs" / "birds_demo.yaml"
    assert load_experiment(path) == demo_config()


def test_demo_repeats_are_the_demo_with_more_seeds():
    """``synthdet demo --repeats R`` may reuse the demo's folder: only the number of repeats differs."""
    import dataclasses

    from synthdet.experiments.demo import demo_config
    from synthdet.experiments.runner import settings_hash

    one, three = demo_config(), demo_config(repeats=3)
    assert three.study.repeats == 3 and three.study.real_sizes == one.study.real_sizes == (0, 10, 50, -1)
    assert dataclasses.replace(three, study=one.study) == one
    assert settings_hash(three) == settings_hash(one)
