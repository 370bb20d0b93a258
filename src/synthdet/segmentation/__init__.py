"""Unsupervised segmentation: object images in, soft foreground masks out.

Registry (:func:`get_segmenter`): ``redo`` (ReDO mask network: ``checkpoint=``, or it fits itself
on the class's images and caches the fit),
``grabcut`` (OpenCV, centre-box prior, no training), ``none`` (whole frame = naive pasting),
``file`` (user masks, ``mask_dir=``), ``ellipse`` (centred-ellipse baseline for benchmarks) and
``cosegment`` (co-segmentation of a class folder from ImageNet features; fits itself first).
Quality gates and fallback chains (``"cosegment,grabcut"``, ``gates=``): :mod:`.gates`.
:class:`MaskCache` segments each object image once and keeps the masks on disk.
ReDO training: :func:`synthdet.segmentation.redo_train.fit_redo` (imported on use: it needs torch).
"""

from .base import Segmenter
from .cache import MaskCache
from .registry import get_segmenter, list_segmenters, register_segmenter

__all__ = ["Segmenter", "MaskCache", "get_segmenter", "list_segmenters", "register_segmenter"]
