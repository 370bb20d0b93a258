"""Thread pools for parallel work on a CPU: each worker thread runs PyTorch with its own
number of intra-op threads (usually one), so ``n`` independent pieces of work (the parts of a
training batch, the batches of an evaluation) run side by side on ``n`` cores instead of each
operation being split over all cores, which pays badly for a detector's many small operations
(docs/detectors.md, "Training speed": ``bench/train_step.py``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch


def cpu_pool(workers: int, threads_per_worker: int = 1, name: str = "synthdet") -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, each running PyTorch with ``threads_per_worker`` intra-op
    threads (set per thread: the calling thread keeps its own setting)."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=torch.set_num_threads,
                              initargs=(threads_per_worker,))


def cpu_workers(limit: int, threads: Optional[int] = None, cap: int = 8) -> tuple[int, int]:
    """``(workers, threads per worker)`` for ``limit`` independent pieces of work on the CPU:
    one worker per core (``threads``: the cores to use, default ``torch.get_num_threads()``),
    at most ``cap`` and at most ``limit``; the cores left over are shared out as intra-op
    threads. Measured on 2 cores only."""
    threads = threads or torch.get_num_threads()
    workers = max(1, min(threads, limit, cap))
    return workers, max(1, threads // workers)
