"""ReDO: unsupervised object segmentation by redrawing (Chen, Artieres, Denoyer, NeurIPS 2019).

A compact re-implementation (read from the paper and the authors' public PyTorch code); the
networks are in :mod:`.redo_nets`.

* A mask network splits an image into ``K`` soft regions.
* One ``RegionGenerator`` per region redraws that region from noise ``z_k`` (conditioned on the
  mask); region ``k`` of the image is replaced: ``x_k = G_k(m, z_k) * m_k + x * (1 - m_k)``.
* A spectral-norm discriminator judges each redrawn image (hinge loss); the mask network is
  trained adversarially through the recomposition: a region that does not match an object's
  extent makes the redrawn image look fake.
* An encoder must recover all ``z`` from the fully redrawn image (information conservation,
  weight ``w_info``), which rules out the degenerate "one region is everything" solution.

**The CPU recipe** (the defaults of :class:`RedoConfig`; what each part does, measured on the
birds benchmark, is in ``docs/segmentation.md``, section ReDO): the official networks learn nothing
in 30 CPU minutes (their IoU on the birds stayed below the centred ellipse's). The recipe keeps the
objective and changes what is slow or unstable on a CPU:

* the mask network reads **frozen EfficientNet-Lite0 ImageNet features** (``mask_net: lite0``,
  the offline weights ``cosegment`` uses, computed once per fit for every image and its mirror
  image) plus a small pixel branch for edges (:class:`~.redo_nets.FeatureMaskNet`);
* it is **warm-started** on a cheap label-free prior (``prior: cosegment``, the coarse
  co-segmentation map of :mod:`.redo_prior`) before any adversarial step;
* the redrawing runs at a **low working resolution** (32 px) with small generators,
  discriminator and encoder (16 channels) and 8 noise values per region; masks are up-sampled
  to each image's size;
* the generators, discriminator and encoder first train ``freeze_mask_steps`` steps with the
  mask network fixed (the information-conservation term is near chance before), and the
  information-conservation encoder learns at 1e-3;
* the adversarial pressure of a short run shrinks the object region (a badly redrawn object is
  easier to hide small), so the mask is **kept to its prior** during ReDO: a binary
  cross-entropy term and a floor on its area (``area_floor`` of the prior's area, per image);
* the official collapse restart, with a threshold for small objects (``collapse_area``).

Images are squashed (not cropped) to ``resolution`` x ``resolution`` (and to ``feature_size``
for the features) in training and inference, as the synthesis pipeline does with object images;
masks are resized back to each input size.

**Which region is the object** (no labels; :func:`.redo_prior.object_region`): with a prior, the
region that overlaps the prior's foreground more over the training images (the warm start makes
it region 0); without one, the region whose mask occupies the *least of the image border*
(classification images frame their object). It is computed at every checkpoint and stored in
it (``object_region``, ``orientation``); ``RedoSegmenter(region=k)`` overrides it.

This module holds the settings and the checkpoint format. Training (``fit_redo``, with the
collapse guard and the best-checkpoint rule) lives in :mod:`.redo_train`, the segmenter
(``RedoSegmenter``, which fits itself and caches the fit like ``cosegment``) in
:mod:`.redo_segmenter`; both build on this module (never the other way).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..utils.config import ConfigError
from ..utils.periodic import read_state
from .base import as_rgb
from .redo_prior import PRIORS

CHECKPOINT_FORMAT = "synthdet-redo"
CHECKPOINT_VERSION = 2
RESOLUTIONS = (32, 64, 128)
MASK_NETS = ("lite0", "pixels")
# Settings that fix the network shapes: a resumed run must use the same values.
_ARCH_FIELDS = ("resolution", "num_regions", "z_dim", "mask_net", "feature_size", "mask_channels",
                "mask_res_blocks", "pixel_channels", "gen_channels", "disc_channels", "enc_channels")


@dataclass(frozen=True)
class RedoConfig:
    """ReDO settings. The defaults are the CPU recipe (module docstring); the official GPU
    settings (pixel mask network, no prior, 128 px, 50k iterations) are
    ``configs/segmentation/redo_official.yaml``.
    """

    resolution: int = 32           # working resolution of the redrawing (32, 64 or 128)
    num_regions: int = 2           # K (2 for the lite0 mask network)
    z_dim: int = 8                 # noise per region
    mask_net: str = "lite0"        # lite0: FeatureMaskNet on frozen Lite0 features | pixels: the official MaskNet
    feature_size: int = 256        # side images are squashed to for the Lite0 features
    mask_channels: int = 64        # base width of the mask network
    mask_res_blocks: int = 3       # pixels mask network only
    pixel_channels: int = 16       # lite0 mask network: width of its pixel (edge) branch
    gen_channels: int = 16         # base width of each region generator
    disc_channels: int = 16
    enc_channels: int = 16         # information-conservation (z recovery) encoder
    temperature: float = 1.0       # mask softmax temperature
    batch_size: int = 16
    iterations: int = 1000         # 300 with the mask fixed, then 700 of ReDO (docs/segmentation.md, ReDO)
    lr_mask: float = 1e-4
    lr_gen: float = 1e-3
    lr_disc: float = 1e-4
    lr_enc: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay_mask: float = 1e-4
    w_info: float = 5.0            # information-conservation weight
    # Warm start (module docstring): the mask network first learns the prior's masks (warm_steps
    # steps of binary cross-entropy at lr_warm), then the generators, discriminator and encoder
    # train freeze_mask_steps steps with the mask network fixed, then all of ReDO.
    prior: str = "cosegment"       # cosegment | centre | none
    warm_steps: int = 300
    lr_warm: float = 1e-3
    freeze_mask_steps: int = 300
    # Kept to the prior during ReDO: prior_weight x BCE(object mask, prior) + area_weight x
    # (relu(area_floor x prior area - object area))^2 per image (area_floor 0: (object area -
    # prior area)^2).
    prior_weight: float = 1.0
    area_weight: float = 1000.0
    area_floor: float = 0.8
    init_gain: float = 0.8         # orthogonal init gain
    hflip: bool = True             # random horizontal flips of training images
    max_images: int | None = 2000  # use at most this many training images (evenly spaced)
    time_limit_minutes: float | None = 30.0  # the whole fit (loading and features included) stops after this
    checkpoint_every: int = 250
    log_every: int = 50            # history.json row: loss means over this many steps
    # Collapse guard (see synthdet.segmentation.redo_train): a log window whose smallest region wins
    # fewer than collapse_area of the pixels is collapsed; collapse_windows of them in a row restart
    # from the last good checkpoint with a new seed, at most max_restarts times.
    collapse_area: float = 0.02
    collapse_windows: int = 3
    max_restarts: int = 3
    preview_every: int = 500
    preview_images: int = 6
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"redo.resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.num_regions < 2:
            raise ConfigError("redo.num_regions must be >= 2")
        if self.mask_net not in MASK_NETS:
            raise ConfigError(f"redo.mask_net must be one of {MASK_NETS}, got {self.mask_net!r}")
        if self.mask_net == "lite0" and self.num_regions != 2:
            raise ConfigError("redo.mask_net lite0 splits an image into 2 regions (num_regions: 2)")
        if self.feature_size < 64 or self.feature_size % 32:
            raise ConfigError(f"redo.feature_size must be a multiple of 32 >= 64, got {self.feature_size}")
        if self.prior not in PRIORS:
            raise ConfigError(f"redo.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior == "cosegment" and self.mask_net != "lite0":
            raise ConfigError("redo.prior cosegment reads the Lite0 features: it needs mask_net: lite0")
        if min(self.mask_channels, self.gen_channels, self.disc_channels, self.enc_channels,
               self.pixel_channels) < 4:
            raise ConfigError("redo channel widths must be >= 4")
        if self.mask_channels % 4:
            raise ConfigError("redo.mask_channels must be a multiple of 4")
        if self.batch_size < 1 or self.iterations < 0 or min(self.warm_steps, self.freeze_mask_steps) < 0:
            raise ConfigError("redo.batch_size must be >= 1, iterations, warm_steps and freeze_mask_steps >= 0")
        if min(self.prior_weight, self.area_weight, self.area_floor) < 0:
            raise ConfigError("redo.prior_weight, area_weight and area_floor must be >= 0")
        if min(self.checkpoint_every, self.log_every, self.collapse_windows) < 1 or self.max_restarts < 0:
            raise ConfigError("redo.checkpoint_every, log_every and collapse_windows must be >= 1, "
                              "max_restarts >= 0")
        if not 0.0 <= self.collapse_area < 1.0 / self.num_regions:
            raise ConfigError(f"redo.collapse_area must be in [0, 1/num_regions), got {self.collapse_area}")
        if self.max_images is not None and self.max_images < 2:
            raise ConfigError("redo.max_images must be >= 2")


class RedoDivergedError(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is left in place."""


