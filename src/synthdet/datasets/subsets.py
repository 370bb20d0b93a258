"""Nested, seed-fixed subsets of real images: every variant at a given N sees the same images."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def nested_subsets(records: Sequence[T], sizes: Sequence[int], seed: int) -> dict[int, list[T]]:
    """``{n: the first n records of one seeded permutation}`` for each ``n`` in ``sizes``.

    One permutation from ``np.random.default_rng(seed)`` serves every size, so a smaller subset
    is a prefix (hence a subset) of every larger one, and the same ``(records, seed)`` always
    gives the same images. ``n = -1`` or ``n >= len(records)`` means all records (still in
    permutation order); ``n = 0`` gives an empty list. Keys are the sizes as given.
    """
    order = np.random.default_rng(seed).permutation(len(records))
    out: dict[int, list[T]] = {}
    for n in sizes:
        n = int(n)
        if n < -1:
            raise ValueError(f"subset size must be >= 0 or -1 (= all), got {n}")
        k = len(records) if n == -1 else min(n, len(records))
        out[n] = [records[i] for i in order[:k]]
    return out
