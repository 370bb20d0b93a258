"""Issue 13: the blending / placement studies (variants = named synthesis overrides) and fitted
placement inside experiments."""

from pathlib import Path

import numpy as np
import pytest

from synthdet.experiments import ExperimentRunner, build_report, load_experiment, plan_runs
from synthdet.experiments.config import experiment_from_dict, synthesis_config
from synthdet.experiments.report import results_tables
from synthdet.utils.config import ConfigError

from test_experiments import _cfg, write_tiny_data

CONFIGS = Path(__file__).parents[2] / "configs"


def test_variant_study_plans_one_pretraining_per_variant_plus_baseline():
    from synthdet.experiments.config import StudySpec

    cfg = _cfg(synthesis={"canvas_size": 64, "preset": "birds"},
               study=StudySpec(kind="placement", real_size=10, repeats=2,
                               variants={"faces": {"preset": "faces"}, "same": {}, "fit": {"placement": "fitted"}}))
    runs = plan_runs(cfg)
    assert [r.variant for r in runs[:4]] == ["no_pretraining", "faces", "same", "fit"] and len(runs) == 8
    assert all(r.n_real == 10 for r in runs)
    pre = [r.pretrain for r in runs if r.pretrain]
    assert len({p.run_id for p in pre}) == 6  # one per variant and repeat, none shared
    assert {(p.synthesis, p.fit_n) for p in pre} == {("faces", None), ("same", None), ("fit", 10)}
    assert synthesis_config(cfg, "faces").num_objects == (1, 10)  # the variant's preset wins
    assert synthesis_config(cfg, "same").num_objects == (1, 3) and synthesis_config(cfg).canvas_size == 64


def test_default_pretraining_ids_are_unchanged():
    """Existing experiment folders resume: a uniform-placement pretraining keeps its old id."""
    runs = plan_runs(_cfg())
    assert runs[0].pretrain.run_id == "pretrain__ssd_mobilenet__real__seg-default__r0"


def test_fitted_placement_in_data_efficiency_fits_per_size_and_refuses_pretrain_only():
    from synthdet.experiments.config import StudySpec

    cfg = _cfg(synthesis={"placement": "fitted"}, study=StudySpec(real_sizes=(10, -1), repeats=1))
    fits = {r.n_real: r.pretrain.fit_n for r in plan_runs(cfg) if r.pretrain}
    assert fits == {10: 10, -1: -1}
    with pytest.raises(ValueError, match="pretrain-only run"):
        plan_runs(_cfg(synthesis={"placement": "fitted"}, study=StudySpec(real_sizes=(0, 10), repeats=1)))


def test_variant_study_errors_name_the_problem():
    with pytest.raises(ConfigError, match="needs variants"):
        experiment_from_dict({"study": {"kind": "blending"}})
    with pytest.raises(ConfigError, match=r"study\.variants\.bad: unknown key\(s\) 'blnd'"):
        experiment_from_dict({"study": {"kind": "blending", "variants": {"bad": {"blnd": "alpha"}}}})
    with pytest.raises(ConfigError, match="not a usable variant name"):
        experiment_from_dict({"study": {"kind": "placement", "variants": {"no_pretraining": {}}}})
    with pytest.raises(ConfigError, match="variants are used by"):
        experiment_from_dict({"study": {"kind": "mixed", "variants": {"a": {}}}})
    with pytest.raises(ConfigError, match=r"synthesis\.preset: 'bird'"):
        experiment_from_dict({"synthesis": {"preset": "bird"}})


@pytest.mark.parametrize("name, preset", [("birds_paper_protocol", "birds"), ("birds_mixed", "birds"),
                                          ("birds_segmentation", "birds"), ("birds_generated", "birds"),
                                          ("cub_birds", "birds"), ("stanford_cars", "cars"),
                                          ("fddb_faces", "faces"), ("wider_face", "faces")])
def test_paper_configs_use_the_authors_per_class_settings(name, preset):
    from synthdet.synthesis.config import PRESETS

    cfg = synthesis_config(load_experiment(CONFIGS / f"{name}.yaml"))
    row = PRESETS[preset]
    assert (cfg.num_objects, cfg.box_side, cfg.box_aspect) == (row["num_objects"], row["box_side"], row["box_aspect"])


