"""The steps of ``bench/gpu_check.py`` (what each proves, the sizes and how to run: its docstring):
one function per step, ``step_X(ctx, ..., out) -> Result``, and the :class:`Ctx` they share."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

DETECTORS = ("fcos_efficientnet_lite0", "ssd_mobilenet")  # the default detector, the paper's


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
    from synthdet.segmentation.redo import RedoConfig
    from synthdet.segmentation.redo_segmenter import RedoSegmenter
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
