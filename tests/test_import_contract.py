"""The import contract of ``pyproject.toml`` (``[tool.importlinter]``): the pipeline's layers
import only downwards, and no two sibling modules import each other. Checked by import-linter's
``lint-imports`` (the ``test`` extra installs it) on this checkout's ``src``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contract on the ``synthdet`` package under ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, env=env, cwd=src, timeout=300)


def test_the_import_contract_holds() -> None:
    proc = _lint(ROOT / "src")
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout + proc.stderr


def test_an_upward_import_and_a_circle_break_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "synthdet", src / "synthdet", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "synthdet" / "utils" / "_upward.py").write_text("from ..training import engine  # noqa: F401\n")
    (src / "synthdet" / "models" / "_loop_a.py").write_text("from . import _loop_b  # noqa: F401\n")
    (src / "synthdet" / "models" / "_loop_b.py").write_text("from . import _loop_a  # noqa: F401\n")
    proc = _lint(src)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "synthdet.utils._upward -> synthdet.training.engine" in out, out
    assert "No cycles are allowed in synthdet.models" in out, out
