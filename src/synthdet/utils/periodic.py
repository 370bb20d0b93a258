"""Step bookkeeping shared by the long unsupervised trainers (``fit_gan`` in ``sources/gan.py``,
``fit_redo`` in ``segmentation/redo_train.py``): a wall-clock budget, a history of loss means over log
windows, and periodic checkpoints written atomically and read back weights-only.

A trainer calls, per step: :meth:`Periodic.add` with the step's scalar losses, then
:meth:`Periodic.end_step`, which closes a history row when a log window ends, and
:meth:`Periodic.checkpoint_due` / :meth:`Periodic.save`. A resumed run restores ``seconds`` and
``history`` with :meth:`Periodic.resume`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .files import atomic_torch_save, atomic_write_json
from .checkpoint import read_torch_file


class Periodic:
    """Wall-clock budget, loss history and checkpoint period of one training call.

    ``checkpoint_every`` / ``log_every``: periods in steps (>= 1). ``max_seconds``: budget of this
    call (``None`` = no limit; time before a resume does not count against it). History rows are
    ``{"step", "seconds", <mean of each value added since the previous row>, **extra}``, closed every
    ``log_every`` steps, at every checkpoint and at the last step, and written to
    ``out_dir/history.json`` with every checkpoint. ``seconds`` is the total training wall time,
    including earlier calls of a resumed run.
    """

    def __init__(self, out_dir: str | Path, checkpoint_every: int, log_every: int = 50,
                 max_seconds: float | None = None) -> None:
        if checkpoint_every < 1 or log_every < 1:
            raise ValueError(f"checkpoint_every and log_every must be >= 1, got {checkpoint_every}, {log_every}")
        self.out_dir = Path(out_dir)
        self.checkpoint_every = int(checkpoint_every)
        self.log_every = int(log_every)
        self.max_seconds = max_seconds
        self.history: list[dict[str, Any]] = []
        self.seconds_before = 0.0
        self._t0 = time.perf_counter()
        self._sums: dict[str, float] = {}
        self._count = 0

    def resume(self, state: dict[str, Any]) -> int:
        """Take ``seconds`` and ``history`` from a checkpoint written by :meth:`save`; returns its step."""
        self.seconds_before = float(state.get("seconds", 0.0))
        self.history = list(state.get("history", []))
        return int(state["step"])

    def elapsed(self) -> float:
        """Training wall time in seconds, earlier calls of a resumed run included."""
        return self.seconds_before + time.perf_counter() - self._t0

    def out_of_time(self) -> bool:
        """Whether this call has spent its ``max_seconds``."""
        return self.max_seconds is not None and time.perf_counter() - self._t0 >= self.max_seconds

    def add(self, values: dict[str, float]) -> None:
        """Accumulate one step's scalar values into the current log window."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1

    def checkpoint_due(self, step: int, last: bool = False) -> bool:
        """Whether step ``step`` (steps done so far) ends with a checkpoint."""
        return step % self.checkpoint_every == 0 or last

    def end_step(self, step: int, last: bool = False, **extra: Any) -> dict[str, Any] | None:
        """Close step ``step``: when a log window ends (or a checkpoint is due, or ``extra`` is
        given) append and return the history row, else ``None``."""
        if not (step % self.log_every == 0 or self.checkpoint_due(step, last) or extra):
            return None
        row: dict[str, Any] = {"step": int(step), "seconds": round(self.elapsed(), 2)}
        row.update({k: v / self._count for k, v in self._sums.items()} if self._count else {})
        row.update(extra)
        self._sums, self._count = {}, 0
        self.history.append(row)
        return row

    def note(self, step: int, **event: Any) -> dict[str, Any]:
        """Append an event row (e.g. a restart) to the history; the open log window is kept."""
        row = {"step": int(step), "seconds": round(self.elapsed(), 2), **event}
        self.history.append(row)
        return row

    def save(self, path: str | Path, state: dict[str, Any], write_history: bool = True) -> Path:
        """Atomically write ``state`` plus ``seconds`` and ``history`` to ``path`` (and the history
        to ``out_dir/history.json``)."""
        path = Path(path)
        atomic_torch_save({**state, "seconds": self.elapsed(), "history": self.history}, path)
        if write_history:
            atomic_write_json(self.out_dir / "history.json", self.history)
        return path


def read_state(path: str | Path, fmt: str, what: str) -> dict[str, Any]:
    """A checkpoint dict whose ``format`` is ``fmt``, read weights-only on the CPU.

    Raises ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` naming the file
    for an unreadable one or one of another kind (``what``: e.g. ``"GAN"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    state = read_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ValueError(f"{path}: not a synthdet {what} checkpoint (format {fmt!r} expected)")
    return state
