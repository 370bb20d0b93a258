"""The object-source interface shared by folders of real images and generative models.

The synthesis stream only ever calls :meth:`ObjectSource.draw` with a generator it owns, so a
source is free to read from disk, decode from a cache, or run a GAN, as long as the result is a
pure function of the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class ObjectSample:
    """One object instance to paste.

    ``image``: uint8 RGB ``HxWx3``; ``mask``: float32 ``HxW`` soft foreground in [0, 1]
    (all ones = naive pasting); ``label``: 1-based class id; ``key``: where it came from
    (file path or ``generator:seed``), for debugging and counting.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    key: str = ""


@runtime_checkable
class ObjectSource(Protocol):
    """Anything that yields object instances for the synthesis stream."""

    class_names: list[str]  # label k (1-based) is class_names[k - 1]

    def draw(self, rng: np.random.Generator) -> ObjectSample:
        """Return one object instance chosen/generated with ``rng`` only."""
        ...
