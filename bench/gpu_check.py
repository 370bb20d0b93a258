"""GPU proof in one command (issue 15): the CUDA, AMP, full-size and torchrun paths, each run for
real, one line per step, everything written to one folder.

On a lent GPU (one H100; the sizes below are meant to fit 10 minutes including start-up)::

    python bench/gpu_check.py --out runs/gpu_check

The lent machine cannot reach the network, so the birds benchmark must travel with the working
tree: build it here (``synthdet data birds``), copy it into the git-ignored ``data/``
(``mkdir -p data && cp -r ~/.cache/synthdet/birds data/``), name ``data`` in the run's ``carry``
and add ``--data-root data``.

Each step prints ``step | figure(s) | PASS/FAIL (reason)``; steps are independent (one failing
does not stop the others) and the exit code is 1 if any failed. What each step proves:

- ``setup``: the birds benchmark opens; the object images' GrabCut masks are computed once
  (in parallel processes) into ``OUT/masks``, shared by every later step.
- ``a pretrain DET``: :func:`synthdet.training.pretrain` on the synthesis stream with CUDA + AMP
  (AMP is checked in the run's resolved config) for ``fcos_efficientnet_lite0`` (the default) and
  ``ssd_mobilenet`` (the paper's) at 300 px: end-to-end samples/s (loader start-up included) and
  peak GPU memory (``torch.cuda.max_memory_allocated``).
- ``b finetune+eval DET``: :func:`synthdet.training.finetune` with validation on the birds scenes,
  then :func:`synthdet.evaluation.evaluate_detector` on the test split: test AP@0.5.
- ``c data-efficiency``: the full-size point at 50 real images with the paper's 1000 + 1000
  iterations, pretrained vs not, one repeat, through :class:`synthdet.experiments.ExperimentRunner`
  (default detector and ``short`` recipe; see ``--point-detector`` / ``--point-recipe``).
- ``d redo``: ReDO ``fit_redo`` at 128 px for as many iterations as fit in 3 minutes, then its mean
  IoU on the classification images vs the true masks (the centred-ellipse baseline alongside).
- ``e stream feed``: per step, the trainer's time in ``next(batch_iter)`` vs the training step, with
  N DataLoader workers: does the stream keep the GPU fed (FAIL above ``max_wait_share``).
- ``f torchrun``: ``torchrun --standalone --nproc_per_node 1 -m synthdet.cli pretrain ...`` as a
  subprocess with a timeout. With one process ``WORLD_SIZE`` is 1 and synthdet starts no process
  group, so on one GPU this proves the launcher path, not NCCL itself; the line says which.

``--dry-run`` runs the same code on the CPU with tiny sizes (64 px, a few iterations and images,
ReDO for 10 s at 32 px, two gloo processes for torchrun, AMP off; memory reported as n/a) in under
two minutes on 2 cores; ``tests/test_gpu_check.py`` runs it so the script cannot rot between GPUs.

Outputs: ``OUT/<step>/result.json`` and ``OUT/<step>/log.txt`` (logs, warnings, tracebacks) and
the run folders each step trained in; ``OUT/summary.md`` (the table), ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import torch

log = logging.getLogger("gpu_check")

DETECTORS = ("fcos_efficientnet_lite0", "ssd_mobilenet")  # the default detector, the paper's
MARKER = ".gpu_check"

# Every size in one place per mode, so a reader sees the budget. GPU times are estimates for one
# H100 until a lent GPU has run this (each line prints its seconds: adjust here from them).
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda", "amp": True, "image_size": 300,
        "workers": 12, "mask_procs": 12,          # DataLoader workers, GrabCut processes (16 cores)
        "objects": None, "scenes": None,          # all 600 classification images, all 300/60/100 scenes
        "eval_batch": 32,
        # (a) ~20-30 s per detector
        "pretrain_iters": 150, "pretrain_batch": 32,
        # (b) ~20-30 s per detector
        "finetune_iters": 150, "finetune_batch": 16, "val_every": 50,
        # (c) the paper's sizes: 1000 + 1000 iterations, batch 16, 50 real images; ~3 min
        "point_n_real": 50, "point_pretrain_iters": 1000, "point_finetune_iters": 1000,
        "point_batch": 16, "point_val_every": 50,
        # (d) 3 min of ReDO at 128 px with the authors' widths and batch
        "redo_resolution": 128, "redo_seconds": 180.0, "redo_batch": 20, "redo_channels": 64,
        # (e) ~15 s
        "feed_workers": (4, 12), "feed_steps": 60, "feed_batch": 32, "max_wait_share": 0.2,
        # (f) ~30 s
        "ddp_nproc": 1, "ddp_iters": 20, "ddp_batch": 16, "ddp_timeout_s": 240,
    },
    "dry": {
        "device": "cpu", "amp": False, "image_size": 64,
        "workers": 1, "mask_procs": 2,
        "objects": 8, "scenes": 4,
        "eval_batch": 4,
        "pretrain_iters": 3, "pretrain_batch": 4,
        "finetune_iters": 3, "finetune_batch": 2, "val_every": 3,
        "point_n_real": 3, "point_pretrain_iters": 2, "point_finetune_iters": 2,
        "point_batch": 2, "point_val_every": 2,
        "redo_resolution": 32, "redo_seconds": 10.0, "redo_batch": 4, "redo_channels": 8,
        "feed_workers": (1,), "feed_steps": 2, "feed_batch": 2, "max_wait_share": None,
        "ddp_nproc": 2, "ddp_iters": 2, "ddp_batch": 4, "ddp_timeout_s": 120,
    },
}


class Result(NamedTuple):
    """What a step measured: ``values`` (JSON), ``text`` (the line's figures), ``problems``
    (empty = PASS)."""

    values: dict[str, Any]
    text: str
    problems: list[str]


@dataclass
class Ctx:
    """Settings of this check and what ``setup`` found (None until it has run)."""

    sizes: dict[str, Any]
    out: Path
    device: torch.device
    data_root: Optional[Path]
    point_detector: str
    point_recipe: str
    bench: Any = None
    objects: Optional[Path] = None
    masks: Optional[Path] = None
    splits: dict[str, Path] = field(default_factory=dict)

    def need_setup(self) -> Any:
        if self.bench is None:
            raise RuntimeError("setup failed: no benchmark")
        return self.bench

    def stream(self, seed: int) -> Any:
        """The synthesis stream over the object images (GrabCut masks from ``setup``), as the
        experiment runner builds it (one class, uint8 images)."""
        from synthdet.synthesis import SynthConfig, make_stream
        from synthdet.utils.config import from_dict

        bench = self.need_setup()
        return make_stream(self.objects, bench.backgrounds_dir, segmenter="grabcut", cache_dir=self.masks,
                           config=from_dict(SynthConfig, self.synthesis()), seed=seed, progress=False,
                           class_name="bird", one_class=True, uint8_images=True)

    def synthesis(self) -> dict[str, Any]:
        """The demo's synthesis settings with the canvas at the detector's input size."""
        from synthdet.experiments.demo import demo_config

        return {**demo_config().synthesis, "canvas_size": self.sizes["image_size"]}

    def train_cfg(self, recipe: str, **kw: Any) -> Any:
        from synthdet.training.config import train_config

        return train_config({"recipe": recipe}, image_size=self.sizes["image_size"], device=str(self.device),
                            amp=self.sizes["amp"], progress=False, seed=0, **kw)

    def records(self, split: str) -> tuple[list, dict[int, str]]:
        from synthdet.datasets.coco import read_coco

        self.need_setup()
        return read_coco(self.splits[split])


# ----------------------------------------------------------------------------- helpers


def _expect(ok: bool, problem: str) -> list[str]:
    return [] if ok else [problem]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _gib(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f} GiB"


def _ap(v: Any) -> str:
    return f"{100 * v:.1f}" if _finite(v) else str(v)


def _mask_chunk(cache_dir: str, paths: list[str]) -> dict[str, int]:
    """GrabCut masks of ``paths`` into the mask cache (one process of the setup's pool)."""
    from synthdet.segmentation import MaskCache, get_segmenter

    return MaskCache(cache_dir, get_segmenter("grabcut")).prepare(paths, progress=False)


def _prepare_masks(paths: list[Path], cache_dir: Path, procs: int) -> dict[str, int]:
    chunks = [[str(p) for p in paths[i::procs]] for i in range(procs) if paths[i::procs]]
    with ProcessPoolExecutor(len(chunks), mp_context=get_context("spawn")) as pool:
        counts = list(pool.map(partial(_mask_chunk, str(cache_dir)), chunks))
    return {k: sum(c[k] for c in counts) for k in counts[0]}


def _subset_coco(src: Path, dst: Path, count: int) -> Path:
    """The first ``count`` images of a COCO file and their boxes, with absolute image paths."""
    data = json.loads(src.read_text())
    images = data["images"][:count]
    for im in images:
        im["file_name"] = str((src.parent / im["file_name"]).resolve())
    keep = {im["id"] for im in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in keep])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))
    return dst


