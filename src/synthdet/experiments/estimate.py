"""How long an experiment will take on this machine, from a few timed steps.

:func:`estimate` counts, from the plan, the training iterations, validations and test
evaluations still to do, times a few training steps of each detector (random images of its
training size, the run's batch size and recipe) and one evaluation batch at its detection size,
and multiplies. Data preparation (segmenting the object images, reading and augmenting images)
is not in it: the demo's first run adds about a minute for its GrabCut masks.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .runner import ExperimentRunner


@dataclass(frozen=True)
class Estimate:
    """Counts of the work left and the probe's timings; ``seconds`` is their product."""

    train_iterations: int
    eval_images: int
    seconds_per_iteration: float
    seconds_per_image: float

    @property
    def seconds(self) -> float:
        return self.train_iterations * self.seconds_per_iteration + self.eval_images * self.seconds_per_image

    def line(self) -> str:
        return (f"expected on this machine: about {self.seconds / 60:.0f} min for {self.train_iterations} training "
                f"iterations ({self.seconds_per_iteration:.2f} s each) and {self.eval_images} images evaluated "
                f"({1000 * self.seconds_per_image:.0f} ms each), from timed probe steps; data preparation not included")


def _work_left(runner: "ExperimentRunner") -> tuple[int, int]:
    """(training iterations, images evaluated) of the runs not finished yet."""
    pre_cfg, ft_cfg = runner._train_cfg("pretrain"), runner._train_cfg("finetune")
    n_val, n_test = len(runner.data.val), len(runner.data.test)
    iters = images = 0
    pretrainings = set()
    for run in runner.runs:
        if runner.is_done(run):
            continue
        images += n_test
        if run.pretrain is not None and not (runner.out / "pretrain" / run.pretrain.run_id / "done.json").is_file():
            pretrainings.add(run.pretrain.run_id)
        if run.mode == "pretrain_only":
            continue
        n = len(runner._real_subset(run.n_real, run.repeat))
        ft = ft_cfg.for_dataset(n) if run.mode == "finetune" else None
        steps = ft.iterations if ft is not None else pre_cfg.iterations + ft_cfg.iterations
        iters += steps
        validations = -(-steps // ft_cfg.val_every) + int(ft_cfg.val_at_start)
        images += validations * n_val
    iters += len(pretrainings) * pre_cfg.iterations
    return iters, images


def _probe(runner: "ExperimentRunner", detector: str, steps: int = 3) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluated image) of ``detector`` as the runs use it."""
    from ..evaluation.evaluate import _forward_batches
    from ..training.engine import run_training
    from ..utils.device import resolve_device

    cfg = runner._train_cfg("pretrain", iterations=steps + 1, checkpoint_every=0, progress=False,
                            tensorboard=False)
    model = runner.build_model(detector, "none", seed=0)
    size = getattr(model.transform, "train_size", runner.cfg.image_size)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(cfg.batch_size)]
    targets = [{"boxes": torch.tensor([[size * 0.2, size * 0.2, size * 0.6, size * 0.7]]),
                "labels": torch.ones(1, dtype=torch.int64)} for _ in images]
    stamps: list[float] = []

    def batches(start, info):
        while True:
            stamps.append(time.perf_counter())
            yield images, targets

    with tempfile.TemporaryDirectory() as d:
        run_training(model, batches, cfg, d, resume=False, stage="probe")
    per_step = (stamps[steps] - stamps[1]) / (steps - 1)  # the first step pays allocations
    model.eval()
    side = runner.cfg.image_size
    batch = [torch.rand(3, side, side, generator=g) for _ in range(2 * runner.cfg.eval_batch_size)]
    chunks = [(batch[i:i + runner.cfg.eval_batch_size], None) for i in range(0, len(batch), runner.cfg.eval_batch_size)]
    device = resolve_device(runner.cfg.device)
    model.to(device)
    list(_forward_batches(model, chunks[:1], device))  # warm-up
    t = time.perf_counter()
    list(_forward_batches(model, chunks, device))
    return per_step, (time.perf_counter() - t) / len(batch)


def estimate(runner: "ExperimentRunner", timings: tuple[float, float] | None = None) -> Estimate:
    """The :class:`Estimate` of what is left of ``runner``'s experiment (timed on its first
    detector; ``timings``: the ``(seconds per iteration, seconds per image)`` of an earlier
    estimate instead of a new probe)."""
    iters, images = _work_left(runner)
    per_step, per_image = timings or _probe(runner, runner.cfg.detectors[0])
    return Estimate(iters, images, per_step, per_image)
