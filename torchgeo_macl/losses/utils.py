"""Label overlap and the log-sum-exp denominator, shared by several losses."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .base import ContrastiveBatch

__all__ = ('label_overlap', 'masked_logsumexp')

#: Names this module exported before they moved, and the module that holds them.
_MOVED = {
    'ContrastiveLossBase': 'base',
    'check_label_frequencies': 'base',
    'check_temperature': 'base',
    'gather_with_grad': 'distributed',
}


def label_overlap(y: Tensor, y_all: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
    """Shared-label counts and Jaccard indices of every local-global image pair.

    Args:
        y: Local labels ``[B, C]`` (0/1, floating point).
        y_all: Global labels ``[Bg, C]``.
        own: Own-image mask ``[B, Bg]``.

    Returns:
        ``overlap`` = ``y y_all^T`` and ``jaccard`` = overlap / union (0 when both
        label sets are empty), both ``[B, Bg]``; the Jaccard index of an image with
        itself is set to 1, also when it has no labels.
    """
    overlap = y @ y_all.T
    union = y.sum(1, keepdim=True) + y_all.sum(1)[None, :] - overlap
    jaccard = torch.where(union > 0, overlap / union.clamp_min(1), 0.0)
    return overlap, jaccard.masked_fill(own, 1.0)


def masked_logsumexp(
    batch: ContrastiveBatch,
    inv_temp: Tensor | float,
    *,
    exclude_own_image: bool = False,
) -> Tensor:
    """Log of the contrastive denominator of every local anchor.

    ``lse[b, v] = log sum_a exp(s_(bv),a * inv_temp[b, img(a)])`` over the global
    views ``a`` other than the anchor itself (``exclude_own_image=True`` also leaves
    out the other views of the anchor's image).

    Args:
        batch: Normalised batch.
        inv_temp: Inverse temperature, a scalar or per image pair ``[B, Bg]``.
        exclude_own_image: Leave out every view of the anchor's own image.

    Returns:
        Tensor ``[B, V]``.
    """
    b, v, d = batch.z.shape
    bg = batch.z_all.shape[0]
    anchors = batch.z.reshape(b * v, d)
    others = batch.z_all.reshape(bg * v, d)
    if isinstance(inv_temp, Tensor):
        logits = (anchors @ others.T).view(b, v, bg, v) * inv_temp.view(b, 1, bg, 1)
    else:
        # a scalar temperature is folded into the [N, D] operand: one N x N pass less
        logits = ((anchors * inv_temp) @ others.T).view(b, v, bg, v)
    # Excluded entries are set to the lowest finite value without recording the
    # write: their exponential is exactly 0, so no gradient reaches them anyway,
    # and this avoids an N x N copy in the backward pass of an indexed write.
    fill = torch.finfo(logits.dtype).min
    rows = torch.arange(b, device=logits.device)
    cols = rows + batch.offset
    with torch.no_grad():
        if exclude_own_image:
            logits[rows, :, cols, :] = fill
        else:
            views = torch.arange(v, device=logits.device)
            logits[rows[:, None], views[None, :], cols[:, None], views[None, :]] = fill
    flat = logits.view(b * v, bg * v)
    # log-sum-exp by hand: about half the time of torch.logsumexp on the CPU
    shift = flat.detach().amax(dim=1, keepdim=True)
    total = (flat - shift).exp_().sum(dim=1, keepdim=True)
    return (total.log() + shift).view(b, v)


def __getattr__(name: str) -> Any:
    """Deprecated access to the names that moved to :mod:`.base` and :mod:`.distributed`.

    Args:
        name: Attribute name.

    Returns:
        The moved object.

    Raises:
        AttributeError: If ``name`` is not a moved name.
    """
    if name not in _MOVED:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module = f'torchgeo_macl.losses.{_MOVED[name]}'
    warnings.warn(
        f'{__name__}.{name} is deprecated; import it from torchgeo_macl.losses '
        f'(it lives in {module})',
        DeprecationWarning,
        stacklevel=2,
    )
    from importlib import import_module

    return getattr(import_module(module), name)
