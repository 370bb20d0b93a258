"""Training checkpoints: one dict (model, optimizer, step, RNG states, resolved config, ...),
written atomically so a killed run never leaves a half-written file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.files import atomic_torch_save

CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, CUDA, numpy, random), for exact resumption."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA only when present on both sides)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write a checkpoint dict (keys: ``model``, ``optimizer``, ``step``, ``rng``,
    ``config``, ``best_ap``, ``best_step``, ``curve``, ...)."""
    path = Path(path)
    atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU); a clear error if unusable.

    Checkpoints hold numpy RNG state, so they are unpickled with ``weights_only=False``:
    load only files you trust (your own runs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ValueError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a synthdet checkpoint (no 'model' entry)")
    return state
