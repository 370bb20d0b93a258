"""Fixtures for the synthesis tests (helpers live in synth_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth_helpers import make_backgrounds, make_objects


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    objs = make_objects(tmp_path / "objects", {"red": (255, 0, 0), "green": (0, 255, 0)})
    bgs = make_backgrounds(tmp_path / "backgrounds")
    return objs, bgs
