"""Batch samplers for multi-label data."""

from .label_aware import LabelAwareBatch, LabelAwareBatchSampler

__all__ = ('LabelAwareBatch', 'LabelAwareBatchSampler')
