"""Deprecated alias of :mod:`torchgeo_macl.metrics.metric`.

Removed in the next release.
"""

import warnings

from .metric import RetrievalMetrics

warnings.warn(
    'torchgeo_macl.metrics.retrieval is deprecated; import RetrievalMetrics from '
    'torchgeo_macl.metrics',
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ('RetrievalMetrics',)
