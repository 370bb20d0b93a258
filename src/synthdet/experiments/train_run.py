"""``synthdet train``: the whole method on the user's own data in one call.

Object images (class subfolders = classes) and a few box-labelled images in, ``OUT/best.pt`` and
``OUT/report.md`` out: the inputs are read and checked (:mod:`.train_inputs`), the demo's settings
are fitted to them (:mod:`.train_settings`), backgrounds are made from the user's own images when
no photos are given (:mod:`synthdet.sources.own_backgrounds`), and the experiment runner pretrains
on the synthesis stream, finetunes with validation every 25 iterations (best checkpoint kept),
and evaluates. Layout of ``OUT``::

    OUT/best.pt              the detector (pretrained, finetuned on the training images)
    OUT/report.md, report/   what was done, masks, synthetic samples, curves, predictions, AP
    OUT/train.json           the inputs and the iterations of this run (a rerun must match)
    OUT/data/*.json          the training / validation / test images as used (COCO)
    OUT/backgrounds/         backgrounds made from the user's images (when used)
    OUT/experiment/          the runner's folder (config.yaml, pretrain/, runs/, results.csv, masks)

A killed run rerun with the same command continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..utils.errors import UserError
from ..utils.files import atomic_path, atomic_write_json, list_images
from ..utils.outdir import check_ours, locked, write_marker
from .config import ExperimentConfig
from .runner import ExperimentRunner, ResolvedData, check_same_settings, read_results
from .train_inputs import TrainInputs, read_inputs
from .train_report import next_commands, write_report
from .train_runner import TrainRunner
from .train_settings import Choices, train_config, user_settings

log = logging.getLogger(__name__)

MIN_ITERATIONS = 8  # --minutes never sizes the run below this many pretraining iterations


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train` made: ``checkpoint`` (``OUT/best.pt``), ``report`` (``OUT/report.md``),
    the pretraining ``iterations`` (``--iterations`` reproduces the run), the test AP@0.5 (on the
    validation images without test data: ``evaluated_on``) and the baseline's, if compared."""

    out: Path
    checkpoint: Path
    report: Path
    iterations: int
    ap50: float
    evaluated_on: str
    baseline_ap50: Optional[float]


def _request(objects, train, val, test, backgrounds, own: bool, seed: int, baseline: bool,
             skip_bad: bool) -> dict[str, Any]:
    def where(p):
        return None if p is None else str(Path(p).resolve())

    return {"objects": where(objects), "train": where(train), "val": where(val), "test": where(test),
            "backgrounds": where(backgrounds), "own_backgrounds": own, "seed": seed,
            "compare_baseline": baseline, "skip_bad_images": skip_bad}


def _previous(out: Path, request: dict[str, Any]) -> dict[str, Any]:
    """``OUT/train.json`` of an earlier run of the same request ({} if none); another request is refused."""
    path = out / "train.json"
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    changed = [f"{k}: {old['request'].get(k)!r} -> {v!r}" for k, v in request.items()
               if old.get("request", {}).get(k) != v]
    if changed:
        raise UserError(f"{out}: holds a synthdet train run of other inputs ({'; '.join(changed[:3])}); "
                        "use another --out, or the same inputs to resume it")
    return old


def _data_spec(out: Path, inputs: TrainInputs, backgrounds: Optional[str | Path], own: bool) -> dict[str, str]:
    bgs = [str(Path(backgrounds).resolve())] if backgrounds else []
    if own:
        bgs.append(str((out / "backgrounds").resolve()))
    return {"objects": str(inputs.objects.resolve()), "backgrounds": " + ".join(bgs), "real_format": "coco",
            "real_train": str(out / "data" / "train.json"), "real_val": str(out / "data" / "val.json"),
            "real_test": str(out / "data" / ("test.json" if inputs.test else "val.json"))}


def _write_data(out: Path, inputs: TrainInputs) -> None:
    from ..datasets.coco import write_coco

    cats = {k + 1: n for k, n in enumerate(inputs.class_names)}
    for role in ("train", "val", "test"):
        part = getattr(inputs, role)
        if part is not None:
            write_coco(out / "data" / f"{role}.json", part.records, cats)


def _masks(runner: ExperimentRunner, paths: Sequence[Path], progress: bool):
    """The mask cache the runner's stream reads (same folder and segmenter), filled now."""
    from ..segmentation import MaskCache, get_segmenter

    name, kwargs = runner.segmenter_settings()
    if name == "none":
        return None
    cache = MaskCache(runner.out / "mask_cache", get_segmenter(name, **kwargs))
    cache.prepare(paths, progress=progress)
    return cache


