r"""Supervised contrastive loss with weighted positives: the base of the SupCon family.

A loss of this family is told, for every pair of images ``(b, j)`` of a batch, how
much ``j`` counts as a positive of ``b`` (:attr:`PairTerms.weights`), at which
inverse temperature the pair is compared and, optionally, how much each image
counts as an anchor. From that, anchor ``i`` (a view of image ``b``) has the loss

.. math::

    \ell_i = -\sum_{p \in P(i)} \pi_{ip}
        \log \frac{\exp(s_{ip}/\tau_{ip})}{\sum_{a \ne i} \exp(s_{ia}/\tau_{ia})},
    \qquad \pi_{ip} = \frac{w_{b,\mathrm{img}(p)}}
        {\sum_{q \ne i} w_{b,\mathrm{img}(q)}}

with ``P(i)`` the views ``p != i`` whose image has a positive weight (the own
column weighs the other views of the anchor's image), and the loss is the mean of
:math:`\ell_i` over the anchors that have a positive (weighted by the anchor weights
when given; zero when no anchor has a positive).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import ContrastiveBatch, ContrastiveLossBase
from .utils import masked_logsumexp

__all__ = ('PairTerms', 'WeightedSupConLoss')


class PairTerms(NamedTuple):
    """What a weighted supervised contrastive loss makes of the image pairs."""

    #: Non-negative weight of every local-global image pair ``[B, Bg]``, 0 where
    #: the pair is not positive; the own column weighs the anchor's other views.
    weights: Tensor
    #: Inverse temperature, a scalar or per image pair ``[B, Bg]``.
    inv_temperature: Tensor | float
    #: Optional weight ``[B]`` of every local image as an anchor in the mean.
    anchor_weights: Tensor | None = None


def _positive_logit_sum(
    batch: ContrastiveBatch, weights: Tensor, inv_temp: Tensor | float
) -> Tensor:
    """Weighted sum of the positive logits of every local anchor.

    ``out[b, v] = sum_{a != (b, v)} weights[b, img(a)] * inv_temp[b, img(a)] * s_(bv),a``
    computed as ``z_bv . ((weights * inv_temp) @ sum_v' z_all[:, v'])`` minus the
    anchor's own term, i.e. with ``[B, Bg]`` and ``[B, D]`` products only.

    Args:
        batch: Normalised batch.
        weights: Weight of every image pair ``[B, Bg]`` (zero for non-positives).
        inv_temp: Inverse temperature, a scalar or per image pair ``[B, Bg]``.

    Returns:
        Tensor ``[B, V]``.
    """
    scaled = weights * inv_temp
    pooled = scaled @ batch.z_all.sum(dim=1)
    own = batch.own_column(scaled)
    z = batch.z
    return (z * pooled[:, None, :]).sum(-1) - own[:, None] * (z * z).sum(-1)


class WeightedSupConLoss(ContrastiveLossBase):
    """Base class of the supervised contrastive losses with weighted positives.

    Computes the loss of the module documentation from the :class:`PairTerms` that
    a subclass returns from :meth:`_pair_terms`, its only hook. Everything else
    (temperature, input checks, precision, gathering across ranks) comes from
    :class:`~torchgeo_macl.losses.ContrastiveLossBase`.
    """

    def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
        """Positive weights, inverse temperatures and anchor weights of a batch.

        Args:
            batch: Normalised local and global batch.

        Returns:
            The pair terms of the local-global image pairs.
        """
        raise NotImplementedError

    def _loss_terms(self, batch: ContrastiveBatch) -> tuple[Tensor, Tensor]:
        """Sum of the anchor losses and the number of anchors with a positive.

        Args:
            batch: Normalised local and global batch.

        Returns:
            The (anchor-weighted) sum of the anchor losses and the
            (anchor-weighted) number of anchors with a positive.
        """
        weights, inv_temp, anchor_weights = self._pair_terms(batch)
        views = batch.views
        total = weights.sum(1) * views - batch.own_column(weights)
        valid = total > 0
        pi = weights / torch.where(valid, total, 1.0)[:, None]
        lse = masked_logsumexp(batch, inv_temp)
        pos = _positive_logit_sum(batch, pi, inv_temp)
        per_anchor = torch.where(valid[:, None], lse - pos, 0.0)
        if anchor_weights is None:
            return per_anchor.sum(), valid.sum() * views
        kept = torch.where(valid, anchor_weights, 0.0)
        return (per_anchor * kept[:, None]).sum(), kept.sum() * views
