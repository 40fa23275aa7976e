"""Multi-label supervised contrastive loss with one anchor per label (MulSupCon)."""

from __future__ import annotations

import torch

from .base import ContrastiveBatch
from .registry import register_loss
from .weighted_supcon import PairTerms, WeightedSupConLoss

__all__ = ('MulSupConLoss',)


@register_loss('mulsupcon')
class MulSupConLoss(WeightedSupConLoss):
    r"""MulSupCon: every (view, label) pair is its own anchor.

    Zhang & Wu, "Multi-Label Supervised Contrastive Learning", AAAI 2024
    (https://ojs.aaai.org/index.php/AAAI/article/view/29619). Formula implemented,
    for the in-batch setting of this package (``N = B * V`` normalised views, cosine
    similarities ``s``, temperature :math:`\tau`):

    * the anchors are the pairs ``(i, c)`` of a view ``i`` and a label ``c`` that its
      image carries (:math:`y_{ic} = 1`);
    * the positives of ``(i, c)`` are the other views ``p != i`` whose image carries
      ``c`` (the other views of the anchor's own image included), ``P_c(i)``;
    * the denominator runs over all other views ``a != i``:

    .. math::

        \ell_{ic} = -\frac{1}{|P_c(i)|} \sum_{p \in P_c(i)}
            \log \frac{\exp(s_{ip}/\tau)}{\sum_{a \ne i} \exp(s_{ia}/\tau)}

    and the loss is the mean of :math:`\ell_{ic}` over all anchors ``(i, c)`` with
    :math:`|P_c(i)| \ge 1` (the authors' default, unweighted, reduction; an image
    with no labels contributes no anchor). Since the denominator does not depend on
    ``c``, the anchors of one view add up to a weighted SupCon anchor:
    :math:`\sum_c \ell_{ic} = n_i \ell_i` with :math:`n_i` the labels of ``i`` that
    have a positive and :math:`\ell_i` the loss of
    :class:`~torchgeo_macl.losses.WeightedSupConLoss` with the pair weights
    :math:`M = (y / |P|)\, y^\top` (a label-summed ``[B, B]`` matrix product, whose
    row sums over the positive views are :math:`n_i`) and the anchor weights
    :math:`n_i`. No per-label ``N x N`` (let alone ``C x N x N``) tensor is built.

    It takes the arguments of :class:`~torchgeo_macl.losses.ContrastiveLossBase`
    (``temperature`` :math:`\tau`, default 0.1, the authors' default). Call it as
    ``loss(features [B, V, D], labels [B, C])``.
    """

    def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
        # positives of an anchor carrying c: every view carrying c except itself
        n_pos = batch.views * batch.y_all.sum(0) - 1
        valid = (batch.y > 0) & (n_pos >= 1)[None, :]
        inv_count = torch.where(valid, 1 / n_pos.clamp_min(1), 0.0)
        weights = inv_count @ batch.y_all.T
        n_anchors = valid.sum(1).to(weights.dtype)
        return PairTerms(weights, 1 / self.temperature, n_anchors)
