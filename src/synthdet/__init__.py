"""synthdet: train object detectors with few box labels.

Pipeline (one sub-package per stage):

- ``sources``       object images (folders, generators) and background photos
- ``segmentation``  unsupervised foreground masks (ReDO, GrabCut, none, file) and the mask cache
- ``synthesis``     augment, paste, blend, boxes: the endless stream of artificial samples
- ``datasets``      real detection datasets (COCO, VOC, YOLO, FDDB, CUB, Cars, WIDER) and subsets
- ``models``        SSD / RetinaNet detector builders over torchvision
- ``training``      pretrain / finetune / mixed protocol, checkpoints
- ``evaluation``    AP@0.5 (Pascal VOC all-point interpolation)
- ``inference``     ``Detector`` (predict on images / videos), TorchScript / ONNX export
- ``experiments``   sweeps, tables, plots and the ``demo`` job

Box convention everywhere: ``XYXY`` float pixels with an *exclusive* end, i.e. a single
foreground pixel at column 5, row 7 has the box ``(5, 7, 6, 8)`` (the same extent as COCO's
``[x, y, w, h] = [5, 7, 1, 1]``). Labels are ``int64`` with 0 reserved for background.
"""

__version__ = "0.1.0"

from .utils.lazy import lazy_exports as _lazy_exports  # noqa: E402

# ``synthdet.Detector.from_checkpoint("best.pt").predict(images)``, imported on first use (no torch
# import for ``synthdet --help``)
# ``synthdet.train(objects=..., train=..., out=...)``: the whole method in one call (``synthdet train``)
__getattr__ = _lazy_exports(__name__, {"Detector": ".inference.predictor", "train": ".experiments.train_run"})