def _gated(cache) -> Callable[[Path], Any]:
    """``cache.get`` refusing (BadImageError: the image gives no background) a mask that fails the
    default quality gates: a mask that missed its object would leave it in the background."""
    from ..segmentation.gates import MaskGates
    from ..utils.image import BadImageError

    gates = MaskGates()

    def mask_of(path: Path):
        mask = cache.get(path)
        why = gates.check(mask)
        if why:
            raise BadImageError(path, f"mask fails the quality gates ({why})")
        return mask

    return mask_of


def _backgrounds(out: Path, runner: ExperimentRunner, inputs: TrainInputs, photos: Optional[str | Path],
                 own: bool, progress: bool) -> tuple[Any, dict[str, int]]:
    """The stream's BackgroundSource (each kind drawn equally often) and the count of each kind."""
    from ..sources.backgrounds import BackgroundSource
    from ..sources.objects import discover_classes
    from ..sources.own_backgrounds import write_object_backgrounds, write_scene_backgrounds

    groups: dict[str, list[Path]] = {}
    if photos:
        groups["photos"] = list_images(photos)
        if not groups["photos"]:
            raise UserError(f"{photos}: no background images found")
    if own:
        folder = out / "backgrounds"
        done = folder / "done.json"
        if not done.is_file():
            paths = [p for f in discover_classes(inputs.objects)[1] for p in f]
            cache = _masks(runner, paths, progress)
            log.info("making backgrounds from the %d training images and %d object images",
                     len(inputs.train.records), len(paths) if cache else 0)
            scenes = write_scene_backgrounds(inputs.train.records, folder / "scenes")
            objects = write_object_backgrounds(paths, _gated(cache), folder / "objects") if cache else []
            atomic_write_json(done, {"scenes": [p.name for p in scenes], "objects": [p.name for p in objects]})
        made = json.loads(done.read_text())
        groups["scenes"] = [folder / "scenes" / n for n in made["scenes"]]
        groups["objects"] = [folder / "objects" / n for n in made["objects"]]
    counts = {k: len(v) for k, v in groups.items()}
    if not any(counts.values()):
        raise UserError("no backgrounds: the training images are all covered by boxes and no object image "
                        "gave one; give --backgrounds DIR (photos like the scenes your objects appear in)")
    return BackgroundSource.from_groups(groups), counts


def _size_by_minutes(minutes: float, t0: float, runner_for: Callable[[int], TrainRunner], echo) -> int:
    """The most pretraining iterations (at least MIN_ITERATIONS) whose expected time, from timed
    probe steps of the run's detector, fits in what is left of ``minutes``; prints the choice."""
    from .estimate import estimate

    probe = estimate(runner_for(MIN_ITERATIONS))
    timings = (probe.seconds_per_iteration, probe.seconds_per_image)
    budget = 60 * minutes - (time.perf_counter() - t0)
    lo, hi = MIN_ITERATIONS, 2 * MIN_ITERATIONS  # lo fits (or is the floor), hi does not
    if estimate(runner_for(lo), timings).seconds <= budget:
        while estimate(runner_for(hi), timings).seconds <= budget and hi < 10 ** 7:
            lo, hi = hi, 2 * hi
    else:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(runner_for(mid), timings).seconds <= budget else (lo, mid)
    est = estimate(runner_for(lo), timings)
    fits = "" if est.seconds <= budget else f" (the least it runs; {budget / 60:.1f} min were left)"
    echo(f"--minutes {minutes:g}: {lo} iterations{fits}, {est.train_iterations} training iterations in all "
         f"({timings[0]:.2f} s each) and {est.eval_images} images evaluated ({1000 * timings[1]:.0f} ms each): "
         f"about {est.seconds / 60:.1f} min from timed probe steps; `--iterations {lo}` reproduces this run")
    return lo


def _claim(runner: ExperimentRunner) -> None:
    """Make ``OUT/experiment`` the runner's before masks go into it; refuse other settings early
    (``runner.run`` claims it again, with its config)."""
    check_ours(runner.out, legacy=("config.yaml",), hint="choose another --out", writer="experiment")
    check_same_settings(runner.out, runner.cfg)
    runner.out.mkdir(parents=True, exist_ok=True)
    write_marker(runner.out, "experiment")


def _copy_best(runner: TrainRunner, out: Path) -> Path:
    metrics = json.loads((runner.out / "runs" / runner.main_run.run_id / "metrics.json").read_text())
    dest = out / "best.pt"
    with atomic_path(dest) as tmp:
        shutil.copyfile(metrics["checkpoint"], tmp)
    return dest


