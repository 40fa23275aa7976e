"""Shared machinery of the contrastive losses.

Every loss of :mod:`torchgeo_macl.losses` is called as ``loss(features, labels)`` with
``features`` of shape ``[B, V, D]`` (``B`` images, ``V >= 1`` augmented views of each,
``D``-dimensional embeddings, not yet normalised) and ``labels`` of shape ``[B, C]``
(multi-hot). The ``N = B * V`` views are the anchors; the views of one image are
positives of each other. Embeddings are L2-normalised inside the loss, so every
similarity is a cosine similarity.

All numerics run in float32 (float64 when the features are float64), with autocast
disabled, so bf16/fp16 mixed precision cannot overflow the exponentials. Everything
that only depends on labels is computed per *image pair* (``B x B``), never per view
pair or per label; the only ``N x N`` tensors are the similarity logits and their
log-sum-exp. No ``N x N x C`` tensor is ever built.

**Distributed training.** With ``gather_distributed=True`` and an initialised
process group of ``R > 1`` ranks, the features and labels of every rank are gathered
with :func:`gather_with_grad` (an all-gather whose backward all-reduces the
gradients, so each rank's features receive the gradients of every rank's loss).
Each rank computes the loss of its own anchors against the global batch and
returns ``R * (sum of its anchor losses) / (global number of anchors)``. Hence

* the average over ranks of the returned values equals the loss of the
  concatenated global batch computed in one process, and
* the gradients averaged over ranks, which is what
  :class:`~torch.nn.parallel.DistributedDataParallel` does, equal the gradients of
  that single-process loss.

The number of anchors is summed over ranks with one scalar all-reduce. Ranks may
hold batches of different sizes (they are padded for the all-gather).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = (
    'ContrastiveLossBase',
    'check_label_frequencies',
    'check_temperature',
    'gather_with_grad',
)

#: Accepted types for label frequencies.
LabelFrequencies = Sequence[float] | Tensor


def check_label_frequencies(label_frequencies: LabelFrequencies) -> Tensor:
    """Validate label frequencies and return them as a float64 CPU tensor.

    Args:
        label_frequencies: Fraction of the training images that carry each label,
            length ``C``, every entry in ``(0, 1]``.

    Returns:
        The frequencies as a 1-D float64 tensor on the CPU.

    Raises:
        ValueError: If the frequencies are not a non-empty 1-D sequence of finite
            values in ``(0, 1]``.
    """
    if isinstance(label_frequencies, Tensor):
        freqs = label_frequencies.detach().to('cpu', torch.float64)
    else:
        freqs = torch.as_tensor(label_frequencies, dtype=torch.float64)
    if freqs.ndim != 1 or freqs.numel() == 0:
        raise ValueError(
            'label_frequencies must be a non-empty 1-D sequence (one entry per '
            f'label), got shape {tuple(freqs.shape)}'
        )
    bad = ~(torch.isfinite(freqs) & (freqs > 0) & (freqs <= 1))
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(
            'label_frequencies must lie in (0, 1] (a label that never occurs in the '
            f'training split has no usable frequency); entries {idx} are '
            f'{freqs[bad].tolist()}'
        )
    return freqs


def check_temperature(temperature: float) -> float:
    """Validate a softmax temperature.

    Args:
        temperature: The temperature.

    Returns:
        It, as a float.

    Raises:
        ValueError: If it is not a finite number > 0.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f'temperature must be finite and > 0, got {temperature}')
    return float(temperature)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of every rank."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, sizes: list[int]) -> Tensor:
        rank = dist.get_rank()
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded)
        ctx.rank = rank
        ctx.sizes = sizes
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)])

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        grad = grads[0].contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """Concatenate a tensor from every rank along dim 0, keeping gradients.

    The backward pass all-reduces (sums) the gradient of the gathered tensor and
    hands each rank the slice of its own input, so a rank's input receives the
    gradients that every rank's loss sends to it. Ranks may contribute different
    numbers of rows. Without an initialised process group (or with one rank) the
    tensor is returned unchanged.

    Args:
        tensor: Local tensor ``[n, ...]``; trailing dimensions must agree on all
            ranks.

    Returns:
        The concatenation over ranks (in rank order) and the row offset of this
        rank's rows in it.
    """
    if _world_size() == 1:
        return tensor, 0
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes_t = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    gathered = _GatherWithGrad.apply(tensor.contiguous(), sizes)
    assert isinstance(gathered, Tensor)
    return gathered, sum(sizes[: dist.get_rank()])


