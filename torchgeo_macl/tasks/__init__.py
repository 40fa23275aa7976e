"""TorchGeo tasks for multi-label retrieval."""

from .retrieval import RetrievalTask

__all__ = ('RetrievalTask',)
