"""Supervised contrastive loss for multi-label data (any shared label is positive)."""

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

__all__ = ('SupConLoss',)


class SupConLoss(ContrastiveLossBase):
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

    Call it as ``loss(features [B, V, D], labels [B, C])``; see
    :mod:`torchgeo_macl.losses.utils` for normalisation, precision and the
    distributed semantics.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        label_frequencies: LabelFrequencies | None = None,
        gather_distributed: bool = False,
    ) -> None:
        """Initialise the loss.

        Args:
            temperature: Softmax temperature ``tau`` (> 0).
            label_frequencies: Optional label frequencies of the training split;
                only used to check the width of the labels.
            gather_distributed: Compute the loss on the batch gathered from every
                rank (see :mod:`torchgeo_macl.losses.utils`).

        Raises:
            ValueError: If ``temperature`` is not positive.
        """
        super().__init__(
            label_frequencies=label_frequencies, gather_distributed=gather_distributed
        )
        self.temperature = check_temperature(temperature)

    def _loss_terms(self, batch: _Batch) -> tuple[Tensor, Tensor]:
        overlap, _ = _label_overlap(batch.y, batch.y_all, batch.own)
        positive = (overlap > 0) | batch.own
        return _weighted_supcon(batch, positive.to(batch.z.dtype), 1 / self.temperature)
