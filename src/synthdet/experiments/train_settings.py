"""The settings of ``synthdet train``: the demo's (:func:`~synthdet.experiments.demo.demo_config`,
the single source of truth for the detector, head, sizes, recipe and budgets), with the image
sizes and the box geometry chosen from the user's real images, the iteration count, and the
user's YAML / ``--set`` settings on top (keys of an experiment YAML, ``configs/*.yaml``).

Rules (README, "Using it on your data"; measurements in ``docs/train.md``):

- **sizes**: the demo detects its 256 px scenes at 320 px (1.25x) and trains on 192 px crops at
  that scale. ``train`` keeps that scale for the user's images: detection side = 1.25 x the
  median longer side of the training images (the demo's detection side / the benchmark's scene
  side), rounded up to a multiple of 32, between 64 and twice the demo's detection side; the
  training side (and the synthetic canvas) = the demo's training side, or the detection side
  when that is smaller. Images like the demo's get exactly the demo's sizes.
- **geometry**: fitted to the real boxes (``placement: fitted`` with ``allow_overlap``) from
  ``FIT_MIN_BOXES`` training boxes on, the demo's generic geometry below (see the constant).
- **iterations**: ``N`` pretraining iterations and ``round(N x`` the demo's finetuning /
  pretraining ratio``)`` finetuning iterations (the demo's ``min_epochs`` on top); N defaults to
  the demo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..datasets.records import DetectionRecord
from ..utils.config import load_yaml, to_dict
from ..utils.errors import UserError
from .config import ExperimentConfig, experiment_from_dict

# Fitted geometry needs enough boxes: on the birds benchmark (bench/placement.py --fit-n N, KS
# distance of the box side to the 271 test boxes) the fitted geometry (with overlap) is 0.22 /
# 0.18 / 0.14 / 0.13 / 0.09 from 29 / 64 / 123 / 249 / 755 boxes against the demo geometry's
# 0.11, and fitted to 29 boxes it cost 5-8 AP points at 10 real images (README, "Synthesis
# beyond the paper"). From about 250 boxes on the fitted side is as close as the generic one
# and the object count and aspect are much closer (KS 0.09 vs 0.35, 0.31 vs 0.41).
FIT_MIN_BOXES = 250
MIN_DETECT = 64
RESERVED = {"data": "the data comes from --objects / --train / --val / --test / --backgrounds",
            "study": "synthdet train runs one model (and the baseline with --compare-baseline)",
            "seed": "use --seed"}


@dataclass(frozen=True)
class Choices:
    """What the rules chose, for the report: sizes, geometry and iterations, and why."""

    median_side: float
    image_size: int
    train_size: int
    sizes_given: bool
    boxes: int
    fitted: bool
    geometry_given: bool
    pretrain_iterations: int
    finetune_iterations: int


def demo_sizes(demo: ExperimentConfig) -> tuple[int, int]:
    """``(detection side, training side)`` of the demo's detector."""
    det = demo.detectors[0]
    return demo.image_size, int(demo.detector_options.get(det, {}).get("train_size") or demo.image_size)


def choose_sizes(records: Sequence[DetectionRecord], demo: ExperimentConfig) -> tuple[int, int, float]:
    """``(detection side, training side, median longer side)`` for the training ``records`` (the
    module docstring's rule)."""
    from ..datasets.birds.build import BirdsConfig

    detect, train = demo_sizes(demo)
    sides = [max(r.width, r.height) for r in records if r.width and r.height]
    median = float(np.median(sides)) if sides else float(BirdsConfig().scene_size)
    scale = detect / BirdsConfig().scene_size  # the demo's scale: detection side / scene side
    side = int(np.clip(32 * math.ceil(median * scale / 32 - 1e-9), MIN_DETECT, 2 * detect))
    return side, min(train, side), median


def stage_iterations(n: int, demo: ExperimentConfig) -> tuple[int, int]:
    """``(pretraining, finetuning)`` iterations for ``n`` pretraining iterations, at the demo's ratio."""
    ratio = demo.finetune["iterations"] / demo.pretrain["iterations"]
    return n, max(1, round(n * ratio))


