"""Settings of the synthesis engine: one frozen dataclass whose defaults are the paper's protocol.

Every knob of ``PROTOCOL.md`` ("Synthesis") is a field here. Ranges are ``(low, high)`` tuples;
an impossible setting (``low > high``, a probability outside [0, 1], ...) raises
:class:`~synthdet.utils.config.ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, Optional, Union

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
    # "uniform": count, side, aspect and position uniform in the ranges above (the paper);
    # "fitted": all four drawn from the smoothed real boxes (synthdet.synthesis.placement; the
    # stream needs a ``box_prior``), so num_objects / box_side / box_aspect are then unused.
    placement: Literal["uniform", "fitted"] = "uniform"
    # Which class an object is drawn from (multi-class sources): None or "balanced" = uniform over
    # classes, "proportional" = by image count, {class name: weight} = relative weights (unlisted 1).
    class_weights: Optional[Union[str, dict]] = None
    # Object image and mask are resized to this square before augmentation (ReDO's input: 128).
    object_size: int = 128
    # The label box is the tight box of (mask > binarize_threshold); paper: mask > 0.
    binarize_threshold: float = 0.0
    # Naive pasting (the paper's ablation: the whole augmented object frame pasted opaquely, labelled
    # with the whole placed box) is the segmenter `none`, not a setting here: objects without a mask.
    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "naive_paste": "was removed: naive pasting is the segmenter `none` (experiment YAML: "
                       "`segmenter: {name: none}`; CLI: `--segmenter none`); delete this key"}

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

    # Occlusion (with ``allow_overlap``): objects pasted later cover earlier ones; the label box is
    # the tight box of the visible mask; an object less than ``min_visibility`` visible (or not at
    # all) is dropped from the labels ("drop") or the covering object is moved ("retry": up to
    # ``max_tries`` new positions, then it is left out of the image).
    min_visibility: float = 0.25
    occluded: Literal["drop", "retry"] = "drop"
    # Blending of each pasted object: "alpha" (the paper), "gaussian" (mask edge feathered with a
    # sigma in ``blend_sigma`` px), "poisson" (cv2.seamlessClone), "motion" (object and mask
    # motion-blurred along a random angle over ``motion_length`` px); a list draws one per object.
    blend: str | tuple[str, ...] = "alpha"
    blend_sigma: tuple[float, float] = (1.0, 2.0)
    motion_length: tuple[int, int] = (3, 9)
    # Distractors: unlabelled objects from a folder of non-target images (segmented like the
    # objects), ``num_distractors`` per image, pasted in a random order among the targets.
    distractors: str | None = None
    num_distractors: tuple[int, int] = (1, 3)

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
        _check_blend_and_occlusion(self)
        if self.placement not in ("uniform", "fitted"):
            raise ConfigError(f"SynthConfig.placement: {self.placement!r} is not one of ['uniform', 'fitted']")
        _check_class_weights(self.class_weights)
        if round(self.box_side[1] * self.canvas_size) < 1:
            raise ConfigError(f"SynthConfig.box_side: max side {self.box_side[1]} x canvas "
                              f"{self.canvas_size} is below one pixel")

    def replace(self, **changes: object) -> "SynthConfig":
        """A copy with some fields changed (validated again)."""
        import dataclasses

        return dataclasses.replace(self, **changes)


BLEND_MODES = ("alpha", "gaussian", "poisson", "motion")


def _check_blend_and_occlusion(cfg: SynthConfig) -> None:
    modes = (cfg.blend,) if isinstance(cfg.blend, str) else tuple(cfg.blend)
    if not modes or any(m not in BLEND_MODES for m in modes):
        raise ConfigError(f"SynthConfig.blend: {cfg.blend!r} is not one of {list(BLEND_MODES)} or a list of them")
    object.__setattr__(cfg, "blend", modes[0] if isinstance(cfg.blend, str) else modes)
    _check_range(cfg, "blend_sigma", low=0.0, open_low=True)
    _check_range(cfg, "motion_length", low=1)
    _check_range(cfg, "num_distractors", low=0)
    if not 0.0 <= cfg.min_visibility <= 1.0:
        raise ConfigError(f"SynthConfig.min_visibility: {cfg.min_visibility} is outside [0, 1]")
    if cfg.occluded not in ("drop", "retry"):
        raise ConfigError(f"SynthConfig.occluded: {cfg.occluded!r} is not one of ['drop', 'retry']")


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


def _check_class_weights(spec: Any) -> None:
    if spec is None or spec in ("balanced", "proportional"):
        return
    if not isinstance(spec, dict):
        raise ConfigError(f"SynthConfig.class_weights: {spec!r} is not 'balanced', 'proportional' or a "
                          "mapping {class name: weight}")
    bad = {k: v for k, v in spec.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf")}
    if bad:
        raise ConfigError(f"SynthConfig.class_weights: weights must be finite numbers >= 0, got {bad}")


# The authors' per-class generation settings (PROTOCOL.md, "Synthesis"): the defaults of each
# class's generate_fake_data.py. "faces" equals SynthConfig's defaults (their QR-code script too).
PRESETS: dict[str, dict[str, Any]] = {
    "faces": {"num_objects": (1, 10), "box_side": (0.05, 0.8), "box_aspect": (0.5, 2.0)},
    "birds": {"num_objects": (1, 3), "box_side": (0.5, 0.9), "box_aspect": (0.5, 2.0)},
    "cars": {"num_objects": (1, 5), "box_side": (0.5, 1.0), "box_aspect": (0.333, 3.0)},
}


def resolve_preset(data: dict[str, Any] | None, where: str = "synthesis") -> dict[str, Any]:
    """``data`` with its ``preset`` key (one of :data:`PRESETS`) replaced by the preset's settings;
    keys given next to the preset win over it."""
    data = dict(data or {})
    name = data.pop("preset", None)
    if name is None:
        return data
    if name not in PRESETS:
        raise ConfigError(f"{where}.preset: {name!r} is not one of {sorted(PRESETS)}")
    return {**PRESETS[name], **data}


def synth_config(data: dict[str, Any] | None, overrides: dict[str, Any] | None = None,
                 where: str = "synthesis") -> SynthConfig:
    """A validated :class:`SynthConfig` from a YAML mapping (``preset:`` allowed) and, on top,
    ``overrides`` (a study variant; its own ``preset`` replaces the geometry of ``data``'s)."""
    from ..utils.config import from_dict

    merged = {**resolve_preset(data, where), **resolve_preset(overrides, where)}
    return from_dict(SynthConfig, merged, where=where)
