"""Experiment configuration: one YAML file -> one frozen :class:`ExperimentConfig`.

Example (``configs/birds.yaml``)::

    name: birds
    data: {benchmark: birds}
    segmenter: {name: grabcut}
    detectors: [ssd_efficientnet_lite0]
    image_size: 160
    pretrain: {iterations: 300, batch_size: 16}
    finetune: {iterations: 300, val_every: 25}
    study: {kind: data_efficiency, real_sizes: [0, 10, 50, -1], repeats: 1}

``synthesis``, ``pretrain`` and ``finetune`` are checked against
:class:`synthdet.synthesis.SynthConfig` and :class:`synthdet.training.TrainConfig` when the file
is loaded, so a typo fails before any training starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..utils.config import ConfigError, from_dict, load_yaml

StudyKind = Literal["data_efficiency", "mixed", "segmentation", "objects", "blending", "placement"]
VARIANT_STUDIES = ("blending", "placement")  # one pretraining per named override of the synthesis settings


@dataclass(frozen=True)
class DataSpec:
    """Where the object images, backgrounds and the real detection data come from.

    ``benchmark: birds`` fills every path from the built-in offline birds benchmark (built on
    first use under ``benchmark_root`` or ``$SYNTHDET_HOME``). Otherwise give the paths:
    ``objects`` (folder of classification images; class subfolders allowed), ``backgrounds``
    (folder of photos, or a Pascal VOC root with ``backgrounds_format: voc``), and the real
    dataset (``real_format`` plus ``real_train``/``real_val``/``real_test`` paths, passed to
    :func:`synthdet.datasets.read_dataset` with ``real_kwargs``; when the three paths are the same
    dataset root, each is read with ``split=`` from ``real_splits``).
    """

    benchmark: Optional[str] = None
    benchmark_root: Optional[str] = None
    objects: Optional[str] = None
    generator: Optional[str] = None  # generator spec for the "objects" study (GAN checkpoint, TorchScript, module:fn)
    # 0 = endless: every object is a fresh sample, segmented on the fly. N > 0 = sample N images
    # once into the experiment folder, segment each once (mask cache) and draw from that pool,
    # which is what a CPU can afford when the segmenter is slow (GrabCut: ~0.1 s per object).
    generator_pool: int = 0
    backgrounds: Optional[str] = None
    backgrounds_format: Literal["folder", "voc"] = "folder"
    backgrounds_exclude: tuple[str, ...] = ("person",)
    real_format: str = "coco"
    real_train: Optional[str] = None
    real_val: Optional[str] = None
    real_test: Optional[str] = None
    real_kwargs: dict = field(default_factory=dict)
    # Split names passed as ``split=`` when train/val/test point at the same dataset root.
    real_splits: tuple[str, str, str] = ("train", "val", "test")

    def __post_init__(self) -> None:
        if self.benchmark is None:
            missing = [k for k in ("objects", "backgrounds", "real_train", "real_val", "real_test")
                       if getattr(self, k) is None and not (k == "objects" and self.generator)]
            if missing:
                raise ValueError(f"without a 'benchmark', data needs: {', '.join(missing)}")
        elif self.benchmark != "birds":
            raise ValueError(f"unknown benchmark {self.benchmark!r} (known: birds)")


@dataclass(frozen=True)
class SegmenterSpec:
    """Segmenter for the object images: ``grabcut`` | ``redo`` | ``none`` | ``file``.

    ``redo`` with no ``checkpoint`` trains ReDO first on the object images with the ``fit``
    settings (a :class:`synthdet.segmentation.redo.RedoConfig` mapping), resumably.
    """

    name: str = "grabcut"
    checkpoint: Optional[str] = None
    fit: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """Which comparison to run (paper section IV).

    - ``data_efficiency``: ``real_sizes`` x {no pretraining, pretrained}; size 0 = pretrain only,
      -1 = all real training images (Tables I-III, Figure 3).
    - ``mixed``: at ``real_size``, pretrain+finetune vs one mixed run on real + a fixed pool of
      ``m * real_size`` artificial samples for each m in ``pool_multipliers``, and the endless
      stream (Tables IV-V).
    - ``segmentation``: pretrained with the configured segmenter vs naive pasting (Table VI-style),
      plus one pretraining per extra segmenter in ``segmenters`` (registry names or fallback chains
      such as ``cosegment,grabcut``; their settings: ``segmenter.kwargs`` when the name matches).
    - ``objects``: real object images vs generated ones (``data.generator``) (Table VI).
    - ``blending`` / ``placement``: at ``real_size``, one pretrained model per entry of
      ``variants`` (name -> settings laid over ``synthesis``, e.g. ``{gaussian: {blend: gaussian}}``
      or ``{birds_row: {preset: birds}}``), plus no pretraining; same seed and budget for all.
      A variant with ``placement: fitted`` fits its geometry to the ``real_size`` training images.
    """

    kind: StudyKind = "data_efficiency"
    real_sizes: tuple[int, ...] = (0, 10, 50, 100, -1)
    real_size: int = 100
    pool_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    include_stream: bool = True
    mixed_real_fraction: float = 0.5
    repeats: int = 3
    variants: dict = field(default_factory=dict)
    segmenters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_variants(self)
        if self.segmenters and self.kind != "segmentation":
            raise ValueError(f"study.segmenters is used by the segmentation study only, not by {self.kind!r}")
        bad = [n for n in self.real_sizes if n < -1]
        if bad:
            raise ValueError(f"real_sizes: {bad} not allowed (a count >= 0, or -1 for all real images)")
        if len(set(self.real_sizes)) != len(self.real_sizes):
            raise ValueError(f"real_sizes lists a size twice: {list(self.real_sizes)}")
        if not self.real_sizes and self.kind == "data_efficiency":
            raise ValueError("real_sizes must list at least one size")
        if self.real_size < 1 and self.real_size != -1:
            raise ValueError(f"real_size must be >= 1 or -1 (all), got {self.real_size}")
        if any(m < 1 for m in self.pool_multipliers):
            raise ValueError(f"pool_multipliers must be >= 1, got {list(self.pool_multipliers)}")
        if not 0.0 < self.mixed_real_fraction < 1.0:
            raise ValueError(f"mixed_real_fraction must be in (0, 1), got {self.mixed_real_fraction}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


def _check_variants(st: StudySpec) -> None:
    import re

    if st.kind in VARIANT_STUDIES and not st.variants:
        raise ValueError(f"study kind {st.kind!r} needs variants: {{name: {{synthesis settings}}, ...}}")
    if st.variants and st.kind not in VARIANT_STUDIES:
        raise ValueError(f"study.variants are used by the {' and '.join(VARIANT_STUDIES)} studies only, "
                         f"not by {st.kind!r}")
    for name, overrides in st.variants.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) \
                or name == "no_pretraining":
            raise ValueError(f"study.variants: {name!r} is not a usable variant name (letters, digits, _.+-; "
                             "not 'no_pretraining')")
        if not isinstance(overrides, dict):
            raise ValueError(f"study.variants.{name}: expected a mapping of synthesis settings, got {overrides!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    data: DataSpec = DataSpec(benchmark="birds")
    segmenter: SegmenterSpec = SegmenterSpec()
    synthesis: dict = field(default_factory=dict)
    detectors: tuple[str, ...] = ("ssd_mobilenet",)
    # per detector name: extra arguments of its builder, e.g. {fcos_efficientnet_lite0: {fpn_channels: 64}}
    detector_options: dict = field(default_factory=dict)
    image_size: int = 300
    weights: str = "imagenet"
    pretrain: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    study: StudySpec = StudySpec()
    device: str = "auto"
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ValueError("detectors must list at least one detector")
        stray = sorted(set(self.detector_options) - set(self.detectors))
        if stray or not all(isinstance(v, dict) for v in self.detector_options.values()):
            raise ValueError("detector_options maps names listed in detectors to {option: value} mappings"
                             + (f"; not in detectors: {stray}" if stray else ""))
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {self.image_size}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.study.kind == "objects" and not self.data.generator:
            raise ValueError("study kind 'objects' needs data.generator")


def _check_stage_settings(cfg: ExperimentConfig) -> None:
    from ..training.config import train_config

    synthesis_config(cfg)
    for name in cfg.study.variants:
        synthesis_config(cfg, name)
    train_config(cfg.pretrain, where="pretrain")
    train_config(cfg.finetune, where="finetune")
    for name, options in cfg.detector_options.items():
        _check_detector_options(name, options)


def _check_detector_options(name: str, options: dict) -> None:
    """A typo in ``detector_options`` fails when the file is loaded, not after pretraining."""
    from ..models import builder_options

    try:
        known = builder_options(name)
    except ValueError as e:
        raise ConfigError(f"detector_options: {e}") from None
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"detector_options.{name}: unknown option(s) {unknown}; known: {known}")


def synthesis_config(cfg: ExperimentConfig, variant: str = "default"):
    """The validated :class:`~synthdet.synthesis.SynthConfig` of ``cfg.synthesis`` (``preset:``
    resolved) with study variant ``variant``'s settings on top (``"default"``: none)."""
    from ..synthesis.config import synth_config

    if variant == "default":
        return synth_config(cfg.synthesis)
    return synth_config(cfg.synthesis, cfg.study.variants[variant], where=f"study.variants.{variant}")


def experiment_from_dict(data: dict[str, Any], where: str = "experiment") -> ExperimentConfig:
    """Build and fully validate an :class:`ExperimentConfig` from a mapping."""
    cfg = from_dict(ExperimentConfig, data, where=where)
    _check_stage_settings(cfg)
    return cfg


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read a YAML experiment file; errors name the file and the bad key. An empty file is an
    error (it would silently run the default study)."""
    data = load_yaml(path)
    if not data:
        raise ConfigError(f"{path}: empty experiment file (see configs/ for examples)")
    try:
        return experiment_from_dict(data, where=str(path))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def with_overrides(cfg: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    return dataclasses.replace(cfg, **changes)
