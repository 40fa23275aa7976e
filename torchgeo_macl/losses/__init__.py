"""Contrastive losses for multi-label retrieval.

Every loss is an :class:`torch.nn.Module` called as ``loss(features, labels)`` with
``features`` ``[B, V, D]`` (``V`` views of ``B`` images, not normalised) and multi-hot
``labels`` ``[B, C]``, returning a scalar. Label frequencies of the training split
are given as ``label_frequencies=...`` or with ``set_label_frequencies(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .jaccard_supcon import JaccardSupConLoss
from .macl import MACLLoss
from .mulsupcon import MulSupConLoss
from .ntxent import NTXentLoss
from .supcon import SupConLoss
from .utils import (
    ContrastiveLossBase,
    check_label_frequencies,
    check_temperature,
    gather_with_grad,
)

#: Losses by registry name.
LOSSES: Mapping[str, type[ContrastiveLossBase]] = MappingProxyType(
    {
        'jaccard_supcon': JaccardSupConLoss,
        'macl': MACLLoss,
        'mulsupcon': MulSupConLoss,
        'ntxent': NTXentLoss,
        'supcon': SupConLoss,
    }
)


def get_loss(name: str, **kwargs: Any) -> ContrastiveLossBase:
    """Build a loss by its registry name.

    Args:
        name: One of ``macl``, ``supcon``, ``jaccard_supcon``, ``mulsupcon``,
            ``ntxent`` (case-insensitive; ``-`` is read as ``_``).
        **kwargs: Keyword arguments of the loss class.

    Returns:
        The loss module.

    Raises:
        ValueError: If ``name`` is unknown.
    """
    key = name.strip().lower().replace('-', '_')
    if key not in LOSSES:
        raise ValueError(f'Unknown loss {name!r}; choose one of {sorted(LOSSES)}')
    return LOSSES[key](**kwargs)


__all__ = (
    'LOSSES',
    'ContrastiveLossBase',
    'JaccardSupConLoss',
    'MACLLoss',
    'MulSupConLoss',
    'NTXentLoss',
    'SupConLoss',
    'check_label_frequencies',
    'check_temperature',
    'gather_with_grad',
    'get_loss',
)
