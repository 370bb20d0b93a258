"""The periodic checkpoint / time-limit / history helper shared by fit_gan and fit_redo."""

from __future__ import annotations

import json

import pytest
import torch

from synthdet.utils.periodic import Periodic, read_state


def test_history_windows_and_checkpoint_period(tmp_path):
    run = Periodic(tmp_path, checkpoint_every=5, log_every=2)
    rows, saves = [], []
    for step in range(1, 8):
        run.add({"loss": float(step)})
        last = step == 7
        row = run.end_step(step, last)
        rows.append(row["step"] if row else None)
        if run.checkpoint_due(step, last):
            saves.append(step)
    # a row every 2 steps, at the checkpoint (5) and at the last step (7): means over each window
    assert rows == [None, 2, None, 4, 5, 6, 7] and saves == [5, 7]
    assert [r["loss"] for r in run.history] == [1.5, 3.5, 5.0, 6.0, 7.0]
    assert run.end_step(9, extra_key=1)["extra_key"] == 1  # extra values force a row
    assert run.note(9, event="restart")["event"] == "restart"
    with pytest.raises(ValueError):
        Periodic(tmp_path, checkpoint_every=0)


def test_time_limit():
    assert not Periodic(".", 1).out_of_time()
    assert Periodic(".", 1, max_seconds=0.0).out_of_time()
    assert not Periodic(".", 1, max_seconds=3600.0).out_of_time()


def test_save_resume_round_trip(tmp_path):
    run = Periodic(tmp_path, checkpoint_every=1)
    run.add({"loss": 2.0})
    run.end_step(1)
    path = run.save(tmp_path / "ck.pt", {"format": "x", "step": 1, "w": torch.ones(2)})
    assert json.loads((tmp_path / "history.json").read_text()) == run.history
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file and renamed
    state = read_state(path, "x", "test")
    assert torch.equal(state["w"], torch.ones(2)) and state["history"] == run.history
    again = Periodic(tmp_path, checkpoint_every=1)
    assert again.resume(state) == 1 and again.history == run.history
    assert again.elapsed() >= state["seconds"]  # time of the earlier call counts
    with pytest.raises(ValueError, match="not a synthdet other checkpoint"):
        read_state(path, "y", "other")
    with pytest.raises(FileNotFoundError):
        read_state(tmp_path / "missing.pt", "x", "test")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.pt"):
        read_state(tmp_path / "bad.pt", "x", "test")
