"""Deployable exports of a trained detector: TorchScript (``torch.jit.trace``) and ONNX.

torchvision detectors take a list of variable-size images and return a list of dicts, which
neither format can carry, so what is exported is :class:`ExportWrapper`: a fixed-size batch in,
one padded tensor out, with the whole model inside (normalisation, backbone, head, score
threshold, top-k, NMS):

- input ``images``: ``float32 [B, 3, S, S]``, RGB in [0, 1], ``S`` = the checkpoint's
  ``image_size`` and ``B`` the batch size given at export (both fixed in the graph). Resize (stretch)
  each image to ``S x S`` and scale the boxes back by ``(W / S, H / S)``;
- output ``detections``: ``float32 [B, K, 6]``, rows ``x0, y0, x1, y1, score, label`` (XYXY pixels
  of the ``S x S`` input, label 1..K as a float), best first; rows with ``score == 0`` are padding.
  ``K`` is the model's ``detections_per_img`` (100); the score threshold is fixed at export.

For an ``S x S`` input the exported model gives the boxes of the PyTorch model (tested within
1e-3 px); for other shapes the PyTorch :class:`~synthdet.inference.Detector` keeps the aspect
ratio while the exported graph expects the stretched ``S x S`` image.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..utils.files import atomic_path
from .predictor import Detections

FORMATS = ("torchscript", "onnx")
ONNX_MISSING = "ONNX export needs the onnx package (and onnxruntime to run it): pip install 'synthdet[export]'"


class ExportWrapper(nn.Module):
    """``images [B, 3, S, S]`` in [0, 1] -> ``detections [B, K, 6]`` (see the module docstring)."""

    def __init__(self, model: nn.Module, max_detections: int) -> None:
        super().__init__()
        self.model = model
        self.max_detections = int(max_detections)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = []
        for out in self.model(list(images.unbind(0))):
            det = torch.cat([out["boxes"], out["scores"][:, None], out["labels"][:, None].to(out["boxes"].dtype)], 1)
            # pad with zero rows then cut to K: a fixed output shape whatever the number of detections
            rows.append(torch.cat([det, det.new_zeros(self.max_detections, 6)])[: self.max_detections])
        return torch.stack(rows)


def export_model(model: nn.Module, path: str | Path, fmt: str, batch_size: int = 1,
                 score_threshold: float | None = None) -> Path:
    """Write ``model`` (a synthdet detector with ``synthdet_meta``) as ``fmt`` to ``path`` (atomically).

    ``score_threshold``: the threshold fixed in the graph (None: the model's own, 0.01 by default).
    Returns ``path``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = int((getattr(model, "synthdet_meta", None) or {}).get("image_size") or model.transform.min_size[0])
    net = copy.deepcopy(model).cpu().eval()
    if score_threshold is not None:
        net.score_thresh = float(score_threshold)
    wrapper = ExportWrapper(net, int(net.detections_per_img)).eval()
    example = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # tracer warnings about sizes: the input size is fixed by design
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(wrapper, example, check_trace=False), str(tmp))
        else:
            _export_onnx(wrapper, example, tmp)
    return path


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise RuntimeError(ONNX_MISSING)
    torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["detections"])


def load_exported(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``images float32 [B, 3, S, S] -> detections [B, K, 6]`` running an exported file
    (``.onnx`` with onnxruntime, anything else as TorchScript)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError(f"{path}: running ONNX needs onnxruntime: pip install 'synthdet[export]'") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, np.float32)})[0]
    module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(np.asarray(x, np.float32))).numpy()

    return run


def split_detections(detections: np.ndarray) -> list[Detections]:
    """``[B, K, 6]`` exported output -> one ``{"boxes", "scores", "labels"}`` dict per image (padding dropped)."""
    out = []
    for rows in np.asarray(detections):
        rows = rows[rows[:, 4] > 0]
        out.append({"boxes": rows[:, :4].astype(np.float32), "scores": rows[:, 4].astype(np.float32),
                    "labels": np.rint(rows[:, 5]).astype(np.int64)})
    return out
