"""Retrieval metrics for multi-label image retrieval."""

from .functional import (
    average_cumulative_gain_at_k,
    mean_average_precision_at_k,
    ndcg_at_k,
    per_label_average_precision_at_k,
    precision_at_k,
    retrieval_metrics,
    weighted_average_precision_at_k,
)
from .metric import RetrievalMetrics

__all__ = (
    'RetrievalMetrics',
    'average_cumulative_gain_at_k',
    'mean_average_precision_at_k',
    'ndcg_at_k',
    'per_label_average_precision_at_k',
    'precision_at_k',
    'retrieval_metrics',
    'weighted_average_precision_at_k',
)
