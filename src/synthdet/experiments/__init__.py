"""Experiments: YAML study specs, a resumable runner, paper-style tables/plots, the demo."""

from .config import ExperimentConfig, load_experiment
from .plan import PretrainSpec, RunSpec, plan_runs
from .report import build_report
from .runner import ExperimentRunner, run_experiment

__all__ = ["ExperimentConfig", "ExperimentRunner", "PretrainSpec", "RunSpec", "build_report",
           "load_experiment", "plan_runs", "run_experiment"]
