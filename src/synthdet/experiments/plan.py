"""Turn a study into a flat list of runs (pure, no I/O), so the runner can skip finished ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import ExperimentConfig

Mode = Literal["finetune", "pretrain_only", "mixed"]


@dataclass(frozen=True)
class PretrainSpec:
    """One pretraining on the artificial stream; shared by every run that starts from it."""

    detector: str
    repeat: int
    objects: Literal["real", "generated"] = "real"
    segmenter: str = "default"  # "default" = the experiment's segmenter, "none" = naive pasting

    @property
    def run_id(self) -> str:
        return f"pretrain__{self.detector}__{self.objects}__seg-{self.segmenter}__r{self.repeat}"


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


def plan_runs(cfg: ExperimentConfig) -> list[RunSpec]:
    """All runs of ``cfg``'s study, in execution order (pretraining shared where possible)."""
    st = cfg.study
    runs: list[RunSpec] = []
    for repeat in range(st.repeats):
        for det in cfg.detectors:
            pre = PretrainSpec(det, repeat)
            if st.kind == "data_efficiency":
                for n in st.real_sizes:
                    if n == 0:
                        runs.append(RunSpec(st.kind, det, repeat, "pretrain_only", 0, "pretrain_only", pre))
                        continue
                    runs.append(RunSpec(st.kind, det, repeat, "no_pretraining", n, "finetune"))
                    runs.append(RunSpec(st.kind, det, repeat, "pretrained", n, "finetune", pre))
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
                                    PretrainSpec(det, repeat, segmenter="none")))
                runs.append(RunSpec(st.kind, det, repeat, f"segmented_{cfg.segmenter.name}", n, "finetune", pre))
            elif st.kind == "objects":
                n = st.real_size
                runs.append(RunSpec(st.kind, det, repeat, "real_objects", n, "finetune", pre))
                runs.append(RunSpec(st.kind, det, repeat, "generated_objects", n, "finetune",
                                    PretrainSpec(det, repeat, objects="generated")))
            else:  # pragma: no cover - Literal type guards this
                raise ValueError(f"unknown study kind {st.kind!r}")
    return runs