def test_study_configs_keep_the_setting_their_readme_numbers_were_measured_with():
    """The studies' tables (docs/synthesis.md, docs/segmentation.md) were measured at 160 px with
    the ReLU box head: the configs pin both, so `synthdet experiment configs/study_*.yaml` reproduces them; the demo's detector and batch."""
    from synthdet.experiments.demo import demo_config

    demo = demo_config()
    for name, kind in (("study_blending", "blending"), ("study_placement", "placement"),
                       ("study_segmenters", "segmentation")):
        cfg = load_experiment(CONFIGS / f"{name}.yaml")
        assert cfg.study.kind == kind and cfg.study.real_size == 10
        assert len(cfg.study.variants) >= 4 or kind == "segmentation"
        assert cfg.detectors == demo.detectors and cfg.image_size == cfg.synthesis["canvas_size"] == 160
        assert cfg.detector_options == {demo.detectors[0]: {"box_activation": "relu"}}
        assert cfg.pretrain["batch_size"] == cfg.finetune["batch_size"] == demo.pretrain["batch_size"]


def test_detector_options_reach_the_model_and_typos_fail_on_load(tmp_path):
    from synthdet.experiments.demo import demo_config

    from types import SimpleNamespace

    cfg = load_experiment(CONFIGS / "study_segmenters.yaml")
    runner = ExperimentRunner(cfg, tmp_path)
    runner._data = SimpleNamespace(class_names=["bird"])  # no benchmark needed to build the model
    assert runner.build_model(cfg.detectors[0], "none").synthdet_meta["options"]["box_activation"] == "relu"
    demo = ExperimentRunner(demo_config(), tmp_path / "d")
    demo._data = runner._data
    model = demo.build_model(cfg.detectors[0], "none")
    assert model.synthdet_meta["options"] == {
        "fpn_channels": 96, "head_convs": 2, "train_size": 192, "box_activation": "softplus"}
    assert (model.transform.train_size, model.transform.max_size) == (192, 320)
    raw = {"detectors": ["fcos_efficientnet_lite0"],
           "detector_options": {"fcos_efficientnet_lite0": {"fpn_chanels": 64}}}
    with pytest.raises(ConfigError, match="fpn_chanels"):
        experiment_from_dict(raw)
    with pytest.raises(ValueError, match="not in detectors"):
        experiment_from_dict({**raw, "detector_options": {"ssd_mobilenet": {}}})


@pytest.fixture()
def two_box_data(tmp_path):
    """Objects, backgrounds and real COCO splits whose training images hold 2 boxes each."""
    return write_tiny_data(tmp_path, objects=4, boxes_per_image=2)


def test_tiny_placement_study_end_to_end(two_box_data, tmp_path):
    d = two_box_data
    cfg = experiment_from_dict({
        "name": "tiny-placement",
        "data": {"objects": str(d / "objects"), "backgrounds": str(d / "backgrounds"), "real_format": "coco",
                 "real_train": str(d / "real/train.json"), "real_val": str(d / "real/val.json"),
                 "real_test": str(d / "real/test.json")},
        "segmenter": {"name": "grabcut"},
        "synthesis": {"canvas_size": 64, "num_objects": [1, 2]},
        "detectors": ["ssd_mobilenet"], "image_size": 64, "weights": "none", "device": "cpu",
        "pretrain": {"iterations": 1, "batch_size": 2},
        "finetune": {"iterations": 1, "batch_size": 2, "val_every": 1},
        "study": {"kind": "placement", "real_size": 3, "repeats": 1,
                  "variants": {"uniform": {}, "fitted": {"placement": "fitted"}}},
    })
    runner = ExperimentRunner(cfg, tmp_path / "exp")
    rows = runner.run()
    fit = next(r.pretrain for r in runner.runs if r.variant == "fitted")
    prior = runner.box_prior(fit)
    assert len(prior) == 6 and list(prior.counts) == [2, 2, 2]  # the boxes of the 3 finetuning images
    subset = runner._real_subset(3, 0)
    assert np.allclose(np.sort(prior.feats[:, 2]), np.sort([(b[0] + b[2]) / 128 for r in subset for b in r.boxes]))
    stream = runner.make_stream(fit, seed=0)
    assert stream.config.placement == "fitted" and stream.box_prior is not None
    assert [r["variant"] for r in rows] == ["no_pretraining", "uniform", "fitted"]
    assert all(int(r["n_real"]) == 3 for r in rows)
    tables = build_report(tmp_path / "exp").read_text()
    assert tables == results_tables(rows)
    assert "| variant | 3 | vs uniform |" in tables and "| uniform |" in tables
    line = next(x for x in tables.splitlines() if x.startswith("| uniform |"))
    assert line.endswith("| +0.0 |")
