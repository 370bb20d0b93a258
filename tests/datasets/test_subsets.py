"""Nested subsets of real images: smaller within larger, fixed by the seed."""

from __future__ import annotations

import numpy as np
import pytest

from synthdet.datasets import DetectionRecord, nested_subsets


def _records(n: int) -> list[DetectionRecord]:
    return [DetectionRecord(f"img_{i:03d}.jpg", 32, 32, boxes=[[0, 0, 4, 4]], labels=[1], image_id=i)
            for i in range(n)]


def test_subsets_are_nested_and_fixed_by_seed() -> None:
    recs = _records(50)
    subs = nested_subsets(recs, [10, 25, 5, 50], seed=7)
    assert {n: len(s) for n, s in subs.items()} == {10: 10, 25: 25, 5: 5, 50: 50}
    ids = {n: [r.image_id for r in s] for n, s in subs.items()}
    for small, large in [(5, 10), (10, 25), (25, 50)]:
        assert ids[large][:small] == ids[small]  # prefix of one permutation
        assert set(ids[small]) < set(ids[large])
    assert len(set(ids[50])) == 50 and sorted(ids[50]) == list(range(50))
    # Same seed -> same images, whatever other sizes are asked for in the same call.
    again = nested_subsets(recs, [10], seed=7)
    assert [r.image_id for r in again[10]] == ids[10]
    other = nested_subsets(recs, [10], seed=8)
    assert [r.image_id for r in other[10]] != ids[10]
    assert ids[10] != list(range(10))  # shuffled, not the first ten


def test_subset_sizes_all_and_bounds() -> None:
    recs = _records(8)
    subs = nested_subsets(recs, [-1, 100, 0], seed=0)
    assert len(subs[-1]) == 8 and len(subs[100]) == 8 and subs[0] == []
    assert [r.image_id for r in subs[-1]] == [r.image_id for r in subs[100]]
    expected = np.random.default_rng(0).permutation(8)[:3].tolist()
    assert [r.image_id for r in nested_subsets(recs, [3], seed=0)[3]] == expected
    with pytest.raises(ValueError, match="-2"):
        nested_subsets(recs, [-2], seed=0)
    assert nested_subsets([], [5, -1], seed=1) == {5: [], -1: []}
