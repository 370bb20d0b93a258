"""``bench/gpu_check.py --dry-run``: the GPU proof script (issue 15) runs every step on the CPU, so
it cannot rot between lent GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def birds_root() -> Path:
    """The data root holding the built birds benchmark; skips when it cannot be built here."""
    from synthdet.datasets.birds import build_birds

    try:
        bench = build_birds(progress=False)
    except Exception as e:  # noqa: BLE001 - no benchmark (offline, no apt-get download): nothing to check
        pytest.skip(f"the birds benchmark cannot be built here: {e}")
    return bench.root.parent


def test_dry_run_passes_every_step(tmp_path: Path, birds_root: Path) -> None:
    out = tmp_path / "gpu_check"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--data-root", str(birds_root)],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.count(" | ") >= 2]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert [line.split(" ", 1)[0] for line in lines] == ["setup", "a", "a", "b", "b", "c", "d", "e", "f"], proc.stdout
    assert all(line.endswith(" | PASS") for line in lines), proc.stdout
    assert (out / "summary.md").is_file()
    assert len(list(out.glob("*/result.json"))) == len(lines)
