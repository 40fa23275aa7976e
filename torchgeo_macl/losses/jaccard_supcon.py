"""Jaccard-weighted supervised contrastive loss (MultiSupCon)."""

from __future__ import annotations

from torch import Tensor

from .utils import (
    ContrastiveLossBase,
    LabelFrequencies,
    _Batch,
    _label_overlap,
    _weighted_supcon,
    check_temperature,
)

__all__ = ('JaccardSupConLoss',)


class JaccardSupConLoss(ContrastiveLossBase):
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
    ) -> None:
        """Initialise the loss.

        Args:
            temperature: Softmax temperature ``tau`` (> 0).
            threshold: Smallest Jaccard index of a positive pair, in ``[0, 1]``
                (0: every pair sharing a label is positive).
            label_frequencies: Optional label frequencies of the training split;
                only used to check the width of the labels.
            gather_distributed: Compute the loss on the batch gathered from every
                rank (see :mod:`torchgeo_macl.losses.utils`).

        Raises:
            ValueError: If ``temperature`` or ``threshold`` is out of range.
        """
        super().__init__(
            label_frequencies=label_frequencies, gather_distributed=gather_distributed
        )
        if not 0 <= threshold <= 1:
            raise ValueError(f'threshold must lie in [0, 1], got {threshold}')
        self.temperature = check_temperature(temperature)
        self.threshold = float(threshold)

    def _loss_terms(self, batch: _Batch) -> tuple[Tensor, Tensor]:
        overlap, jaccard = _label_overlap(batch.y, batch.y_all, batch.own)
        positive = ((overlap > 0) & (jaccard >= self.threshold)) | batch.own
        weights = jaccard * positive
        return _weighted_supcon(batch, weights, 1 / self.temperature)
