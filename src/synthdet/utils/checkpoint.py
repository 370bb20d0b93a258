"""Checkpoint files: one dict of tensors and plain Python types, written atomically so a killed run
never leaves a half-written file, and read with ``torch.load(weights_only=True)``, so loading one
can never run code. Files that need more (pickled objects from elsewhere) are refused unless the
caller opts in with ``trust=True`` (CLI: ``--trust-checkpoint``).

Shared by every stage that reads or writes weights (detectors, ReDO, co-segmentation, the GAN);
the trainer's own state (RNG states) is in :mod:`synthdet.training.checkpoint`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from .files import atomic_torch_save

CHECKPOINT_VERSION = 2


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write a checkpoint dict (keys: ``model``, ``detector`` (how to rebuild it),
    ``optimizer``, ``step``, ``rng``, ``config``, ``best_ap``, ``best_step``, ``curve``, ...)."""
    path = Path(path)
    atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)
    return path


def read_torch_file(path: str | Path, trust: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` unless ``trust``; every failure is a
    one-line ``ValueError`` naming the file (a file needing more than weights says how to opt in)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        if trust:
            raise ValueError(f"{path}: unreadable checkpoint ({e})") from None
        raise ValueError(f"{path}: refused: the file holds more than tensors and plain types, and unpickling it "
                         f"could run code ({_what_was_refused(e)}). Load it only if you trust its source: "
                         "--trust-checkpoint (Python: trust=True)") from None
    except Exception as e:  # noqa: BLE001 - any other problem is a bad file
        raise ValueError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None


def _what_was_refused(e: Exception) -> str:
    """The line of torch's weights-only refusal that names the object (e.g. ``GLOBAL posix.system``)."""
    import re

    m = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+|GLOBAL [\w.]+)", str(e))
    return m.group(1) if m else type(e).__name__


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU); a clear error if unusable."""
    state = read_torch_file(path, trust)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a synthdet checkpoint (no 'model' entry)")
    return state
