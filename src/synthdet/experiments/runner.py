"""Run an experiment: every planned run once, resumable, results in one CSV.

Layout of an experiment folder::

    OUT/config.yaml                 resolved experiment config
    OUT/pretrain/<pretrain_id>/     pretraining runs (checkpoints; shared between runs)
    OUT/runs/<run_id>/              one folder per evaluated model: config, curves, metrics.json
    OUT/results.csv                 one row per finished run, rebuilt after every run
    OUT/mask_cache/                 object masks, computed once per segmenter

A run is finished when its ``metrics.json`` exists (written last, atomically); finished runs are
never redone, and an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..datasets.records import DetectionDataset, DetectionRecord
from ..utils.config import ConfigError, dump_yaml, from_dict, to_dict
from ..utils.files import atomic_path, atomic_write_json
from ..utils.inputs import BadFile
from ..utils.outdir import check_ours, locked, write_marker
from .config import ExperimentConfig
from .plan import PretrainSpec, RunSpec, fitted_to, plan_runs

log = logging.getLogger(__name__)

RESULT_FIELDS = (
    "study", "detector", "variant", "mode", "n_real", "n_real_requested", "repeat", "pool",
    "ap50", "best_val_ap", "best_step", "train_seconds", "run_id",
)


@dataclass
class ResolvedData:
    """Concrete inputs of an experiment once paths are resolved and real splits are read."""

    objects: Optional[Path]
    backgrounds: Any  # a folder of photos (a VOC root with backgrounds_format: voc), or a BackgroundSource
    train: list[DetectionRecord]
    val: list[DetectionRecord]
    test: list[DetectionRecord]
    class_names: list[str]
    true_masks: Optional[Path] = None
    skipped: dict[str, list[BadFile]] = dataclasses.field(default_factory=dict)  # per split, left out


def _checked(data: ResolvedData, where: dict[str, str], skip_bad: bool) -> ResolvedData:
    """``data`` with every split's images checked before any work: bad ones refuse the
    experiment, or with ``skip_bad`` are dropped (their boxes too) and listed in ``skipped``."""
    from ..datasets.check import check_records

    kept, skipped = {}, {}
    for split in ("train", "val", "test"):
        kept[split], skipped[split] = check_records(getattr(data, split), f"{where[split]} ({split})",
                                                    skip_bad=skip_bad, option="--skip-bad-images")
    return dataclasses.replace(data, **kept, skipped=skipped)


def resolve_data(cfg: ExperimentConfig, skip_bad_images: bool = False) -> ResolvedData:
    """Build/locate the benchmark or read the configured datasets into records, their images
    checked (see :func:`~synthdet.datasets.check.check_records`; ``skip_bad_images`` drops bad ones)."""
    d = cfg.data
    if d.benchmark == "birds":
        from ..datasets.birds import build_birds

        bench = build_birds(d.benchmark_root)
        splits = {s: bench.split_records(s) for s in ("train", "val", "test")}
        names = splits["train"][1]
        return _checked(ResolvedData(
            objects=Path(d.objects) if d.objects else bench.classification_dir,
            backgrounds=Path(d.backgrounds) if d.backgrounds else bench.backgrounds_dir,
            train=splits["train"][0], val=splits["val"][0], test=splits["test"][0],
            class_names=[names[k] for k in sorted(names)], true_masks=bench.true_masks_dir,
        ), {s: str(bench.annotations[s]) for s in splits}, skip_bad_images)
    from ..datasets import read_dataset

    def read(path: str, split: str) -> tuple[list[DetectionRecord], dict[int, str]]:
        kwargs = dict(d.real_kwargs)
        if len({d.real_train, d.real_val, d.real_test}) == 1:
            kwargs["split"] = split
        return read_dataset(d.real_format, path, **kwargs)

    train_split, val_split, test_split = d.real_splits
    train, names = read(d.real_train, train_split)
    val, _ = read(d.real_val, val_split)
    test, _ = read(d.real_test, test_split)
    return _checked(ResolvedData(
        objects=Path(d.objects) if d.objects else None, backgrounds=Path(d.backgrounds),
        train=train, val=val, test=test, class_names=[names[k] for k in sorted(names)],
    ), {"train": d.real_train, "val": d.real_val, "test": d.real_test}, skip_bad_images)


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None


def read_results(out_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``OUT/results.csv`` (strings, as written)."""
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv in {out_dir} (run the experiment first)")
    return _read_rows(path)