def to_square_tensor(images: Sequence[np.ndarray], resolution: int) -> torch.Tensor:
    """uint8 HxWx3 images -> float ``(B, 3, R, R)`` in [-1, 1], each squashed to R x R."""
    out = []
    for im in images:
        im = as_rgb(im)
        h, w = im.shape[:2]
        interp = cv2.INTER_AREA if min(h, w) > resolution else cv2.INTER_LINEAR
        out.append(cv2.resize(im, (resolution, resolution), interpolation=interp))
    arr = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return arr / 127.5 - 1.0


# --------------------------------------------------------------------------- checkpoints


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a :func:`~.redo_train.fit_redo` folder its ``best.pt`` (else its ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    return path


def load_redo_checkpoint(path: str | os.PathLike, resolution: int | None = None) -> dict[str, Any]:
    """Read and validate a ReDO checkpoint (a file, or a :func:`~.redo_train.fit_redo` folder: its ``best.pt``,
    else its ``last.pt``), weights-only.

    Raises ``ValueError`` with a clear message for a file that is not a synthdet ReDO
    checkpoint, one written by another format version, or one of another ``resolution``.
    """
    path = checkpoint_file(path)
    state = read_state(path, CHECKPOINT_FORMAT, "ReDO")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: ReDO checkpoint format version {state.get('version')}, but this synthdet "
                         f"reads version {CHECKPOINT_VERSION}; retrain with `synthdet segment fit`")
    if resolution is not None and state["resolution"] != resolution:
        raise ValueError(f"{path}: ReDO checkpoint is for {state['resolution']} px images, "
                         f"but {resolution} px was requested")
    return state


def redo_config_with(cfg: RedoConfig, **changes: Any) -> RedoConfig:
    """``cfg`` with some fields replaced (``None`` values ignored), validated."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
