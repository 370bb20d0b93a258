"""evaluation stage: AP@0.5 (Pascal VOC all-point interpolation), detector evaluation, PR plots."""

from .ap import average_precision, box_iou, voc_ap
from .evaluate import evaluate_detector, plot_pr_curves, predict

__all__ = ["average_precision", "box_iou", "evaluate_detector", "plot_pr_curves", "predict", "voc_ap"]