def _own_mask(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """Boolean ``[rows, cols]`` that is true at ``(b, offset + b)``."""
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    index = torch.arange(rows, device=device)
    mask[index, index + offset] = True
    return mask


class _Batch(NamedTuple):
    """Normalised embeddings and labels of the local and the global batch."""

    #: Local embeddings ``[B, V, D]``, unit norm, work dtype.
    z: Tensor
    #: Global embeddings ``[Bg, V, D]`` (all ranks; ``z`` itself without DDP).
    z_all: Tensor
    #: Local labels ``[B, C]`` as 0/1 in the work dtype.
    y: Tensor
    #: Global labels ``[Bg, C]``.
    y_all: Tensor
    #: Index of the first local image in the global batch.
    offset: int
    #: Number of ranks that contributed (1 without DDP).
    world: int

    @property
    def own(self) -> Tensor:
        """Boolean ``[B, Bg]``, true where the column is the row's own image."""
        return _own_mask(
            self.z.shape[0], self.z_all.shape[0], self.offset, self.z.device
        )

    def own_column(self, matrix: Tensor) -> Tensor:
        """Entries ``matrix[b, offset + b]`` of an image-pair matrix ``[B, Bg]``."""
        rows = torch.arange(matrix.shape[0], device=matrix.device)
        return matrix[rows, rows + self.offset]


def _masked_logsumexp(
    batch: _Batch, inv_temp: Tensor | float, *, exclude_own_image: bool = False
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


def _positive_logit_sum(
    batch: _Batch, weights: Tensor, inv_temp: Tensor | float
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


def _label_overlap(y: Tensor, y_all: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
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


def _weighted_supcon(
    batch: _Batch,
    weights: Tensor,
    inv_temp: Tensor | float,
    anchor_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sum and count of SupCon-style anchor losses with weighted positives.

    For anchor ``i`` of image ``b`` the positives are the other views ``p`` whose image
    has ``weights[b, img(p)] > 0`` (own column = the other views of ``b``), with
    ``pi_ip = weights / sum of the weights over all positive views`` and
    ``loss_i = -sum_p pi_ip log(exp(l_ip) / sum_{a != i} exp(l_ia))``,
    ``l_ia = s_ia * inv_temp``. Anchors without positives are skipped. With
    ``anchor_weights`` the loss of every view of image ``b`` is multiplied by
    ``anchor_weights[b]``, and so is its contribution to the count.

    Args:
        batch: Normalised batch.
        weights: Non-negative positive weights per image pair ``[B, Bg]``.
        inv_temp: Inverse temperature, a scalar or per image pair ``[B, Bg]``.
        anchor_weights: Optional positive weight of every local image ``[B]``.

    Returns:
        The (weighted) sum of the anchor losses and the (weighted) number of
        anchors with a positive.
    """
    views = batch.z.shape[1]
    total = weights.sum(1) * views - batch.own_column(weights)
    valid = total > 0
    pi = weights / torch.where(valid, total, 1.0)[:, None]
    lse = _masked_logsumexp(batch, inv_temp)
    pos = _positive_logit_sum(batch, pi, inv_temp)
    per_anchor = torch.where(valid[:, None], lse - pos, 0.0)
    if anchor_weights is None:
        return per_anchor.sum(), valid.sum() * views
    kept = torch.where(valid, anchor_weights, 0.0)
    return (per_anchor * kept[:, None]).sum(), kept.sum() * views


class ContrastiveLossBase(nn.Module):
    """Base class of the multi-label contrastive losses of this package.

    Handles input validation, normalisation, float32 computation under autocast,
    gathering across ranks and the final reduction (see the module documentation
    for the distributed semantics). Subclasses implement :meth:`_loss_terms`.
    """

    label_frequencies: Tensor | None

    def __init__(
        self,
        *,
        label_frequencies: LabelFrequencies | None = None,
        gather_distributed: bool = False,
    ) -> None:
        """Initialise the loss.

        Args:
            label_frequencies: Fraction of training images carrying each label
                (length ``C``, each in ``(0, 1]``); may also be given later with
                :meth:`set_label_frequencies`. When known, the width of the labels
                is checked against it.
            gather_distributed: Gather features and labels from every rank of an
                initialised process group before computing the loss, so that
                negatives and positives come from the global batch. Without an
                initialised process group the loss is computed locally.

        Raises:
            ValueError: If ``label_frequencies`` is invalid.
            RuntimeError: If ``gather_distributed`` is requested but
                :mod:`torch.distributed` is not available.
        """
        super().__init__()
        if gather_distributed and not dist.is_available():
            raise RuntimeError(
                'gather_distributed=True but torch.distributed is not available in '
                'this PyTorch build'
            )
        self.gather_distributed = bool(gather_distributed)
        self.register_buffer('label_frequencies', None, persistent=False)
        if label_frequencies is not None:
            self.set_label_frequencies(label_frequencies)

    def set_label_frequencies(self, label_frequencies: LabelFrequencies) -> None:
        """Set the label frequencies of the training split.

        Args:
            label_frequencies: Fraction of training images carrying each label,
                length ``C``, each in ``(0, 1]``.

        Raises:
            ValueError: If the frequencies are invalid.
        """
        freqs = check_label_frequencies(label_frequencies)
        device = (
            None if self.label_frequencies is None else self.label_frequencies.device
        )
        self.label_frequencies = freqs.to(device)

    @property
    def num_classes(self) -> int | None:
        """Number of labels ``C`` when the label frequencies are known, else None."""
        if self.label_frequencies is None:
            return None
        return int(self.label_frequencies.numel())

    def _check(self, features: Tensor, labels: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
            raise TypeError(
                f'{name} expects tensors, got features of type '
                f'{type(features).__name__} and labels of type {type(labels).__name__}'
            )
        if features.ndim != 3:
            raise ValueError(
                f'{name}: features must have shape [B, V, D] (images, views, '
                f'embedding dim), got shape {tuple(features.shape)}'
            )
        if not features.is_floating_point():
            raise TypeError(
                f'{name}: features must be floating point, got {features.dtype}'
            )
        if min(features.shape) < 1:
            raise ValueError(
                f'{name}: features must not be empty, got {tuple(features.shape)}'
            )
        if labels.ndim != 2:
            raise ValueError(
                f'{name}: labels must be multi-hot with shape [B, C], got shape '
                f'{tuple(labels.shape)}'
            )
        if labels.shape[0] != features.shape[0]:
            raise ValueError(
                f'{name}: features hold {features.shape[0]} images but labels hold '
                f'{labels.shape[0]}'
            )
        if labels.shape[1] < 1:
            raise ValueError(f'{name}: labels must have at least one column')
        c = self.num_classes
        if c is not None and labels.shape[1] != c:
            raise ValueError(
                f'{name}: labels have {labels.shape[1]} columns but the label '
                f'frequencies have {c} entries'
            )
        if labels.dtype != torch.bool and not bool(
            ((labels == 0) | (labels == 1)).all()
        ):
            raise ValueError(f'{name}: labels must be binary (0/1 multi-hot)')
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f'{name}: features contain NaN or infinite values')

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            features: Embeddings ``[B, V, D]`` of ``V`` views of ``B`` images, not
                normalised.
            labels: Multi-hot labels ``[B, C]`` (bool, integer or float 0/1).

        Returns:
            Scalar loss (float32, or float64 for float64 features). Zero (with a
            gradient graph) when no anchor has a positive.

        Raises:
            TypeError: If the inputs are not floating-point / tensor inputs.
            ValueError: If shapes, label values or features are invalid.
        """
        self._check(features, labels)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.to(dtype)
            # rescale first so that the norm neither overflows nor underflows; the
            # normalised vector and its gradient do not depend on the scale
            scale = x.detach().abs().amax(dim=-1, keepdim=True)
            z = F.normalize(x / scale.clamp_min(torch.finfo(dtype).tiny), dim=-1)
            y = labels.to(dtype)
            b, v, d = z.shape
            world = _world_size() if self.gather_distributed else 1
            if world > 1:
                merged = torch.cat([z.reshape(b, v * d), y], dim=1)
                gathered, offset = gather_with_grad(merged)
                z_all = gathered[:, : v * d].reshape(-1, v, d)
                y_all = gathered[:, v * d :].detach()
            else:
                z_all, y_all, offset = z, y, 0
            batch = _Batch(z, z_all, y, y_all, offset, world)
            loss_sum, count = self._loss_terms(batch)
            count = count.to(dtype)
            if world > 1:
                count = count.clone()
                dist.all_reduce(count, op=dist.ReduceOp.SUM)
            return loss_sum * world / count.clamp_min(1)

    def _loss_terms(self, batch: _Batch) -> tuple[Tensor, Tensor]:
        """Sum of the losses of the local anchors and the number of anchors.

        Args:
            batch: Normalised local and global batch.

        Returns:
            The summed loss and the number of (valid) anchors it sums over.
        """
        raise NotImplementedError