def _set(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {p} is not a mapping of settings")
    node[parts[-1]] = value


def user_settings(config: str | Path | Mapping[str, Any] | None = None,
                  overrides: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """The user's settings: a YAML file (or mapping) of experiment keys, then ``KEY=VALUE``
    overrides with dotted keys (``pretrain.cpu_shards=1``); the keys ``train`` sets itself are
    refused."""
    data: dict[str, Any] = load_yaml(config) if isinstance(config, (str, Path)) else \
        _plain(config or {})
    for key, value in overrides:
        _set(data, key, value)
    bad = sorted(set(data) & set(RESERVED))
    if bad:
        raise UserError(f"settings: '{bad[0]}' cannot be set here: {RESERVED[bad[0]]}")
    return data


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _get(data: Mapping[str, Any], key: str) -> Any:
    for p in key.split("."):
        if not isinstance(data, Mapping) or p not in data:
            return None
        data = data[p]
    return data


def train_config(train: Sequence[DetectionRecord], data: Mapping[str, Any], user: Mapping[str, Any],
                 iterations: Optional[int], seed: int, device: str, compare_baseline: bool
                 ) -> tuple[ExperimentConfig, Choices]:
    """The run's :class:`ExperimentConfig` (validated) and what the rules chose.

    ``train``: the records finetuned on (sizes and geometry come from them); ``data``: the
    ``data`` entry (paths, for the record); ``user``: :func:`user_settings`; ``iterations``:
    pretraining iterations (None: the demo's)."""
    from .demo import DEMO_DETECTOR, demo_config

    demo = demo_config(device=device)
    raw = to_dict(demo)
    dets = user.get("detectors") or raw["detectors"]
    if len(dets) != 1:
        raise UserError(f"settings: detectors: synthdet train trains one detector, got {list(dets)}")
    det = dets[0]
    options = dict(raw["detector_options"].get(det, {})) if det == DEMO_DETECTOR else {}
    options.pop("train_size", None)
    detect, train_side, median = choose_sizes(train, demo)
    detect = int(_get(user, "image_size") or detect)
    train_side = int(_get(user, f"detector_options.{det}.train_size") or min(train_side, detect))
    if train_side != detect and "train_size" in _builder_options(det):
        options["train_size"] = train_side
    boxes = int(sum(len(r.boxes) for r in train))
    placement = _get(user, "synthesis.placement")
    fitted = boxes >= FIT_MIN_BOXES if placement is None else placement == "fitted"
    synthesis = dict(raw["synthesis"], canvas_size=train_side)
    if fitted and placement is None:
        synthesis.update(placement="fitted", allow_overlap=True)
    pre, ft = stage_iterations(iterations or demo.pretrain["iterations"], demo)
    n = len(train)
    small = max(1, round(n / 5))  # the demo's 10 vs 50: label savings at a fifth of the images
    sizes = [small, -1] if compare_baseline and not fitted and 1 <= small < n else [-1]
    base = dict(raw, name="train", seed=int(seed), data=dict(data), synthesis=synthesis, detectors=[det],
                detector_options={det: options} if options else {}, image_size=detect,
                pretrain=dict(raw["pretrain"], iterations=pre), finetune=dict(raw["finetune"], iterations=ft),
                study={"kind": "data_efficiency", "real_sizes": sizes, "repeats": 1})
    user = dict(user)
    if "detector_options" in user:
        user["detector_options"] = {k: v for k, v in user["detector_options"].items() if k == det}
    cfg = experiment_from_dict(_merge(base, user), where="settings")
    cfg_train = int(cfg.detector_options.get(det, {}).get("train_size") or cfg.image_size)
    choices = Choices(median, cfg.image_size, cfg_train, _get(user, "image_size") is not None or
                      _get(user, f"detector_options.{det}.train_size") is not None, boxes, fitted,
                      placement is not None, int(cfg.pretrain["iterations"]), int(cfg.finetune["iterations"]))
    return cfg, choices


def _builder_options(name: str) -> list[str]:
    from ..models import builder_options

    return builder_options(name)
