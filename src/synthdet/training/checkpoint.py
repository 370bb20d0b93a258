"""Training checkpoints: one dict (model, optimizer, step, RNG states, resolved config, ...).

The file I/O (atomic writes, weights-only reads, the ``trust`` opt-in) lives in
:mod:`synthdet.utils.checkpoint` and is re-exported here; this module adds the global RNG states a
resumed run restores."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..utils.checkpoint import CHECKPOINT_VERSION, load_checkpoint, read_torch_file, save_checkpoint

__all__ = ["CHECKPOINT_VERSION", "load_checkpoint", "read_torch_file", "rng_state", "save_checkpoint",
           "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU, CUDA, numpy, random) as tensors and plain types."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "random": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA only when present on both sides)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    version, py_state, gauss = state["random"]
    random.setstate((version, tuple(py_state), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