class ExperimentRunner:
    """Executes the runs of one experiment in ``out_dir``; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | Path,
                 on_run_done: Optional[Callable[[RunSpec, dict], None]] = None, skip_bad_images: bool = False) -> None:
        self.cfg = cfg
        self.skip_bad_images = skip_bad_images
        self.out = Path(out_dir)
        self.runs = plan_runs(cfg)
        self.on_run_done = on_run_done
        self._data: Optional[ResolvedData] = None
        self._segmenter_checkpoint: Optional[str] = cfg.segmenter.checkpoint

    # ----------------------------------------------------------------------------- data
    @property
    def data(self) -> ResolvedData:
        if self._data is None:
            self._data = resolve_data(self.cfg, self.skip_bad_images)
        return self._data

    def _train_cfg(self, stage: str, **overrides: Any):
        from ..training.config import train_config

        raw = dict(getattr(self.cfg, stage))
        raw.setdefault("device", self.cfg.device)
        return train_config(raw, where=stage, **overrides)

    def _real_subset(self, n: int, repeat: int) -> list[DetectionRecord]:
        from ..datasets.subsets import nested_subsets

        sizes = sorted({s for s in (*self.cfg.study.real_sizes, self.cfg.study.real_size) if s != 0})
        return nested_subsets(self.data.train, sizes, seed=self.cfg.seed + repeat)[n]

    # ----------------------------------------------------------------------------- segmentation
    def segmenter_settings(self, which: str = "default") -> tuple[str, dict]:
        """(registry name, kwargs) of the segmenter (``which``: ``default``, ``none`` or another
        segmenter of ``study.segmenters``); trains ReDO first when asked to."""
        seg = self.cfg.segmenter
        if which == "none" or (which == "default" and seg.name == "none"):
            return "none", {}
        name = seg.name if which == "default" else which
        kwargs = dict(seg.kwargs) if name == seg.name else {}
        if name == "redo":
            kwargs["checkpoint"] = self._redo_checkpoint()
        elif "redo" in name.split(",") and "redo" not in kwargs:
            kwargs["redo"] = {"checkpoint": self._redo_checkpoint()}
        return name, kwargs

    def _redo_checkpoint(self) -> str:
        if self._segmenter_checkpoint:
            return self._segmenter_checkpoint
        from ..segmentation.redo import RedoConfig
        from ..segmentation.redo_segmenter import fit_cached

        if self.data.objects is None:
            raise ValueError("segmenter redo without a checkpoint needs data.objects to train on")
        out = self.out / "segmenter" / "redo"  # a finished fit there is reused, a killed one resumed
        ckpt, _ = fit_cached(self.data.objects, from_dict(RedoConfig, self.cfg.segmenter.fit, where="segmenter.fit"),
                             out, resume=True)
        self._segmenter_checkpoint = str(ckpt)
        return self._segmenter_checkpoint

    # ----------------------------------------------------------------------------- synthesis
    def box_prior(self, spec: PretrainSpec):
        """The real boxes a fitted placement draws from: those of the ``spec.fit_n`` training images
        the finetuning of the same repeat uses (None when ``spec.fit_n`` is None)."""
        from ..synthesis.placement import fit_box_prior_records

        if spec.fit_n is None:
            return None
        n = "all" if spec.fit_n < 0 else spec.fit_n
        return fit_box_prior_records(self._real_subset(spec.fit_n, spec.repeat),
                                     where=f"the boxes of {n} real training images (repeat {spec.repeat})")

    def make_stream(self, spec: PretrainSpec, seed: int):
        """The artificial stream a pretraining run consumes."""
        from ..synthesis import make_stream
        from .config import synthesis_config

        seg_name, seg_kwargs = self.segmenter_settings(spec.segmenter)
        synth_cfg = synthesis_config(self.cfg, spec.synthesis)
        objects: Any = self.data.objects
        if spec.objects == "generated" and self.cfg.data.generator_pool > 0:
            objects = self.generated_pool()
        elif spec.objects == "generated":
            from ..segmentation import get_segmenter
            from ..sources.generator import GeneratorObjectSource, load_generator

            segmenter = None if seg_name == "none" else get_segmenter(seg_name, **seg_kwargs)
            objects = GeneratorObjectSource(load_generator(self.cfg.data.generator), segmenter,
                                            class_name=self.data.class_names[0])
        backgrounds: Any = self.data.backgrounds
        if self.cfg.data.backgrounds_format == "voc":
            from ..sources import BackgroundSource

            backgrounds = BackgroundSource.from_voc(backgrounds, exclude=self.cfg.data.backgrounds_exclude)
        single = len(self.data.class_names) == 1
        stream = make_stream(objects, backgrounds, segmenter=seg_name, segmenter_kwargs=seg_kwargs,
                             cache_dir=self.out / "mask_cache", config=synth_cfg, seed=seed,
                             class_name=self.data.class_names[0] if single else None, one_class=single,
                             uint8_images=True, box_prior=self.box_prior(spec))  # 4x less to move out of workers; the trainer scales
        src_names = list(stream.objects.class_names)
        if len(self.data.class_names) > 1 and src_names != self.data.class_names:
            raise ValueError(f"object classes {src_names} do not match the real dataset's classes "
                             f"{self.data.class_names} (name the object subfolders like the classes)")
        return stream

    def generated_pool(self) -> Path:
        """Sample ``data.generator_pool`` images from the generator once into ``OUT/generated_objects``."""
        from ..sources.generator import load_generator, sample_images
        from ..utils.image import write_image

        folder = self.out / "generated_objects"
        done = folder / "done.json"
        if not done.is_file():
            gen = load_generator(self.cfg.data.generator)
            count = self.cfg.data.generator_pool
            log.info("sampling %d object images from %s", count, self.cfg.data.generator)
            for i, img in enumerate(sample_images(gen, count, seed=self.cfg.seed)):
                write_image(folder / f"generated_{i:06d}.png", img)
            atomic_write_json(done, {"generator": self.cfg.data.generator, "count": count, "seed": self.cfg.seed})
        return folder

    # ----------------------------------------------------------------------------- training
    def build_model(self, detector: str, weights: str, seed: int = 0):
        """The detector of a run: rebuilt from a checkpoint path as saved, else built by name (with
        its ``detector_options``) with its random initialisation a function of ``seed``."""
        from ..models import build_detector, load_detector

        if weights not in ("imagenet", "none"):
            return load_detector(weights, image_size=self.cfg.image_size)
        return build_detector(detector, num_classes=len(self.data.class_names), image_size=self.cfg.image_size,
                              weights=weights, seed=seed, **self.cfg.detector_options.get(detector, {}))

    def pretrain(self, spec: PretrainSpec) -> Path:
        """Pretrain (or resume, or reuse) and return the final checkpoint path."""
        from ..training import pretrain

        out = self.out / "pretrain" / spec.run_id
        done = out / "done.json"
        if done.is_file():
            return Path(json.loads(done.read_text())["checkpoint"])
        seed = self.cfg.seed + 1000 * spec.repeat
        log.info("pretraining %s", spec.run_id)
        model = self.build_model(spec.detector, self.cfg.weights, seed)
        result = pretrain(model, self.make_stream(spec, seed), self._train_cfg("pretrain", seed=seed), out,
                          resume=True)
        atomic_write_json(done, {"checkpoint": str(result.checkpoint), "steps": result.steps,
                                 "seconds": result.seconds})
        return Path(result.checkpoint)

    def _evaluate(self, model, records: list[DetectionRecord]) -> dict:
        from ..evaluation import evaluate_detector

        ev = evaluate_detector(model, DetectionDataset(records), device=self.cfg.device,
                               batch_size=self.cfg.eval_batch_size)
        return {k: v for k, v in ev.items() if k != "predictions"}

    def execute(self, run: RunSpec) -> dict:
        """Train and evaluate one run; returns its metrics row."""
        from ..training import finetune, mixed

        out = self.out / "runs" / run.run_id
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml({"run": dataclasses.asdict(run), "experiment": to_dict(self.cfg)}, out / "config.yaml")
        seed = self.cfg.seed + run.repeat
        result = None
        n_actual = 0
        if run.mode == "pretrain_only":
            model = self.build_model(run.detector, str(self.pretrain(run.pretrain)))
            pre_seconds = json.loads((self.out / "pretrain" / run.pretrain.run_id / "done.json").read_text())["seconds"]
        else:
            train = self._real_subset(run.n_real, run.repeat)
            n_actual = len(train)
            train_ds = DetectionDataset(train, skip_unreadable=self.skip_bad_images)
            val_ds = DetectionDataset(self.data.val)
            if run.mode == "finetune":
                weights = str(self.pretrain(run.pretrain)) if run.pretrain else self.cfg.weights
                model = self.build_model(run.detector, weights, seed)
                t0 = time.perf_counter()
                result = finetune(model, train_ds, val_ds, self._train_cfg("finetune", seed=seed), out,
                                  resume=True, class_names=self.data.class_names)
            else:  # mixed: one run on real + artificial for pretrain + finetune iterations
                from ..synthesis import SynthPool

                spec = PretrainSpec(run.detector, run.repeat, fit_n=fitted_to(self.cfg, run.n_real))
                stream = self.make_stream(spec, self.cfg.seed + 1000 * run.repeat)
                synth = stream if run.pool is None else SynthPool(stream, run.pool)
                iters = self._train_cfg("pretrain").iterations + self._train_cfg("finetune").iterations
                model = self.build_model(run.detector, self.cfg.weights, seed)
                t0 = time.perf_counter()
                result = mixed(model, train_ds, synth, self._train_cfg("finetune", seed=seed, iterations=iters),
                               out, real_fraction=self.cfg.study.mixed_real_fraction, val_dataset=val_ds,
                               resume=True, class_names=self.data.class_names)
        train_seconds = pre_seconds if run.mode == "pretrain_only" else time.perf_counter() - t0
        checkpoint = result.checkpoint if result is not None else self.pretrain(run.pretrain)
        ev = self._evaluate(model, self.data.test)
        metrics = {
            "study": run.study, "detector": run.detector, "variant": run.variant, "mode": run.mode,
            "n_real": n_actual, "n_real_requested": run.n_real, "repeat": run.repeat,
            "pool": "" if run.pool is None else run.pool,
            "ap50": ev["ap50"],
            "best_val_ap": "" if result is None or result.best_ap is None else result.best_ap,
            "best_step": "" if result is None or result.best_step is None else result.best_step,
            "train_seconds": round(train_seconds, 1), "run_id": run.run_id,
            "per_class": ev.get("per_class", {}), "checkpoint": str(checkpoint),
            "skipped_images": {k: [b.as_dict() for b in v] for k, v in self.data.skipped.items() if v},
        }
        atomic_write_json(out / "metrics.json", metrics)
        return metrics

    # ----------------------------------------------------------------------------- loop
    def is_done(self, run: RunSpec) -> bool:
        return (self.out / "runs" / run.run_id / "metrics.json").is_file()

    def write_results(self) -> Path:
        """Rebuild ``results.csv`` from every finished run's ``metrics.json`` (plan order)."""
        path = self.out / "results.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for run in self.runs:
                m = self.out / "runs" / run.run_id / "metrics.json"
                if m.is_file():
                    writer.writerow(json.loads(m.read_text()))
        return path

    def run(self, max_runs: Optional[int] = None) -> list[dict[str, str]]:
        """Execute every unfinished run (at most ``max_runs`` of them); return the results rows.

        Holds the folder's writer lock; refuses a folder synthdet did not write and a folder
        whose runs used other settings (see :func:`check_same_settings`).
        """
        with locked(self.out):
            self._claim()
            return self._run_todo(max_runs)

    def _claim(self) -> None:
        check_ours(self.out, legacy=("config.yaml",), hint="choose another --out", writer="experiment")
        self.out.mkdir(parents=True, exist_ok=True)
        check_same_settings(self.out, self.cfg)
        dump_yaml(self.cfg, self.out / "config.yaml")
        write_marker(self.out, "experiment", config_hash=settings_hash(self.cfg))

    def _run_todo(self, max_runs: Optional[int]) -> list[dict[str, str]]:
        todo = [r for r in self.runs if not self.is_done(r)]
        log.info("%d runs planned, %d finished, %d to do", len(self.runs), len(self.runs) - len(todo), len(todo))
        if todo:
            self.data  # noqa: B018 - read and check the real images before the first run
        for k, run in enumerate(todo):
            if max_runs is not None and k >= max_runs:
                break
            log.info("run %d/%d: %s", k + 1, len(todo), run.run_id)
            metrics = self.execute(run)
            self.write_results()
            if self.on_run_done:
                self.on_run_done(run, metrics)
        self.write_results()
        return _read_rows(self.out / "results.csv")


