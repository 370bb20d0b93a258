"""synthesis stage: augment, place, blend, label -> an endless stream of detection samples.

Exports are lazy (PEP 562) so that ``synthdet --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "SynthConfig": ".config",
    "SynthPool": ".stream",
    "SynthSample": ".stream",
    "SynthStream": ".stream",
    "make_loader": ".stream",
    "make_stream": ".stream",
    "export_dataset": ".export",
    "write_preview": ".export",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .config import SynthConfig
    from .export import export_dataset, write_preview
    from .stream import SynthPool, SynthSample, SynthStream, make_loader, make_stream


__getattr__ = lazy_exports(__name__, _EXPORTS)
