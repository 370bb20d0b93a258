"""Settings of the synthesis engine: one frozen dataclass whose defaults are the paper's protocol.

Every knob of ``PROTOCOL.md`` ("Synthesis") is a field here. Ranges are ``(low, high)`` tuples;
an impossible setting (``low > high``, a probability outside [0, 1], ...) raises
:class:`~synthdet.utils.config.ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from ..utils.config import ConfigError


@dataclass(frozen=True)
class SynthConfig:
    """One artificial detection sample = a background plus 1..N augmented, blended objects.

    Geometry (canvas pixels): the canvas is ``canvas_size`` square. Each object gets a box whose
    side is ``uniform int in box_side x canvas_size`` and whose aspect ratio ``w / h`` is uniform
    in ``box_aspect`` (``w = side * sqrt(aspect)``, ``h = side / sqrt(aspect)``, so the area is
    ``side**2``); the position is uniform inside the canvas. Unless ``allow_overlap``, the boxes of
    one image must not intersect: ``max_tries`` tries per drawn count, then a new count is drawn.
    """

    canvas_size: int = 320
    # Objects per image: uniform integer in [low, high].
    num_objects: tuple[int, int] = (1, 10)
    # Box side as a fraction of the canvas side, and aspect ratio w/h.
    box_side: tuple[float, float] = (0.05, 0.8)
    box_aspect: tuple[float, float] = (0.5, 2.0)
    allow_overlap: bool = False
    max_tries: int = 10
    # Object image and mask are resized to this square before augmentation (ReDO's input: 128).
    object_size: int = 128
    # The label box is the tight box of (mask > binarize_threshold); paper: mask > 0.
    binarize_threshold: float = 0.0
    # Naive pasting (paper ablation): masks are ignored, the whole augmented object frame is pasted
    # opaquely into its box and the label is the whole placed box.
    naive_paste: bool = False

    # Photometric augmentation on the object only, applied in random order (imgaug semantics).
    photometric: bool = True
    blur_sigma: tuple[float, float] = (0.0, 0.5)
    blur_p: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.5)
    noise_sigma: tuple[float, float] = (0.0, 0.05 * 255)
    noise_per_channel_p: float = 0.5
    brightness: tuple[float, float] = (0.8, 1.2)
    brightness_per_channel_p: float = 0.2

    # Geometric augmentation, identical on object and mask, applied in random order.
    geometric: bool = True
    hflip_p: float = 0.5
    crop: tuple[float, float] = (0.0, 0.1)  # fraction cut from each side, then resized back
    scale: tuple[float, float] = (0.8, 1.2)  # per axis
    translate: tuple[float, float] = (-0.2, 0.2)  # fraction of the object side, per axis
    rotate: tuple[float, float] = (-45.0, 45.0)  # degrees
    shear: tuple[float, float] = (-8.0, 8.0)  # degrees
    # "affine": flip/crop/affine/resize-to-box composed into ONE OpenCV warp (fast, default);
    # "albumentations": the same operations as albumentations transforms (reference path).
    geometric_backend: Literal["affine", "albumentations"] = "affine"

    # Background: a random crop of ``background_crop`` x each side of the photo (1.0 = the whole
    # photo, the paper), resized to the canvas; optionally flipped.
    background_crop: tuple[float, float] = (1.0, 1.0)
    background_flip_p: float = 0.0

    def __post_init__(self) -> None:
        _check_range(self, "num_objects", low=0)
        _check_range(self, "box_side", low=0.0, high=1.0, open_low=True)
        _check_range(self, "box_aspect", low=0.0, open_low=True)
        _check_range(self, "blur_sigma", low=0.0)
        _check_range(self, "contrast", low=0.0)
        _check_range(self, "noise_sigma", low=0.0)
        _check_range(self, "brightness", low=0.0)
        _check_range(self, "crop", low=0.0, high=0.5, open_high=True)
        _check_range(self, "scale", low=0.0, open_low=True)
        _check_range(self, "translate", low=-1.0, high=1.0)
        _check_range(self, "rotate", low=-360.0, high=360.0)
        _check_range(self, "shear", low=-89.0, high=89.0)
        _check_range(self, "background_crop", low=0.0, high=1.0, open_low=True)
        for name in ("blur_p", "noise_per_channel_p", "brightness_per_channel_p", "hflip_p",
                     "background_flip_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"SynthConfig.{name}: probability {v} is outside [0, 1]")
        for name in ("canvas_size", "object_size", "max_tries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SynthConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.binarize_threshold < 1.0:
            raise ConfigError(f"SynthConfig.binarize_threshold: {self.binarize_threshold} is outside [0, 1)")
        if self.geometric_backend not in ("affine", "albumentations"):
            raise ConfigError(f"SynthConfig.geometric_backend: {self.geometric_backend!r} is not "
                              "one of ['affine', 'albumentations']")
        if round(self.box_side[1] * self.canvas_size) < 1:
            raise ConfigError(f"SynthConfig.box_side: max side {self.box_side[1]} x canvas "
                              f"{self.canvas_size} is below one pixel")

    def replace(self, **changes: object) -> "SynthConfig":
        """A copy with some fields changed (validated again)."""
        import dataclasses

        return dataclasses.replace(self, **changes)


def _check_range(cfg: SynthConfig, name: str, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False) -> None:
    value = getattr(cfg, name)
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ConfigError(f"SynthConfig.{name}: expected (low, high), got {value!r}") from None
    if lo > hi:
        raise ConfigError(f"SynthConfig.{name}: low {lo} > high {hi}")
    if low is not None and (lo < low or (open_low and lo <= low)):
        raise ConfigError(f"SynthConfig.{name}: low {lo} must be {'>' if open_low else '>='} {low}")
    if high is not None and (hi > high or (open_high and hi >= high)):
        raise ConfigError(f"SynthConfig.{name}: high {hi} must be {'<' if open_high else '<='} {high}")


def field_names() -> list[str]:
    """Names of all :class:`SynthConfig` fields (for CLI/YAML help)."""
    return [f.name for f in fields(SynthConfig)]
