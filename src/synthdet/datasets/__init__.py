"""Real detection datasets: one record type, readers/writers for standard formats, subsets."""

from .records import DetectionDataset, DetectionRecord, collate_detection

__all__ = ["DetectionDataset", "DetectionRecord", "collate_detection"]
