"""Retrieval metrics for multi-label image retrieval."""

from . import functional
from .functional import *
from .metric import RetrievalMetrics

__all__ = ['RetrievalMetrics']
__all__ += functional.__all__
