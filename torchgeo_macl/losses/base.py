"""Base class of the contrastive losses: inputs, precision, gathering and reduction.

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

**Input checks.** Shapes, dtypes and the width of the labels are always checked.
The checks of the values (binary labels, finite features) read a result back from
the device, which waits for the queued device work; with ``validate_args=False``
they are skipped and a forward pass on an accelerator never waits for the device.

**Distributed training.** With ``gather_distributed=True`` and an initialised
process group of ``R > 1`` ranks, the features and labels of every rank are gathered
with :func:`~torchgeo_macl.losses.gather_with_grad` (an all-gather whose backward
all-reduces the gradients, so each rank's features receive the gradients of every
rank's loss). Each rank computes the loss of its own anchors against the global
batch and returns ``R * (sum of its anchor losses) / (global number of anchors)``.
Hence

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
import warnings
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import gather_with_grad, world_size

__all__ = (
    'SMALLEST_FEATURE',
    'ContrastiveBatch',
    'ContrastiveLossBase',
    'LabelFrequencies',
    'check_label_frequencies',
    'check_temperature',
)

#: Accepted types for label frequencies.
LabelFrequencies = Sequence[float] | Tensor

#: Per work dtype, the largest absolute value below which a feature vector counts
#: as zero: 2**16 times the smallest normal number, so that the gradient of its
#: direction, about ``1 / max|x|`` times that of the loss, stays finite.
SMALLEST_FEATURE = {
    torch.float32: torch.finfo(torch.float32).tiny * 2**16,
    torch.float64: torch.finfo(torch.float64).tiny * 2**16,
}


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


class ContrastiveBatch(NamedTuple):
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
    def views(self) -> int:
        """Number of views ``V`` of every image."""
        return self.z.shape[1]

    @property
    def own(self) -> Tensor:
        """Boolean ``[B, Bg]``, true where the column is the row's own image."""
        rows, cols = self.z.shape[0], self.z_all.shape[0]
        mask = torch.zeros(rows, cols, dtype=torch.bool, device=self.z.device)
        index = torch.arange(rows, device=self.z.device)
        mask[index, index + self.offset] = True
        return mask

    def own_column(self, matrix: Tensor) -> Tensor:
        """Entries ``matrix[b, offset + b]`` of an image-pair matrix ``[B, Bg]``.

        Args:
            matrix: A matrix over the local-global image pairs ``[B, Bg]``.

        Returns:
            The entry of every row at its own image, ``[B]``.
        """
        rows = torch.arange(matrix.shape[0], device=matrix.device)
        return matrix[rows, rows + self.offset]


