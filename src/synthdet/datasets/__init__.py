"""Real detection datasets: one record type, readers/writers for standard formats, subsets.

Names are imported lazily (PEP 562) so that ``synthdet --help`` does not pay for torch.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "DetectionDataset": ".records",
    "DetectionRecord": ".records",
    "collate_detection": ".records",
    "list_formats": ".registry",
    "read_dataset": ".registry",
    "nested_subsets": ".subsets",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
