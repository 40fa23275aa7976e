"""Multi-label supervised contrastive loss with one anchor per label (MulSupCon)."""

from __future__ import annotations

import torch
from torch import Tensor

from .utils import (
    ContrastiveLossBase,
    LabelFrequencies,
    _Batch,
    _masked_logsumexp,
    _positive_logit_sum,
    check_temperature,
)

__all__ = ('MulSupConLoss',)


class MulSupConLoss(ContrastiveLossBase):
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
    ``c``, :math:`\sum_c \ell_{ic} = n_i \mathrm{LSE}_i - \sum_p M_{ip} s_{ip}/\tau`
    with :math:`M = (y / |P|)\, y^\top`, a label-summed ``[B, B]`` matrix product: no
    per-label ``N x N`` (let alone ``C x N x N``) tensor is built.

    Call it as ``loss(features [B, V, D], labels [B, C])``.
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
            temperature: Softmax temperature ``tau`` (> 0); 0.1 is the
                authors' default.
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
        views = batch.z.shape[1]
        # positives of an anchor carrying c: every view carrying c except itself
        n_pos = views * batch.y_all.sum(0) - 1
        valid = (batch.y > 0) & (n_pos >= 1)[None, :]
        inv_count = torch.where(valid, 1 / n_pos.clamp_min(1), 0.0)
        weights = inv_count @ batch.y_all.T
        n_anchors = valid.sum(1)
        inv_temp = 1 / self.temperature
        lse = _masked_logsumexp(batch, inv_temp)
        pos = _positive_logit_sum(batch, weights, inv_temp)
        per_view = torch.where(
            n_anchors[:, None] > 0, n_anchors[:, None] * lse - pos, 0.0
        )
        return per_view.sum(), n_anchors.sum() * views