# Settings that decide which runs exist (each run's own spec carries its part) or that do not
# change results; everything else in the config changes what a finished run would produce.
_RUN_SET = {"name", "device", "eval_batch_size", "study.kind", "study.real_sizes", "study.real_size",
            "study.pool_multipliers", "study.include_stream", "study.repeats"}
_NO_EFFECT = {"device", "num_workers", "progress", "log_every", "eval_batch_size"}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def result_settings(cfg: ExperimentConfig | dict) -> dict[str, Any]:
    """The flattened settings (``"pretrain.iterations": 300``) that decide the result of a run."""
    raw = json.loads(json.dumps(to_dict(cfg)))  # tuples -> lists, as read back from YAML
    return {k: v for k, v in _flatten(raw).items()
            if k not in _RUN_SET and not (k.count(".") == 1 and k.split(".")[1] in _NO_EFFECT
                                          and k.split(".")[0] in ("pretrain", "finetune"))}


def settings_hash(cfg: ExperimentConfig | dict) -> str:
    """Short hash of :func:`result_settings`; recorded in the experiment folder's marker."""
    text = json.dumps(result_settings(cfg), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def check_same_settings(out_dir: str | Path, cfg: ExperimentConfig) -> None:
    """Refuse to add runs of ``cfg`` to a folder whose runs used other settings.

    Settings that only add or remove runs (``study`` sizes, repeats, ...) or do not change results
    (``device``, ``name``) may change: new runs are planned, finished ones kept. Settings missing
    from the old ``config.yaml`` (added in a later version) are not compared.
    """
    path = Path(out_dir) / "config.yaml"
    if not path.is_file():
        return
    from ..utils.config import load_yaml

    old, new = result_settings(load_yaml(path)), result_settings(cfg)
    changed = [f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in sorted(old) if old[k] != new.get(k)
               and not (k not in new and any(n.startswith(k + ".") for n in new))]
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ConfigError(f"{path}: this experiment folder holds runs made with other settings ({shown}); "
                          "use another --out, or restore those settings to resume")


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, max_runs: Optional[int] = None,
                   skip_bad_images: bool = False) -> list[dict[str, str]]:
    """Run (or resume) ``cfg`` in ``out_dir`` and return the rows of ``results.csv``.
    ``skip_bad_images``: drop the real images that cannot be used instead of refusing."""
    return ExperimentRunner(cfg, out_dir, skip_bad_images=skip_bad_images).run(max_runs=max_runs)
