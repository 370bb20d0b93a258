import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# Tests use tiny tensors: one thread avoids oversubscription, which on a shared 2-core machine
# made small training steps up to 60x slower with torch's default thread count.
torch.set_num_threads(1)

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script("errors")``: the module of ``bench/errors.py`` (bench scripts are not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
