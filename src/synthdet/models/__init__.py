"""models stage: FCOS / SSD / RetinaNet detector builders over torchvision, by registry name.

Importing the package registers every builder (:mod:`.detectors`, :mod:`.fcos`) in :mod:`.registry`.
"""

from ..backbones import efficientnet_lite0, efficientnet_lite0_weights_path
from . import detectors, fcos  # noqa: F401  (register their builders)
from .registry import build_detector, builder_options, list_detectors, load_detector, load_weights

__all__ = [
    "build_detector",
    "builder_options",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "list_detectors",
    "load_detector",
    "load_weights",
]
