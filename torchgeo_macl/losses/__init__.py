"""Contrastive losses for multi-label retrieval.

Every loss is an :class:`torch.nn.Module` called as ``loss(features, labels)`` with
``features`` ``[B, V, D]`` (``V`` views of ``B`` images, not normalised) and multi-hot
``labels`` ``[B, C]``, returning a scalar. Label frequencies of the training split
are given as ``label_frequencies=...`` or with ``set_label_frequencies(...)``.

A loss lives in a module of its own and registers itself under a name with
:func:`register_loss`; :data:`LOSSES` and :func:`get_loss` read that registry. The
supervised losses subclass :class:`WeightedSupConLoss` and only state their pair
weights (:class:`PairTerms`).
"""

from .base import (
    ContrastiveBatch,
    ContrastiveLossBase,
    check_label_frequencies,
    check_temperature,
)
from .distributed import gather_with_grad
from .jaccard_supcon import JaccardSupConLoss
from .macl import MACLLoss
from .mulsupcon import MulSupConLoss
from .ntxent import NTXentLoss
from .registry import LOSSES, get_loss, register_loss
from .supcon import SupConLoss
from .weighted_supcon import PairTerms, WeightedSupConLoss

__all__ = (
    'LOSSES',
    'ContrastiveBatch',
    'ContrastiveLossBase',
    'JaccardSupConLoss',
    'MACLLoss',
    'MulSupConLoss',
    'NTXentLoss',
    'PairTerms',
    'SupConLoss',
    'WeightedSupConLoss',
    'check_label_frequencies',
    'check_temperature',
    'gather_with_grad',
    'get_loss',
    'register_loss',
)
