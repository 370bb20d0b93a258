"""inference stage: run a trained detector on images and videos (:class:`Detector`,
``synthdet predict``) and export it to TorchScript / ONNX (``synthdet export``).

Exports are lazy (PEP 562) so that ``synthdet --help`` does not import torch.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "Detector": ".predictor",
    "collect_sources": ".predictor",
    "iter_frames": ".predictor",
    "predict_to_folder": ".outputs",
    "export_model": ".export",
    "load_exported": ".export",
    "split_detections": ".export",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
