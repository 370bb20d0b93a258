"""The detector registry: name -> builder, and building / reloading a detector by name.

Builders register themselves with :func:`_register` where they are defined
(:mod:`.detectors`: SSD, RetinaNet; :mod:`.fcos`: FCOS); importing :mod:`synthdet.models` imports
them all. Every builder returns a detector following the contract of :mod:`.detectors`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

DetectorBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, DetectorBuilder] = {}
# Per detector: builder options whose default changed, with the value that checkpoints written
# before the option existed were built with (read by load_detector when a checkpoint lacks it).
_LEGACY_OPTIONS: dict[str, dict[str, Any]] = {}


def _register(name: str, legacy: dict[str, Any] | None = None) -> Callable[[DetectorBuilder], DetectorBuilder]:
    def wrap(fn: DetectorBuilder) -> DetectorBuilder:
        _REGISTRY[name] = fn
        _LEGACY_OPTIONS[name] = dict(legacy or {})
        return fn

    return wrap


def list_detectors() -> list[str]:
    """Registered detector names."""
    return sorted(_REGISTRY)


def builder_options(name: str) -> list[str]:
    """The extra keyword options detector ``name``'s builder accepts (``fpn_channels``, ...)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; choose from {list_detectors()}")
    return sorted(set(inspect.signature(_REGISTRY[name]).parameters) - {"num_classes", "image_size", "imagenet"})


def build_detector(
    name: str,
    num_classes: int,
    image_size: int = 300,
    weights: str = "imagenet",
    head_init: str | None = None,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build a detector by registry name.

    ``num_classes`` counts object classes only (background is added inside). ``image_size``:
    the square side images are resized to inside the model. ``weights``: ``"imagenet"``
    (backbone ImageNet weights where obtainable, else a warning and random init), ``"none"``
    (random init), or a path to a synthdet checkpoint / state dict to load (read with
    ``weights_only=True``). ``head_init``: ``"xavier"`` (the paper's, the SSD and RetinaNet
    default) or ``"default"`` (torchvision's own head initialisation, the FCOS default); None: the
    detector's own default. ``seed``: the random initialisation is drawn from
    ``torch.manual_seed(seed)`` (the global RNG is left as it was); None: from the global RNG.
    ``options``: extra keyword arguments of the detector's builder (e.g. ``fpn_channels``).

    The model carries ``synthdet_meta``: every argument needed to rebuild exactly this network
    (including choices a builder made itself, such as the layout torchvision's ImageNet weights
    imply); checkpoints store it and :func:`load_detector` reads it.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; choose from {list_detectors()}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if head_init is not None and head_init not in ("xavier", "default"):
        raise ValueError(f"head_init must be 'xavier' or 'default', got {head_init!r}")
    checkpoint = None
    if weights not in ("imagenet", "none"):
        checkpoint = weights
        weights = "none"
    if head_init is not None:
        options["head_init"] = head_init
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = _REGISTRY[name](num_classes=num_classes, image_size=image_size, imagenet=weights == "imagenet",
                                **options)
    built = {**options, **getattr(model, "synthdet_build", {})}
    model.synthdet_meta = {"name": name, "num_classes": num_classes, "image_size": image_size,  # type: ignore[assignment]
                           "options": built}
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model


def load_detector(path: str | Path, trust: bool = False, image_size: int | None = None) -> nn.Module:
    """Rebuild the detector a synthdet checkpoint was trained as, with its weights.

    The checkpoint's ``detector`` entry (written by every training run) names the builder and
    all its arguments, so the network is exactly the saved one, whatever weights files this
    machine has. ``trust``: allow files that need full unpickling (can run code; only for
    checkpoints from a source you trust). ``image_size``: override the input side (the weights do
    not depend on it).
    """
    from ..utils.checkpoint import load_checkpoint

    ck = load_checkpoint(path, trust)
    meta = ck.get("detector") or (ck.get("config") or {}).get("detector")
    if not isinstance(meta, dict) or meta.get("name") not in _REGISTRY:
        raise ValueError(f"{path}: the checkpoint does not say which detector it holds "
                         f"({meta.get('name') if isinstance(meta, dict) else 'no detector entry'}); "
                         "build it with build_detector(..., weights=PATH) or pass --detector")
    options = {**_LEGACY_OPTIONS[meta["name"]], **dict(meta.get("options") or {})}
    model = build_detector(meta["name"], int(meta["num_classes"]), int(image_size or meta["image_size"]),
                           weights="none", **options)
    _load_state(model, ck["model"], Path(path))
    return model


def load_weights(model: nn.Module, path: str | Path, trust: bool = False) -> None:
    """Load model weights from a synthdet checkpoint (``{"model": state_dict, ...}``) or a state dict."""
    from ..utils.checkpoint import read_torch_file

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    state = read_torch_file(p, trust)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{p}: not a checkpoint or state dict")
    _load_state(model, state, p)


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit this detector: {str(e).splitlines()[0]}") from None
