"""models stage: FCOS / SSD / RetinaNet detector builders over torchvision, by registry name."""

from .detectors import (
    build_detector,
    builder_options,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    list_detectors,
    load_detector,
    load_weights,
)

__all__ = [
    "build_detector",
    "builder_options",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "list_detectors",
    "load_detector",
    "load_weights",
]
