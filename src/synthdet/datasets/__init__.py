"""Real detection datasets: one record type, readers/writers for standard formats, subsets."""

from .records import DetectionDataset, DetectionRecord, collate_detection
from .registry import list_formats, read_dataset
from .subsets import nested_subsets

__all__ = ["DetectionDataset", "DetectionRecord", "collate_detection", "list_formats", "nested_subsets",
           "read_dataset"]