def _objects_dir(bench: Any, count: Optional[int], out: Path) -> Path:
    """All classification images, or a folder of links to the first ``count`` (same file names,
    so true masks still pair by stem)."""
    if count is None:
        return bench.classification_dir
    folder = out / "objects"
    folder.mkdir(parents=True, exist_ok=True)
    for p in bench.classification_images()[:count]:
        os.symlink(p.resolve(), folder / p.name)
    return folder


# ----------------------------------------------------------------------------- steps


def step_setup(ctx: Ctx, out: Path) -> Result:
    from synthdet.datasets.birds import build_birds
    from synthdet.utils.files import list_images

    s = ctx.sizes
    if ctx.device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available (on a CPU use --dry-run)")
    bench = build_birds(ctx.data_root, progress=False)
    objects = _objects_dir(bench, s["objects"], out)
    splits = {k: (p if s["scenes"] is None else _subset_coco(p, out / "annotations" / f"{k}.json", s["scenes"]))
              for k, p in bench.annotations.items()}
    paths = list_images(objects)
    t0 = time.perf_counter()
    counts = _prepare_masks(paths, ctx.out / "masks", s["mask_procs"])
    mask_s = time.perf_counter() - t0
    ctx.bench, ctx.objects, ctx.masks, ctx.splits = bench, objects, ctx.out / "masks", splits
    name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    scenes = {k: len(json.loads(p.read_text())["images"]) for k, p in splits.items()}
    text = (f"{name}, torch {torch.__version__}; {len(paths)} objects, GrabCut masks {mask_s:.0f} s; "
            f"scenes {scenes['train']}/{scenes['val']}/{scenes['test']}")
    values = {"device": name, "torch": torch.__version__, "objects": len(paths), "mask_counts": counts,
              "mask_seconds": mask_s, "scenes": scenes}
    return Result(values, text, _expect(counts["skipped"] == 0, f"{counts['skipped']} object images skipped"))


