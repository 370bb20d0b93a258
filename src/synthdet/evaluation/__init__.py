"""evaluation stage: AP@0.5 (Pascal VOC all-point interpolation), detector evaluation, PR plots.

Exports are lazy (PEP 562) so that ``synthdet --help`` does not import torch.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "average_precision": ".ap",
    "box_iou": ".ap",
    "voc_ap": ".ap",
    "evaluate_detector": ".evaluate",
    "plot_pr_curves": ".evaluate",
    "predict": ".evaluate",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
