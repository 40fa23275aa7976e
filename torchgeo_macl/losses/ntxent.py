"""Self-supervised NT-Xent (SimCLR) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ContrastiveBatch, ContrastiveLossBase
from .registry import register_loss
from .utils import masked_logsumexp

__all__ = ('NTXentLoss',)


@register_loss('ntxent')
class NTXentLoss(ContrastiveLossBase):
    r"""Normalised temperature-scaled cross entropy (NT-Xent) of SimCLR.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (https://arxiv.org/abs/2002.05709). Labels are
    ignored (they are only validated): the positives of a view are the other views
    of the same image, the negatives every view of every other image. Each positive
    pair ``(i, p)`` is a term

    .. math::

        \ell_{ip} = -\log \frac{\exp(s_{ip}/\tau)}
            {\exp(s_{ip}/\tau) + \sum_{n \notin \mathrm{img}(i)} \exp(s_{in}/\tau)}

    and the loss is the mean over all ``N (V - 1)`` ordered positive pairs (zero
    when ``V = 1``). For ``V = 2`` this is SimCLR's loss; for any ``V`` it equals
    pytorch-metric-learning's ``NTXentLoss`` with the image index as label.

    It takes the arguments of :class:`~torchgeo_macl.losses.ContrastiveLossBase`
    (``temperature`` :math:`\tau`, default 0.1). Call it as ``loss(features [B, V,
    D], labels [B, C])``.
    """

    uses_labels = False

    def _loss_terms(self, batch: ContrastiveBatch) -> tuple[Tensor, Tensor]:
        b, views, _ = batch.z.shape
        inv_temp = 1 / self.temperature
        negatives = masked_logsumexp(batch, inv_temp, exclude_own_image=True)
        positives = torch.bmm(batch.z * inv_temp, batch.z.transpose(1, 2))
        # -log(e^p / (e^p + e^n)) = softplus(n - p)
        pair = F.softplus(negatives[:, :, None] - positives)
        off_diagonal = ~torch.eye(views, dtype=torch.bool, device=pair.device)
        total = torch.where(off_diagonal, pair, 0.0).sum()
        return total, torch.full((), b * views * (views - 1), device=pair.device)