def step_pretrain(ctx: Ctx, detector: str, out: Path) -> Result:
    from synthdet.models import build_detector
    from synthdet.training import pretrain
    from synthdet.utils.config import load_yaml

    s = ctx.sizes
    stream = ctx.stream(seed=0)
    model = build_detector(detector, len(stream.class_names), s["image_size"], "imagenet", seed=0)
    cfg = ctx.train_cfg("short", iterations=s["pretrain_iters"], batch_size=s["pretrain_batch"],
                        num_workers=s["workers"], checkpoint_every=0)
    _reset_peak(ctx.device)
    res = pretrain(model, stream, cfg, out / "run", resume=False)
    peak, amp = _peak_gib(ctx.device), bool(load_yaml(out / "run" / "config.yaml")["amp"])
    rate = res.steps * cfg.batch_size / res.seconds
    loss = res.losses[-1]["loss"] if res.losses else float("nan")
    values = {"samples_per_s": rate, "peak_gib": peak, "final_loss": loss, "amp": amp, "steps": res.steps,
              "batch": cfg.batch_size, "seconds": res.seconds}
    text = f"{rate:.1f} samples/s, peak {_gib(peak)}, loss {loss:.3f}, AMP {'on' if amp else 'off'}"
    problems = (_expect(res.steps == cfg.iterations, f"{res.steps} of {cfg.iterations} steps")
                + _expect(_finite(loss), f"final loss {loss}") + _expect(amp == s["amp"], f"AMP {amp}"))
    return Result(values, text, problems)


