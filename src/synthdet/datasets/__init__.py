"""Real detection datasets: one record type, readers/writers for standard formats, subsets.

Names are imported lazily (PEP 562) so that ``synthdet --help`` does not pay for torch.
"""

import importlib

_EXPORTS = {
    "DetectionDataset": ".records",
    "DetectionRecord": ".records",
    "collate_detection": ".records",
    "list_formats": ".registry",
    "read_dataset": ".registry",
    "nested_subsets": ".subsets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
