"""Registry names as argparse ``choices=`` without importing the registries (and torch) up front."""

from __future__ import annotations

import importlib
from typing import Any, Iterator


class LazyChoices:
    """A container of names read from ``"module:function"`` (returning an iterable of names) the
    first time argparse checks a value or prints the choices; ``synthdet --help`` never loads it.
    Use with an explicit ``metavar`` so the usage line does not list (and load) the names."""

    def __init__(self, spec: str, separator: str | None = None) -> None:
        self.spec = spec
        self.separator = separator  # if set, "a<sep>b" is a valid value when a and b are
        self._names: list[str] | None = None

    def _load(self) -> list[str]:
        if self._names is None:
            module, attr = self.spec.split(":")
            self._names = list(getattr(importlib.import_module(module), attr)())
        return self._names

    def __contains__(self, value: Any) -> bool:
        if self.separator and isinstance(value, str) and self.separator in value:
            return all(v.strip() in self._load() for v in value.split(self.separator))
        return value in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


DETECTORS = LazyChoices("synthdet.models:list_detectors")
SEGMENTERS = LazyChoices("synthdet.segmentation.registry:list_segmenters", separator=",")  # "a,b": fallback chain
DATASET_FORMATS = LazyChoices("synthdet.datasets.registry:list_formats")
