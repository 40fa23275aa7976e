"""Deprecated alias of :mod:`torchgeo_macl.search.index` (removed in the next release)."""

from ..search.index import EmbeddingIndex

__all__ = ('EmbeddingIndex',)
