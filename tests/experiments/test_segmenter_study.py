"""Issue 12: the segmentation study compares several segmenters; the report lists mask counts."""

import json
from pathlib import Path

import pytest

from synthdet.experiments import ExperimentRunner, load_experiment, plan_runs
from synthdet.experiments.config import StudySpec, experiment_from_dict
from synthdet.experiments.report import mask_counts_table
from synthdet.utils.config import ConfigError

from test_experiments import _cfg

CONFIGS = Path(__file__).parents[2] / "configs"


def test_segmentation_study_pretrains_once_per_segmenter():
    cfg = _cfg(study=StudySpec(kind="segmentation", real_size=10, repeats=1,
                               segmenters=("cosegment", "cosegment,grabcut", "grabcut")))
    runs = plan_runs(cfg)
    assert [r.variant for r in runs] == ["no_pretraining", "naive_pasting", "segmented_grabcut",
                                         "segmented_cosegment", "segmented_cosegment,grabcut"]
    pre = [r.pretrain for r in runs if r.pretrain]
    assert [p.segmenter for p in pre] == ["none", "default", "cosegment", "cosegment,grabcut"]
    assert len({p.run_id for p in pre}) == 4 and all(r.n_real == 10 for r in runs)
    runner = ExperimentRunner(cfg, "unused")
    assert runner.segmenter_settings("cosegment,grabcut") == ("cosegment,grabcut", {})
    assert runner.segmenter_settings("default") == ("grabcut", {})
    with pytest.raises(ConfigError, match="segmentation study only"):
        experiment_from_dict({"study": {"kind": "mixed", "segmenters": ["cosegment"]}})


def test_segmenters_config_loads():
    cfg = load_experiment(CONFIGS / "study_segmenters.yaml")
    assert cfg.study.kind == "segmentation" and cfg.study.real_size == 10
    assert "cosegment" in cfg.study.segmenters


def test_report_lists_mask_counts(tmp_path):
    assert mask_counts_table(tmp_path) == ""
    (tmp_path / "k1").mkdir()
    (tmp_path / "k1" / "counts.json").write_text(json.dumps(
        {"segmenter": "cosegment,grabcut", "total": 600, "cached": 0, "computed": 590, "skipped": 0,
         "rejected": 10, "gates": "gates: accepted 590 (cosegment 570, grabcut 20), rejected 10 (area<min 10)"}))
    table = mask_counts_table(tmp_path)
    assert "| cosegment,grabcut | 600 | 590 | 10 | 0 |" in table and table.count("\n|") == 3
