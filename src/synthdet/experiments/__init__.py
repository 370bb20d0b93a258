"""Experiments: YAML study specs, a resumable runner, paper-style tables/plots, the demo, and
``train`` (the whole method on the user's own data in one call).

Exports are lazy (PEP 562) so that ``synthdet --help`` does not import torch.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "ExperimentConfig": ".config",
    "load_experiment": ".config",
    "PretrainSpec": ".plan",
    "RunSpec": ".plan",
    "plan_runs": ".plan",
    "build_report": ".report",
    "ExperimentRunner": ".runner",
    "run_experiment": ".runner",
    "TrainOutcome": ".train_run",
    "train": ".train_run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