class ContrastiveLossBase(nn.Module):
    """Base class of the multi-label contrastive losses of this package.

    Owns the softmax temperature, input validation, normalisation, float32
    computation under autocast, gathering across ranks and the final reduction
    (see the module documentation). A subclass implements :meth:`_loss_terms`;
    the supervised losses derive from
    :class:`~torchgeo_macl.losses.WeightedSupConLoss`, which fills it in, and only
    state their pair weights.
    """

    #: Whether the loss reads the labels (a self-supervised loss only checks them).
    uses_labels: ClassVar[bool] = True

    label_frequencies: Tensor | None

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        label_frequencies: LabelFrequencies | None = None,
        gather_distributed: bool = False,
        validate_args: bool = True,
    ) -> None:
        """Initialise the loss.

        Args:
            temperature: Softmax temperature ``tau`` (> 0).
            label_frequencies: Fraction of training images carrying each label
                (length ``C``, each in ``(0, 1]``); may also be given later with
                :meth:`set_label_frequencies`. When known, the width of the labels
                is checked against it.
            gather_distributed: Gather features and labels from every rank of an
                initialised process group before computing the loss, so that
                negatives and positives come from the global batch. Without an
                initialised process group the loss is computed locally.
            validate_args: Check that the labels are binary and the features
                finite on every call. These checks wait for the device; shapes and
                dtypes are checked either way.

        Raises:
            ValueError: If ``temperature`` or ``label_frequencies`` is invalid.
            RuntimeError: If ``gather_distributed`` is requested but
                :mod:`torch.distributed` is not available.
        """
        super().__init__()
        if gather_distributed and not dist.is_available():
            raise RuntimeError(
                'gather_distributed=True but torch.distributed is not available in '
                'this PyTorch build'
            )
        self.temperature = check_temperature(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.validate_args = bool(validate_args)
        self._warned_small_batch = False
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

    def _check(self, features: Tensor, labels: Tensor, *, values: bool) -> None:
        """Check the inputs of :meth:`forward`.

        Args:
            features: Embeddings ``[B, V, D]``.
            labels: Multi-hot labels ``[B, C]``.
            values: Also check that the labels are binary and the features finite.

        Raises:
            TypeError: If the inputs are not tensors or the features are not
                floating point.
            ValueError: If a shape or a checked value is invalid.
        """
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
        if not values:
            return
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
            gradient graph) when no anchor has a positive, and when the global
            batch holds at most two items (one image with two views: a
            :class:`UserWarning` says so, once per loss). A feature vector whose
            largest absolute value is below :data:`SMALLEST_FEATURE` (zero or
            subnormal) counts as the zero vector and receives a zero gradient.

        Raises:
            TypeError: If the inputs are not floating-point / tensor inputs.
            ValueError: If shapes, label values or features are invalid (values
                only with ``validate_args``).
        """
        self._check(features, labels, values=self.validate_args)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = features.to(dtype)
            # rescale first so that the norm neither overflows nor underflows; the
            # normalised vector and its gradient do not depend on the scale
            scale = x.detach().abs().amax(dim=-1, keepdim=True)
            # the gradient of x / |x| grows as 1 / |x|: below SMALLEST_FEATURE (zero
            # and subnormal vectors) it overflows, so such a vector counts as zero
            # (similarity 0 with every other) and receives no gradient
            small = scale < SMALLEST_FEATURE[dtype]
            x = torch.where(small, 0.0, x)
            z = F.normalize(x / scale.clamp_min(SMALLEST_FEATURE[dtype]), dim=-1)
            y = labels.to(dtype)
            b, v, d = z.shape
            world = world_size() if self.gather_distributed else 1
            if world > 1:
                merged = torch.cat([z.reshape(b, v * d), y], dim=1)
                gathered, offset = gather_with_grad(merged)
                z_all = gathered[:, : v * d].reshape(-1, v, d)
                y_all = gathered[:, v * d :].detach()
            else:
                z_all, y_all, offset = z, y, 0
            too_small = z_all.shape[0] * v <= 2
            if too_small and not self._warned_small_batch:
                self._warned_small_batch = True
                warnings.warn(
                    f'{type(self).__name__}: a batch of {z_all.shape[0]} image(s) '
                    f'with {v} view(s) leaves every anchor at most one other view, '
                    'so the loss is 0 and trains nothing; use batches of at least 2 '
                    'images (this warning is shown once)',
                    UserWarning,
                    stacklevel=2,
                )
            batch = ContrastiveBatch(z, z_all, y, y_all, offset, world)
            loss_sum, count = self._loss_terms(batch)
            if too_small:
                # the only other view is the positive: the loss is exactly 0
                loss_sum = loss_sum * 0.0
            count = count.to(dtype)
            if world > 1:
                count = count.clone()
                dist.all_reduce(count, op=dist.ReduceOp.SUM)
            return loss_sum * world / count.clamp_min(1)

    def _loss_terms(self, batch: ContrastiveBatch) -> tuple[Tensor, Tensor]:
        """Sum of the losses of the local anchors and the number of anchors.

        Args:
            batch: Normalised local and global batch.

        Returns:
            The summed loss and the number of (valid) anchors it sums over.
        """
        raise NotImplementedError