def step_finetune(ctx: Ctx, detector: str, out: Path) -> Result:
    from synthdet.datasets import DetectionDataset
    from synthdet.evaluation import evaluate_detector
    from synthdet.models import build_detector
    from synthdet.training import finetune

    s = ctx.sizes
    (train, names), (val, _), (test, _) = ctx.records("train"), ctx.records("val"), ctx.records("test")
    model = build_detector(detector, len(names), s["image_size"], "imagenet", seed=0)
    cfg = ctx.train_cfg("short", iterations=s["finetune_iters"], batch_size=s["finetune_batch"],
                        val_every=s["val_every"], num_workers=s["workers"], eval_batch_size=s["eval_batch"])
    _reset_peak(ctx.device)
    res = finetune(model, DetectionDataset(train), DetectionDataset(val), cfg, out / "run", resume=False,
                   class_names=names)
    ap = float(evaluate_detector(model, DetectionDataset(test), device=ctx.device, batch_size=s["eval_batch"])["ap50"])
    peak = _peak_gib(ctx.device)
    values = {"test_ap50": ap, "best_val_ap50": res.best_ap, "best_step": res.best_step, "steps": res.steps,
              "peak_gib": peak, "train_images": len(train), "test_images": len(test), "seconds": res.seconds}
    text = (f"test AP@0.5 {_ap(ap)} ({len(test)} images), best val {_ap(res.best_ap)} at step {res.best_step}, "
            f"peak {_gib(peak)}")
    problems = (_expect(res.steps == cfg.iterations, f"{res.steps} of {cfg.iterations} steps")
                + _expect(_finite(ap), f"test AP {ap}") + _expect(res.best_ap is not None, "never validated"))
    return Result(values, text, problems)


def step_point(ctx: Ctx, out: Path) -> Result:
    from synthdet.experiments import ExperimentRunner
    from synthdet.experiments.config import DataSpec, StudySpec
    from synthdet.experiments.demo import demo_config
    from synthdet.utils.outdir import write_marker

    s, bench = ctx.sizes, ctx.need_setup()
    exp = out / "experiment"
    shutil.copytree(ctx.masks, exp / "mask_cache")  # the setup's masks: no GrabCut again
    write_marker(exp, "experiment")
    kw = {"recipe": ctx.point_recipe, "batch_size": s["point_batch"], "num_workers": s["workers"],
          "amp": s["amp"], "progress": False}
    base = demo_config(device=str(ctx.device))
    cfg = dataclasses.replace(
        base, name="gpu-check-point", detectors=(ctx.point_detector,), image_size=s["image_size"],
        data=DataSpec(objects=str(ctx.objects), backgrounds=str(bench.backgrounds_dir), real_format="coco",
                      real_train=str(ctx.splits["train"]), real_val=str(ctx.splits["val"]),
                      real_test=str(ctx.splits["test"])),
        synthesis=ctx.synthesis(),
        pretrain={**kw, "iterations": s["point_pretrain_iters"]},
        finetune={**kw, "iterations": s["point_finetune_iters"], "val_every": s["point_val_every"]},
        study=StudySpec(kind="data_efficiency", real_sizes=(s["point_n_real"],), repeats=1),
        eval_batch_size=s["eval_batch"])
    rows = ExperimentRunner(cfg, exp).run()
    ap = {r["variant"]: float(r["ap50"]) for r in rows}
    n = {r["variant"]: int(r["n_real"]) for r in rows}
    pre, none = ap.get("pretrained", float("nan")), ap.get("no_pretraining", float("nan"))
    values = {"ap50": ap, "n_real": n, "detector": ctx.point_detector, "recipe": ctx.point_recipe,
              "iterations": [s["point_pretrain_iters"], s["point_finetune_iters"]],
              "train_seconds": {r["variant"]: float(r["train_seconds"]) for r in rows}}
    text = (f"test AP@0.5 pretrained {_ap(pre)} vs not {_ap(none)} ({ctx.point_detector}, {ctx.point_recipe}, "
            f"n={n.get('pretrained')}, {s['point_pretrain_iters']}+{s['point_finetune_iters']} it)")
    return Result(values, text, _expect(_finite(pre) and _finite(none), f"AP {ap}"))


