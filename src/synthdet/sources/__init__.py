"""sources stage: object instances (folders of images, generators) and background photos."""

from .backgrounds import BackgroundSource
from .base import ObjectSample, ObjectSource
from .objects import FolderObjectSource

__all__ = ["BackgroundSource", "FolderObjectSource", "ObjectSample", "ObjectSource"]
