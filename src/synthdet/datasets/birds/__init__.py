"""The offline "birds" benchmark: real bird cut-outs and real photos, built without root.

``build_birds()`` fetches the Debian packages / wheel photos (:mod:`.fetch`) and builds
classification images, real detection scenes (rendered by :mod:`.render`, not by the
synthesis pipeline) and synthesis backgrounds (:mod:`.build`); :mod:`.benchmark` opens a built one.
"""

from .benchmark import BirdsBenchmark, default_data_root, load_birds
from .build import BirdsConfig, build_birds, build_birds_from_sources
from .fetch import BirdsSources, FetchError, fetch_sources

__all__ = [
    "BirdsBenchmark",
    "BirdsConfig",
    "BirdsSources",
    "FetchError",
    "build_birds",
    "build_birds_from_sources",
    "default_data_root",
    "fetch_sources",
    "load_birds",
]
