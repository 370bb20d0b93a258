"""Generated object images as an :class:`~synthdet.sources.base.ObjectSource`.

A *generator* is anything that maps a latent batch ``z [B, latent_dim]`` (float32) to images
``[B, 3, H, W]`` in a known value range. :func:`load_generator` accepts:

- a :func:`~synthdet.sources.gan.fit_gan` checkpoint (``checkpoint.pt``) or its output folder:
  the EMA generator is used, output range [-1, 1];
- a TorchScript file (``.pt``/``.pth``/``.ts``, saved with ``torch.jit.save``): called as
  ``module(z)``; ``latent_dim`` is read from a module attribute ``latent_dim`` when present;
- a ``torch.export`` program (``.pt2``, saved with ``torch.export.save``; export it with a dynamic
  batch dimension): ``latent_dim`` is read from its input shape;
- a Python entry point ``"package.module:function"``: ``function()`` must return such a callable
  (e.g. a wrapper around a StyleGAN ``G(z, c)`` that fixes the class vector and truncation).

:class:`GeneratorObjectSource` turns one latent per :meth:`~GeneratorObjectSource.draw` into an
object image plus a segmentation mask, so generated objects take the same path through the
synthesis stream as real ones. Every draw is a pure function of the ``rng`` state it is given.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from .base import ObjectSample

logger = logging.getLogger(__name__)

_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".pt2")


class ImageGenerator:
    """A latent -> image callable with the metadata the object source needs.

    ``fn(z: FloatTensor[B, latent_dim]) -> FloatTensor[B, 3, H, W]`` with values in
    ``output_range`` (``(-1, 1)`` for tanh generators such as StyleGAN, ``(0, 1)`` otherwise);
    channels-last ``[B, H, W, 3]`` outputs are accepted too. When built by :func:`load_generator`
    the loaded module is dropped on pickling and reloaded from ``spec`` in the new process
    (TorchScript modules cannot be pickled into DataLoader workers).
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor] | None,
        latent_dim: int,
        output_range: tuple[float, float] = (-1.0, 1.0),
        device: str | torch.device = "cpu",
        spec: str | None = None,
    ):
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        lo, hi = (float(v) for v in output_range)
        if not hi > lo:
            raise ValueError(f"output_range must be (low, high) with high > low, got {output_range}")
        if fn is None and spec is None:
            raise ValueError("ImageGenerator needs a callable or a spec to load one from")
        self._fn = fn
        self.latent_dim = int(latent_dim)
        self.output_range = (lo, hi)
        self.device = torch.device(device)
        self.spec = spec

    @property
    def fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._fn is None:
            self._fn = _load_callable(str(self.spec), self.device)[0]
        return self._fn

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.spec is not None:
            state["_fn"] = None
        return state

    @torch.inference_mode()
    def generate(self, latents: np.ndarray) -> np.ndarray:
        """Latents float ``[B, latent_dim]`` -> uint8 RGB images ``[B, H, W, 3]``."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=self.device)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be [B, {self.latent_dim}], got {tuple(z.shape)}")
        out = self.fn(z)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"generator {self.spec or self._fn!r} returned {type(out).__name__}, expected a Tensor")
        if out.ndim == 4 and out.shape[1] not in (1, 3) and out.shape[-1] in (1, 3):
            out = out.permute(0, 3, 1, 2)
        if out.ndim != 4 or out.shape[0] != z.shape[0] or out.shape[1] not in (1, 3):
            raise ValueError(
                f"generator {self.spec or self._fn!r} returned shape {tuple(out.shape)}; "
                f"expected [{z.shape[0]}, 3, H, W]"
            )
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1)
        lo, hi = self.output_range
        x = ((out.float().cpu() - lo) / (hi - lo)).clamp(0, 1)
        return (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def __repr__(self) -> str:
        return f"ImageGenerator(spec={self.spec!r}, latent_dim={self.latent_dim}, output_range={self.output_range})"


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def _load_callable(spec: str, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """Resolve ``spec`` to ``(callable, metadata)``; metadata may hold latent_dim / output_range."""
    path = Path(spec)
    if path.is_dir():
        from .gan import CHECKPOINT_NAME

        if not (path / CHECKPOINT_NAME).is_file():
            raise FileNotFoundError(f"{path}: folder has no GAN {CHECKPOINT_NAME}")
        path = path / CHECKPOINT_NAME
    if path.is_file():
        if path.suffix.lower() == ".pt2":
            return _load_exported(path, device)
        if _is_torchscript(path):
            try:
                module = torch.jit.load(str(path), map_location=device)
            except Exception as e:
                raise ValueError(f"{path}: cannot load TorchScript generator ({e.__class__.__name__}: {e})") from None
            module.eval()
            meta: dict[str, Any] = {}
            if hasattr(module, "latent_dim"):
                meta["latent_dim"] = int(module.latent_dim)
            return module, meta
        from .gan import load_gan

        gen, cfg = load_gan(path, device=device)
        return gen, {"latent_dim": cfg.latent_dim, "output_range": (-1.0, 1.0)}
    if _ENTRY_POINT.match(spec):
        mod_name, _, attr = spec.partition(":")
        try:
            obj: Any = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"generator entry point {spec!r}: cannot import {mod_name!r} ({e})") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"generator entry point {spec!r}: {mod_name} has no attribute {attr!r}")
            obj = getattr(obj, part)
        fn = obj()
        if not callable(fn):
            raise ValueError(f"generator entry point {spec!r} returned {type(fn).__name__}, not a callable")
        if isinstance(fn, torch.nn.Module):
            fn = fn.to(device).eval()
        meta = {}
        if getattr(fn, "latent_dim", None) is not None:
            meta["latent_dim"] = int(fn.latent_dim)
        if getattr(fn, "output_range", None) is not None:
            meta["output_range"] = tuple(float(v) for v in fn.output_range)
        return fn, meta
    if Path(spec).suffix.lower() in _TORCHSCRIPT_SUFFIXES or "/" in spec:
        raise FileNotFoundError(f"generator file not found: {spec}")
    raise ValueError(
        f"generator spec {spec!r} is neither an existing file/folder nor a 'module:function' entry point"
    )


def _load_exported(path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """A ``torch.export`` program (``.pt2``); export it with a dynamic batch dimension."""
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise ValueError(f"{path}: cannot load torch.export generator ({e.__class__.__name__}: {e})") from None
    meta: dict[str, Any] = {}
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in user_inputs else None
        if val is not None and getattr(val, "ndim", 0) == 2:
            try:
                meta["latent_dim"] = int(val.shape[1])
            except TypeError:  # symbolic size
                pass
            break
    module = program.module()
    if device.type != "cpu":
        module = module.to(device)
    return module, meta


def load_generator(
    spec: str | Path,
    latent_dim: int | None = None,
    output_range: tuple[float, float] | None = None,
    device: str | torch.device = "cpu",
) -> ImageGenerator:
    """Load a generator from a GAN checkpoint/folder, a TorchScript or ``.pt2`` file, or ``"module:function"``.

    ``latent_dim`` / ``output_range`` override what the generator declares (our checkpoints and
    modules with ``latent_dim`` / ``output_range`` attributes); ``latent_dim`` is required when the
    generator declares none; ``output_range`` defaults to ``(-1, 1)``.
    """
    spec = str(spec)
    dev = torch.device(device)
    fn, meta = _load_callable(spec, dev)
    dim = latent_dim if latent_dim is not None else meta.get("latent_dim")
    if dim is None:
        raise ValueError(f"generator {spec!r} does not declare latent_dim: pass latent_dim= (--latent-dim)")
    rng = output_range if output_range is not None else meta.get("output_range", (-1.0, 1.0))
    gen = ImageGenerator(fn, int(dim), tuple(rng), device=dev, spec=spec)
    logger.info("loaded generator %r", gen)
    return gen


def latents_for(seed: int, indices: Sequence[int], latent_dim: int) -> np.ndarray:
    """Latents ``[len(indices), latent_dim]``; row ``k`` depends on ``(seed, indices[k])`` only."""
    return np.stack([np.random.default_rng([seed, int(i)]).standard_normal(latent_dim) for i in indices]).astype(
        np.float32
    )


def sample_images(gen: ImageGenerator, count: int, seed: int = 0, start: int = 0, batch: int = 64) -> list[np.ndarray]:
    """Images ``start .. start+count-1`` of ``gen`` for ``seed``: list of uint8 ``HxWx3``.

    Image ``i`` is a function of ``(seed, i)`` only (batching does not change which latent it gets).
    """
    out: list[np.ndarray] = []
    for b in range(start, start + count, batch):
        idx = range(b, min(b + batch, start + count))
        out.extend(gen.generate(latents_for(seed, idx, gen.latent_dim)))
    return out


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if max(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


class GeneratorObjectSource:
    """An endless :class:`~synthdet.sources.base.ObjectSource` of generated object images.

    ``generator``: an :class:`ImageGenerator`, a spec for :func:`load_generator`, or a bare callable
    (then ``latent_dim`` is required). ``segmenter``: an object with
    ``segment(list[uint8 HxWx3]) -> list[float32 HxW]`` (see :mod:`synthdet.segmentation`; build
    one from a registry name with ``synthdet.segmentation.get_segmenter``), or ``None`` (or
    ``"none"``) for no mask (``ObjectSample.mask is None``: naive pasting). ``size``: side the
    generated image is resized to before segmentation (the segmenter's input size, 128 for ReDO;
    ``None`` keeps the generator's resolution).
    ``batch``: latents per forward pass in :meth:`draw_many`.

    :meth:`draw` uses exactly one latent ``rng.standard_normal(latent_dim)``, so its result is a
    pure function of the ``rng`` state.
    """

    def __init__(
        self,
        generator: ImageGenerator | str | Path | Callable[[torch.Tensor], torch.Tensor],
        segmenter: Any = None,
        class_name: str = "object",
        latent_dim: int | None = None,
        batch: int = 16,
        size: int | None = 128,
        output_range: tuple[float, float] | None = None,
        device: str | torch.device = "cpu",
    ):
        if isinstance(generator, (str, Path)):
            generator = load_generator(generator, latent_dim=latent_dim, output_range=output_range, device=device)
        elif not isinstance(generator, ImageGenerator):
            if not callable(generator):
                raise TypeError(f"generator must be an ImageGenerator, a spec or a callable, got {type(generator).__name__}")
            dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
            if dim is None:
                raise ValueError("a bare generator callable needs latent_dim=")
            generator = ImageGenerator(generator, int(dim), output_range or (-1.0, 1.0), device=device)
        elif latent_dim is not None and latent_dim != generator.latent_dim:
            raise ValueError(f"latent_dim={latent_dim} disagrees with the generator's {generator.latent_dim}")
        if segmenter == "none":  # no segmentation: naive pasting, as make_stream's `none`
            segmenter = None
        elif isinstance(segmenter, str):  # sources sit below segmentation: names are resolved by the caller
            raise TypeError(f"segmenter {segmenter!r}: pass a segmenter object, e.g. "
                            f"synthdet.segmentation.get_segmenter({segmenter!r})")
        if segmenter is not None and not callable(getattr(segmenter, "segment", None)):
            raise TypeError(f"segmenter must have a segment(images) method, got {type(segmenter).__name__}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if size is not None and size < 8:
            raise ValueError(f"size must be >= 8 or None, got {size}")
        self.generator = generator
        self.segmenter = segmenter
        self.class_names = [class_name]
        self.latent_dim = generator.latent_dim
        self.batch = batch
        self.size = size

    def _samples(self, latents: np.ndarray) -> list[ObjectSample]:
        images = list(self.generator.generate(latents))
        if self.size is not None:
            images = [_resize(im, self.size) for im in images]
        images = [np.ascontiguousarray(im) for im in images]
        if self.segmenter is None:
            masks: list[np.ndarray | None] = [None] * len(images)
        else:
            masks = [np.asarray(m, dtype=np.float32) for m in self.segmenter.segment(images)]
            for im, m in zip(images, masks):
                if m.shape != im.shape[:2]:
                    raise ValueError(f"segmenter returned a {m.shape} mask for a {im.shape[:2]} image")
        out = []
        for z, im, m in zip(latents, images, masks):
            key = hashlib.blake2b(np.ascontiguousarray(z, np.float32).tobytes(), digest_size=8).hexdigest()
            mask = None if m is None else np.clip(m, 0.0, 1.0)
            out.append(ObjectSample(image=im, mask=mask, label=1, key=f"generator:{key}"))
        return out

    def draw(self, rng: np.random.Generator) -> ObjectSample:
        """One generated object: uint8 ``HxWx3`` image, float32 ``HxW`` mask (``None`` without a
        segmenter), label 1."""
        z = rng.standard_normal(self.latent_dim).astype(np.float32)
        return self._samples(z[None])[0]

    def draw_many(self, rng: np.random.Generator, count: int) -> list[ObjectSample]:
        """``count`` objects, generated and segmented ``batch`` at a time.

        Uses the same latents as ``count`` successive :meth:`draw` calls; pixels can differ by
        rounding because batched convolutions may sum in another order.
        """
        z = rng.standard_normal((count, self.latent_dim)).astype(np.float32)
        out: list[ObjectSample] = []
        for i in range(0, count, self.batch):
            out.extend(self._samples(z[i : i + self.batch]))
        return out

    def __repr__(self) -> str:
        seg = getattr(self.segmenter, "name", None) if self.segmenter is not None else "none"
        return f"GeneratorObjectSource({self.generator!r}, segmenter={seg}, class={self.class_names[0]!r})"


__all__ = ["ImageGenerator", "GeneratorObjectSource", "load_generator", "latents_for", "sample_images"]
