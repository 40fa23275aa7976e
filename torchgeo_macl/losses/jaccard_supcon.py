"""Jaccard-weighted supervised contrastive loss (MultiSupCon)."""

from __future__ import annotations

from .base import ContrastiveBatch, LabelFrequencies
from .registry import register_loss
from .utils import label_overlap
from .weighted_supcon import PairTerms, WeightedSupConLoss

__all__ = ('JaccardSupConLoss',)


@register_loss('jaccard_supcon')
class JaccardSupConLoss(WeightedSupConLoss):
    r"""Supervised contrastive loss whose positives are weighted by label overlap.

    The multi-label SupCon variant often called MultiSupCon: a pair of images is
    positive when its Jaccard index :math:`J_{ij} = |y_i \cap y_j| / |y_i \cup y_j|`
    reaches ``threshold`` (and is non-zero), and each positive's log-probability is
    weighted by :math:`J`:

    .. math::

        \ell_i = -\sum_{p \in P(i)} \frac{J_{ip}}{\sum_{q \in P(i)} J_{iq}}
            \log \frac{\exp(s_{ip}/\tau)}{\sum_{a \ne i} \exp(s_{ia}/\tau)}

    with ``P(i)`` = the other views of the anchor's image (``J = 1``) plus every view
    ``p`` of another image with :math:`J_{ip} > 0` and
    :math:`J_{ip} \ge` ``threshold``. The loss is the mean of :math:`\ell_i` over
    anchors with at least one positive. It equals :class:`~torchgeo_macl.losses.MACLLoss`
    with ``pair_weighting='mean', alpha=0, beta=1, gamma_j=gamma_rho=0, kappa=threshold``.

    Call it as ``loss(features [B, V, D], labels [B, C])``.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        threshold: float = 0.0,
        *,
        label_frequencies: LabelFrequencies | None = None,
        gather_distributed: bool = False,
        validate_args: bool = True,
    ) -> None:
        """Initialise a Jaccard-weighted SupCon loss.

        Args:
            temperature: Softmax temperature ``tau`` (> 0).
            threshold: Smallest Jaccard index of a positive pair, in ``[0, 1]``
                (0: every pair sharing a label is positive).
            label_frequencies: Optional label frequencies of the training split;
                only used to check the width of the labels.
            gather_distributed: Compute the loss on the batch gathered from every
                rank (see :mod:`torchgeo_macl.losses.base`).
            validate_args: Check the values of the inputs on every call (see
                :class:`~torchgeo_macl.losses.ContrastiveLossBase`).

        Raises:
            ValueError: If ``temperature`` or ``threshold`` is out of range.
        """
        super().__init__(
            temperature,
            label_frequencies=label_frequencies,
            gather_distributed=gather_distributed,
            validate_args=validate_args,
        )
        if not 0 <= threshold <= 1:
            raise ValueError(f'threshold must lie in [0, 1], got {threshold}')
        self.threshold = float(threshold)

    def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
        overlap, jaccard = label_overlap(batch.y, batch.y_all, batch.own)
        positive = ((overlap > 0) & (jaccard >= self.threshold)) | batch.own
        return PairTerms(jaccard * positive, 1 / self.temperature)
