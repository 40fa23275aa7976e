"""Transforms for contrastive retrieval training."""

from .views import ContrastiveViews, labels_from_masks

__all__ = ('ContrastiveViews', 'labels_from_masks')
