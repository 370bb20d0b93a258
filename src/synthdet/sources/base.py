"""The object-source interface shared by folders of real images and generative models.

The synthesis stream only ever calls :meth:`ObjectSource.draw` with a generator it owns, so a
source is free to read from disk, decode from a cache, or run a GAN, as long as the result is a
pure function of the generator's state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Protocol, runtime_checkable

import numpy as np


@dataclass
class ObjectSample:
    """One object instance to paste.

    ``image``: uint8 RGB ``HxWx3``; ``mask``: float32 ``HxW`` soft foreground in [0, 1], or
    ``None`` for an object that was not segmented (segmenter ``none``): the stream then pastes the
    whole augmented frame opaquely and labels the whole placed box (the paper's naive pasting);
    ``label``: 1-based class id; ``key``: where it came from (file path or ``generator:seed``),
    for debugging and counting.
    """

    image: np.ndarray
    mask: np.ndarray | None
    label: int
    key: str = ""


@runtime_checkable
class ObjectSource(Protocol):
    """Anything that yields object instances for the synthesis stream."""

    class_names: list[str]  # label k (1-based) is class_names[k - 1]

    def draw(self, rng: np.random.Generator) -> ObjectSample:
        """Return one object instance chosen/generated with ``rng`` only."""
        ...


class CachedSource:
    """Per-process state shared by the file-backed sources: a bounded LRU ``_cache`` of decoded
    items (``cache_items`` entries, 0 = off), the ``_bad`` files seen and ``stats`` counters.
    None of it is pickled, so DataLoader workers start empty and memory stays bounded.
    Subclasses set ``cache_items`` and call :meth:`_init_state` (extending it for their ``stats``).
    """

    cache_items: int
    _PER_PROCESS = ("_cache", "_bad", "stats")

    def _init_state(self) -> None:
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._bad: dict[Hashable, str] = {}
        self.stats: dict[str, int] = {"loaded": 0, "bad_files": 0}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in self._PER_PROCESS:
            state.pop(k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def _cache_get(self, key: Hashable) -> Any:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def _cache_put(self, key: Hashable, value: Any) -> None:
        if self.cache_items:
            self._cache[key] = value
            while len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