def step_redo(ctx: Ctx, out: Path) -> Result:
    from synthdet.segmentation import get_segmenter
    from synthdet.segmentation.metrics import evaluate_segmenter
    from synthdet.segmentation.redo import RedoConfig, RedoSegmenter
    from synthdet.segmentation.redo_train import fit_redo

    s, bench = ctx.sizes, ctx.need_setup()
    c = s["redo_channels"]
    cfg = RedoConfig(resolution=s["redo_resolution"], iterations=10**9, time_limit_minutes=s["redo_seconds"] / 60,
                     batch_size=s["redo_batch"], mask_channels=c, gen_channels=c, disc_channels=c, enc_channels=c,
                     checkpoint_every=10**9, preview_every=10**9, device=str(ctx.device), seed=0)
    t0 = time.perf_counter()
    ckpt = fit_redo(ctx.objects, cfg, out / "redo", resume=False, progress=False)
    fit_s = time.perf_counter() - t0
    seg = RedoSegmenter(ckpt, device=str(ctx.device))
    redo = evaluate_segmenter(seg, ctx.objects, bench.true_masks_dir, progress=False)
    ellipse = evaluate_segmenter(get_segmenter("ellipse"), ctx.objects, bench.true_masks_dir, progress=False)
    values = {"iterations": seg.step, "fit_seconds": fit_s, "it_per_s": seg.step / fit_s, "iou": redo["iou"],
              "accuracy": redo["accuracy"], "images": redo["images"], "ellipse_iou": ellipse["iou"]}
    text = (f"{seg.step} it in {fit_s:.0f} s at {s['redo_resolution']} px; mean IoU {redo['iou']:.3f} on "
            f"{redo['images']} images (ellipse baseline {ellipse['iou']:.3f})")
    problems = _expect(seg.step > 0, "no iteration") + _expect(_finite(redo["iou"]), f"IoU {redo['iou']}")
    return Result(values, text, problems)


