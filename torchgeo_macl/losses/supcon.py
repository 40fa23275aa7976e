"""Supervised contrastive loss for multi-label data (any shared label is positive)."""

from __future__ import annotations

from .base import ContrastiveBatch
from .registry import register_loss
from .utils import label_overlap
from .weighted_supcon import PairTerms, WeightedSupConLoss

__all__ = ('SupConLoss',)


@register_loss('supcon')
class SupConLoss(WeightedSupConLoss):
    r"""Supervised contrastive loss (SupCon) with any-overlap positives.

    Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
    (https://arxiv.org/abs/2004.11362), the :math:`\mathcal{L}^{sup}_{out}` form,
    extended to multi-hot labels the usual way: two images are positives when they
    share at least one label. With ``z`` the ``N = B * V`` normalised views,
    ``s_ia = z_i . z_a`` and temperature :math:`\tau`, anchor ``i`` has the loss

    .. math::

        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip}/\tau)}{\sum_{a \ne i} \exp(s_{ia}/\tau)}

    where ``P(i)`` holds the other views of the anchor's image and every view of an
    image sharing a label with it. The loss is the mean of :math:`\ell_i` over the
    anchors with at least one positive (zero when there is none). With one-hot
    labels this equals pytorch-metric-learning's ``SupConLoss``.

    It takes the arguments of :class:`~torchgeo_macl.losses.ContrastiveLossBase`
    (``temperature`` :math:`\tau`, default 0.1). Call it as ``loss(features [B, V,
    D], labels [B, C])``; see :mod:`torchgeo_macl.losses.base` for normalisation,
    precision and the distributed semantics.
    """

    def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
        overlap, _ = label_overlap(batch.y, batch.y_all, batch.own)
        positive = (overlap > 0) | batch.own
        return PairTerms(positive.to(batch.z.dtype), 1 / self.temperature)