def train(objects: str | Path, train: str | Path, out: str | Path, val: str | Path | None = None,
          test: str | Path | None = None, backgrounds: str | Path | None = None,
          own_backgrounds: Optional[bool] = None, config: str | Path | Mapping[str, Any] | None = None,
          overrides: Sequence[tuple[str, Any]] = (), minutes: Optional[float] = None,
          iterations: Optional[int] = None, compare_baseline: bool = False, seed: int = 0,
          device: str = "auto", skip_bad_images: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print) -> TrainOutcome:
    """Train a detector on ``objects`` (folder; class subfolders = classes) and the real labelled
    ``train`` data (COCO .json, YOLO data.yaml or VOC folder), as ``synthdet train`` does.

    ``val`` (else a seeded part of ``train`` is held out), ``test``, ``backgrounds`` (photos; without
    them backgrounds are made from the training and object images; ``own_backgrounds=True`` adds
    those to the photos), ``config`` / ``overrides``: experiment settings over the demo's
    (``[("pretrain.cpu_shards", 1)]``), ``minutes`` or ``iterations`` (pretraining iterations; the
    finetuning follows at the demo's ratio), ``compare_baseline``: also finetune without pretraining.
    Resumable; see the module docstring for ``out``."""
    t0 = time.perf_counter()
    if minutes is not None and iterations is not None:
        raise UserError("give --minutes or --iterations, not both")
    if (minutes is not None and not minutes > 0) or (iterations is not None and iterations < 1):
        raise UserError("--minutes must be > 0 and --iterations >= 1")
    out = Path(out)
    own = backgrounds is None if own_backgrounds is None else bool(own_backgrounds)
    if not own and backgrounds is None:
        raise UserError("no backgrounds: give --backgrounds DIR or let synthdet make them from your images")
    check_ours(out, writer="train", hint="choose another --out")
    with locked(out):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "train")
        request = _request(objects, train, val, test, backgrounds, own, seed, compare_baseline, skip_bad_images)
        previous = _previous(out, request)
        inputs = read_inputs(objects, train, val, test, seed=seed, skip_bad=skip_bad_images, progress=progress)
        _write_data(out, inputs)
        quiet = () if progress else (("pretrain.progress", False), ("finetune.progress", False))
        user = user_settings(config, (*quiet, *overrides))
        data = ResolvedData(objects=inputs.objects, backgrounds=None, train=inputs.train.records,
                            val=inputs.val.records, test=(inputs.test or inputs.val).records,
                            class_names=inputs.class_names,
                            skipped={role: part.skipped for role in ("train", "val", "test")
                                     if (part := getattr(inputs, role)) is not None and part.skipped})
        spec = _data_spec(out, inputs, backgrounds, own)

        def runner_for(n: Optional[int]) -> tuple[TrainRunner, Choices]:
            cfg, choices = train_config(data.train, spec, user, n, seed, device, compare_baseline)
            return TrainRunner(cfg, out / "experiment", data, compare_baseline), choices

        n = previous.get("iterations") if previous.get("iterations") and iterations is None else iterations
        if n is not None and minutes is not None:
            echo(f"--minutes {minutes:g}: resuming the run sized earlier: {n} iterations (`--iterations {n}`)")
        runner, choices = runner_for(n)
        _claim(runner)
        data.backgrounds, bg_counts = _backgrounds(out, runner, inputs, backgrounds, own, progress)
        if minutes is not None and n is None:
            n = _size_by_minutes(minutes, t0, lambda k: runner_for(k)[0], echo)
            runner, choices = runner_for(n)
            check_same_settings(runner.out, runner.cfg)
        n = choices.pretrain_iterations
        atomic_write_json(out / "train.json", {"request": request, "iterations": n,
                                               "held_out": inputs.held_out, "backgrounds": bg_counts})
        runner.run()
        best = _copy_best(runner, out)
        report, summary = write_report(out, runner, inputs, choices, bg_counts, time.perf_counter() - t0)
    echo(summary)
    echo(f"\nreport: {report}\ncheckpoint: {best}\nnext:\n{next_commands(out)}")
    rows = {r["run_id"]: r for r in read_results(runner.out)}
    base = [r for r in rows.values() if r["variant"] == "no_pretraining"]
    return TrainOutcome(out, best, report, n, float(rows[runner.main_run.run_id]["ap50"]),
                        "test" if inputs.test else "validation",
                        float(base[0]["ap50"]) if base else None)

