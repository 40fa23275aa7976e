"""Deprecated alias of :mod:`torchgeo_macl.search` (removed in the next release)."""

import warnings

from ..search import EmbeddingIndex

warnings.warn(
    'torchgeo_macl.retrieval is deprecated; import from torchgeo_macl.search',
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ('EmbeddingIndex',)