def _move(batch: Any, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A batch on ``device``, uint8 images scaled to [0, 1] there (as the trainer does)."""
    images, targets = batch
    images = [im.to(device, non_blocking=True) for im in images]
    images = [im.float().div_(255) if im.dtype == torch.uint8 else im for im in images]
    return images, [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def _feed_once(ctx: Ctx, model: torch.nn.Module, opt: torch.optim.Optimizer, stream: Any,
               workers: int) -> dict[str, float]:
    """Seconds per step in ``next(batch_iter)`` (wait) vs moving + training (compute), after a
    warm-up that drains the batches the workers prefetched while starting."""
    from synthdet.training import batch_iterator, train_one_step

    s = ctx.sizes
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=s["amp"])
    it = batch_iterator(stream, s["feed_batch"], 0, 0, workers)
    warm, wait, compute = 2 * workers + 2, 0.0, 0.0
    for k in range(warm + s["feed_steps"]):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        images, targets = _move(batch, ctx.device)
        train_one_step(model, images, targets, opt, scaler, s["amp"])
        _sync(ctx.device)
        if k >= warm:
            wait, compute = wait + t1 - t0, compute + time.perf_counter() - t1
    del it
    n = s["feed_steps"]
    return {"wait_ms": 1000 * wait / n, "compute_ms": 1000 * compute / n, "wait_share": wait / (wait + compute),
            "samples_per_s": n * s["feed_batch"] / (wait + compute)}


def step_feed(ctx: Ctx, out: Path) -> Result:
    from synthdet.models import build_detector

    s = ctx.sizes
    stream = ctx.stream(seed=1)
    model = build_detector(DETECTORS[0], 1, s["image_size"], "imagenet", seed=0).to(ctx.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = {n: _feed_once(ctx, model, opt, stream, n) for n in s["feed_workers"]}
    text = "; ".join(f"{n} workers: wait {r['wait_ms']:.0f} / step {r['compute_ms']:.0f} ms "
                     f"({100 * r['wait_share']:.0f} % waiting, {r['samples_per_s']:.0f} samples/s)"
                     for n, r in rows.items())
    limit, last = s["max_wait_share"], rows[max(rows)]["wait_share"]
    problems = _expect(limit is None or last <= limit,
                       f"GPU starved: {100 * last:.0f} % of the time waiting with {max(rows)} workers")
    values = {"detector": DETECTORS[0], "batch": s["feed_batch"], "per_workers": rows, "max_wait_share": limit}
    return Result(values, text, problems)


def _run_logged(cmd: list[str], log_path: Path, timeout: float) -> int:
    """Run ``cmd`` in its own process group, output to ``log_path``; the group is killed on timeout."""
    with open(log_path, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"torchrun still running after {timeout:.0f} s (killed)") from None


def step_torchrun(ctx: Ctx, out: Path) -> Result:
    from synthdet.utils.config import dump_yaml, load_yaml

    s, bench = ctx.sizes, ctx.need_setup()
    run, nproc = out / "run", s["ddp_nproc"]
    dump_yaml(ctx.synthesis(), out / "synthesis.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "synthdet.cli", "pretrain", "--objects", str(ctx.objects), "--backgrounds", str(bench.backgrounds_dir),
           "--cache-dir", str(ctx.masks), "--out", str(run), "--iterations", str(s["ddp_iters"]),
           "--batch-size", str(s["ddp_batch"]), "--image-size", str(s["image_size"]), "--device", ctx.device.type,
           "--num-workers", "0", "--synth-config", str(out / "synthesis.yaml"), "--no-progress", "--no-resume"]
    rc = _run_logged(cmd, out / "torchrun.log", s["ddp_timeout_s"])
    if rc != 0:
        tail = (out / "torchrun.log").read_text().strip().splitlines()[-1:] or [""]
        return Result({"returncode": rc, "command": cmd}, f"exit {rc}", [f"torchrun exit {rc}: {tail[0][:160]}"])
    resolved = load_yaml(run / "config.yaml")
    world = int(resolved["world_size"])
    backend = "none" if world == 1 else ("nccl" if ctx.device.type == "cuda" else "gloo")
    result = json.loads((run / "result.json").read_text())
    values = {"returncode": rc, "world_size": world, "backend": backend, "steps": result["steps"],
              "amp": resolved["amp"], "device": resolved["device"], "command": cmd}
    note = " (WORLD_SIZE=1: no process group, NCCL not exercised)" if world == 1 else ""
    text = f"{nproc} process(es), world {world}, backend {backend}, {result['steps']} it, exit 0{note}"
    problems = (_expect(world == nproc, f"world size {world}, expected {nproc}")
                + _expect(result["steps"] == s["ddp_iters"], f"{result['steps']} steps")
                + _expect((run / "last.pt").is_file(), "no last.pt"))
    return Result(values, text, problems)


# ----------------------------------------------------------------------------- running the steps


@dataclass
class Outcome:
    name: str
    seconds: float
    result: Optional[Result] = None
    error: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.result is not None and not self.result.problems

    @property
    def status(self) -> str:
        if self.passed:
            return "PASS"
        return f"FAIL ({self.error or '; '.join(self.result.problems)})"  # type: ignore[union-attr]

    @property
    def figures(self) -> str:
        return f"{self.result.text if self.result else '-'} [{self.seconds:.0f} s]"

    def line(self) -> str:
        return f"{self.name} | {self.figures} | {self.status}"


@contextlib.contextmanager
def _captured(log_path: Path) -> Iterator[None]:
    """Logging, warnings, stdout and stderr of a step go to ``log_path``, not the terminal."""
    with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)


def run_step(name: str, fn: Callable[[Path], Result], out: Path) -> Outcome:
    """Run one step in ``out/<slug>`` (emptied first), never raising; writes its ``result.json``."""
    folder = out / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    outcome = Outcome(name, 0.0)
    with _captured(folder / "log.txt"):
        try:
            outcome.result = fn(folder)
        except Exception as e:  # noqa: BLE001 - a failing step must not stop the others
            log.error("step %s failed:\n%s", name, traceback.format_exc())
            outcome.error = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    outcome.seconds = time.perf_counter() - t0
    values = outcome.result.values if outcome.result else {}
    (folder / "result.json").write_text(json.dumps(
        {"step": name, "passed": outcome.passed, "status": outcome.status, "figures": outcome.figures,
         "seconds": outcome.seconds, "values": values}, indent=2, default=str) + "\n")
    return outcome


def plan(ctx: Ctx, letters: str) -> list[tuple[str, Callable[[Path], Result]]]:
    """The steps to run (``setup`` always), in order, filtered by their letters."""
    steps: list[tuple[str, str, Callable[[Path], Result]]] = [("setup", "setup", partial(step_setup, ctx))]
    steps += [("a", f"a pretrain {d}", partial(step_pretrain, ctx, d)) for d in DETECTORS]
    steps += [("b", f"b finetune+eval {d}", partial(step_finetune, ctx, d)) for d in DETECTORS]
    steps += [("c", f"c data-efficiency n={ctx.sizes['point_n_real']}", partial(step_point, ctx)),
              ("d", "d redo", partial(step_redo, ctx)),
              ("e", "e stream feed", partial(step_feed, ctx)),
              ("f", "f torchrun", partial(step_torchrun, ctx))]
    return [(name, fn) for key, name, fn in steps if key == "setup" or key in letters]


def write_summary(out: Path, outcomes: list[Outcome], mode: str, sizes: dict[str, Any], seconds: float) -> None:
    rows = "\n".join(f"| {o.name} | {o.figures} | {o.status} |".replace("\n", " ") for o in outcomes)
    failed = sum(not o.passed for o in outcomes)
    md = (f"# synthdet GPU check ({mode})\n\n`python {' '.join(sys.argv)}`: {len(outcomes) - failed} of "
          f"{len(outcomes)} steps passed in {seconds:.0f} s.\n\n| step | figures | result |\n|---|---|---|\n{rows}\n\n"
          f"Sizes:\n\n```json\n{json.dumps(sizes, indent=1)}\n```\n")
    (out / "summary.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(
        {"mode": mode, "seconds": seconds, "sizes": sizes,
         "steps": [{"step": o.name, "passed": o.passed, "status": o.status, "figures": o.figures} for o in outcomes]},
        indent=2, default=str) + "\n")


def _claim(out: Path) -> None:
    """Refuse an existing, non-empty folder this script did not write; mark it as ours."""
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SystemExit(f"gpu_check: {out} holds files this script did not write; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("bench/gpu_check.py\n")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="output folder (default %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes (< 2 min)")
    ap.add_argument("--steps", default="abcdef", help="letters of the steps to run (default all: %(default)s)")
    ap.add_argument("--data-root", type=Path, default=None,
                    help="data root holding birds/ (default $SYNTHDET_HOME or ~/.cache/synthdet)")
    ap.add_argument("--point-detector", default=DETECTORS[0], help="detector of step c (default %(default)s)")
    ap.add_argument("--point-recipe", default="short", choices=("short", "paper"), help="recipe of step c")
    args = ap.parse_args(argv)
    mode = "dry" if args.dry_run else "gpu"
    sizes = SIZES[mode]
    if args.dry_run:  # tiny tensors on a small, shared CPU: one thread (as tests/conftest.py measured)
        torch.set_num_threads(1)
    _claim(args.out)
    logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    ctx = Ctx(sizes, args.out, torch.device(sizes["device"]), args.data_root, args.point_detector, args.point_recipe)
    t0 = time.perf_counter()
    outcomes = []
    for name, fn in plan(ctx, args.steps):
        outcomes.append(run_step(name, fn, args.out))
        print(outcomes[-1].line(), flush=True)
    seconds = time.perf_counter() - t0
    write_summary(args.out, outcomes, mode, sizes, seconds)
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} steps passed in {seconds:.0f} s; "
          f"summary: {args.out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
