"""The experiment runner of ``synthdet train`` (:mod:`.train_run`): the runner over data read by
:func:`~.train_inputs.read_inputs` instead of the config's paths."""

from __future__ import annotations

from pathlib import Path

from .config import ExperimentConfig
from .plan import RunSpec
from .runner import ExperimentRunner, ResolvedData


class TrainRunner(ExperimentRunner):
    """The experiment runner over data read by :func:`~.train_inputs.read_inputs` (not from the
    config's paths): the pretrained run on all training images first, then with a baseline the
    run without pretraining and the pretrained one on a fifth of the images."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | Path, data: ResolvedData, baseline: bool) -> None:
        super().__init__(cfg, out_dir)
        self.given = data
        runs = [r for r in self.runs if r.variant == "pretrained" or (baseline and r.n_real < 0)]
        self.runs = sorted(runs, key=lambda r: (r.n_real >= 0, r.variant != "pretrained"))

    @property
    def data(self) -> ResolvedData:  # type: ignore[override]
        return self.given

    @property
    def main_run(self) -> RunSpec:
        return self.runs[0]

    def finetune_iterations(self) -> int:
        """The main run's finetuning iterations (``min_epochs`` applied to its training images)."""
        return self._train_cfg("finetune").for_dataset(len(self.data.train)).iterations
