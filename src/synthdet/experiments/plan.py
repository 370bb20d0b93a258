"""Turn a study into a flat list of runs (pure, no I/O), so the runner can skip finished ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import VARIANT_STUDIES, ExperimentConfig, synthesis_config

Mode = Literal["finetune", "pretrain_only", "mixed"]


@dataclass(frozen=True)
class PretrainSpec:
    """One pretraining on the artificial stream; shared by every run that starts from it."""

    detector: str
    repeat: int
    objects: Literal["real", "generated"] = "real"
    segmenter: str = "default"  # "default" = the experiment's segmenter, "none" = naive pasting
    synthesis: str = "default"  # "default" = the experiment's synthesis settings, else a study variant
    fit_n: Optional[int] = None  # placement fitted to the boxes of this many real training images

    @property
    def run_id(self) -> str:
        extra = (f"__syn-{self.synthesis}" if self.synthesis != "default" else "") + \
                ("" if self.fit_n is None else f"__fit{'all' if self.fit_n < 0 else self.fit_n}")
        return f"pretrain__{self.detector}__{self.objects}__seg-{self.segmenter}__r{self.repeat}{extra}"


@dataclass(frozen=True)
class RunSpec:
    """One evaluated model: a row of the results table.

    ``n_real`` is the requested number of real training images (-1 = all, 0 = none).
    ``pool`` is the artificial pool size of a mixed run (None = the endless stream).
    """

    study: str
    detector: str
    repeat: int
    variant: str
    n_real: int
    mode: Mode
    pretrain: Optional[PretrainSpec] = None
    pool: Optional[int] = None

    @property
    def run_id(self) -> str:
        n = "all" if self.n_real < 0 else str(self.n_real)
        return f"{self.study}__{self.detector}__{self.variant}__n{n}__r{self.repeat}"


def fitted_to(cfg: ExperimentConfig, n: int, variant: str = "default") -> Optional[int]:
    """``n`` when the synthesis settings (of ``variant``) fit the placement to the real boxes, else
    None. A fitted placement needs real boxes: ``n == 0`` (pretrain only) raises ValueError."""
    if synthesis_config(cfg, variant).placement != "fitted":
        return None
    if n == 0:
        raise ValueError("placement 'fitted' fits the geometry to the real training boxes of each run, and a "
                         "pretrain-only run (real size 0) has none: remove 0 from real_sizes or use 'uniform'")
    return n


def plan_runs(cfg: ExperimentConfig) -> list[RunSpec]:
    """All runs of ``cfg``'s study, in execution order (pretraining shared where possible; with
    ``placement: fitted``, one pretraining per number of real images)."""
    st = cfg.study
    runs: list[RunSpec] = []
    for repeat in range(st.repeats):
        for det in cfg.detectors:
            pre = PretrainSpec(det, repeat, fit_n=fitted_to(cfg, st.real_size))
            if st.kind == "data_efficiency":
                for n in st.real_sizes:
                    fit = PretrainSpec(det, repeat, fit_n=fitted_to(cfg, n))
                    if n == 0:
                        runs.append(RunSpec(st.kind, det, repeat, "pretrain_only", 0, "pretrain_only", fit))
                        continue
                    runs.append(RunSpec(st.kind, det, repeat, "no_pretraining", n, "finetune"))
                    runs.append(RunSpec(st.kind, det, repeat, "pretrained", n, "finetune", fit))
            elif st.kind in VARIANT_STUDIES:
                n = st.real_size
                runs.append(RunSpec(st.kind, det, repeat, "no_pretraining", n, "finetune"))
                for name in st.variants:
                    runs.append(RunSpec(st.kind, det, repeat, name, n, "finetune",
                                        PretrainSpec(det, repeat, synthesis=name, fit_n=fitted_to(cfg, n, name))))
            elif st.kind == "mixed":
                n = st.real_size
                runs.append(RunSpec(st.kind, det, repeat, "pretrain+finetune", n, "finetune", pre))
                for m in st.pool_multipliers:
                    pool = m * n if n > 0 else m * 100
                    runs.append(RunSpec(st.kind, det, repeat, f"mixed_pool{pool}", n, "mixed", pool=pool))
                if st.include_stream:
                    runs.append(RunSpec(st.kind, det, repeat, "mixed_stream", n, "mixed", pool=None))
            elif st.kind == "segmentation":
                n = st.real_size
                runs.append(RunSpec(st.kind, det, repeat, "no_pretraining", n, "finetune"))
                runs.append(RunSpec(st.kind, det, repeat, "naive_pasting", n, "finetune",
                                    PretrainSpec(det, repeat, segmenter="none", fit_n=pre.fit_n)))
                runs.append(RunSpec(st.kind, det, repeat, f"segmented_{cfg.segmenter.name}", n, "finetune", pre))
                for name in st.segmenters:  # same seed and budget, another segmenter's stream
                    if name not in (cfg.segmenter.name, "none"):
                        runs.append(RunSpec(st.kind, det, repeat, f"segmented_{name}", n, "finetune",
                                            PretrainSpec(det, repeat, segmenter=name, fit_n=pre.fit_n)))
            elif st.kind == "objects":
                n = st.real_size
                runs.append(RunSpec(st.kind, det, repeat, "real_objects", n, "finetune", pre))
                runs.append(RunSpec(st.kind, det, repeat, "generated_objects", n, "finetune",
                                    PretrainSpec(det, repeat, objects="generated", fit_n=pre.fit_n)))
            else:  # pragma: no cover - Literal type guards this
                raise ValueError(f"unknown study kind {st.kind!r}")
    return runs
