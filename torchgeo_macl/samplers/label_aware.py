"""Label-aware batch sampler for multi-label data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ('LabelAwareBatch', 'LabelAwareBatchSampler')


class LabelAwareBatch(NamedTuple):
    """One batch of a :class:`LabelAwareBatchSampler` with the labels drawn for it."""

    #: Dataset indices of the images of the batch.
    indices: list[int]
    #: Labels drawn with a full group of ``m`` images, in drawing order (a label
    #: drawn twice appears twice).
    labels: list[int]
    #: Labels drawn for leftover slots fewer than ``m`` (see the sampler).
    partial_labels: list[int]


class LabelAwareBatchSampler(Sampler[list[int]]):
    r"""Batch sampler that guarantees positives for the labels it draws.

    Each batch is filled by repeatedly drawing a label ``c`` with probability

    .. math:: p_c \propto f_c^{\,1-\sigma}

    (``f_c`` the fraction of the given images that carry ``c``; ``sigma = 0`` keeps
    the natural label frequencies, ``sigma = 1`` draws labels uniformly) and then
    ``m`` images that carry ``c``, uniformly among the carriers not yet in the
    batch. Drawing stops when the batch is full, so every drawn label has at least
    ``m`` carriers in its batch (or all its carriers, if it has fewer than ``m``).
    Within a batch an image appears once; across batches images are drawn
    independently (an epoch may repeat some images and skip others).

    Details of one batch: labels are drawn in rounds; a round draws
    ``remaining // m`` labels with replacement, the same label drawn ``k`` times
    getting ``k * m`` distinct carriers, and, when ``remaining`` is not a multiple
    of ``m``, one more *partial* label for the leftover slots. Each label's
    carriers are drawn independently of the other labels' (uniformly among its
    carriers not yet in the batch); images picked by two draws of a round (they
    carry both labels) count once, and the next round fills the slots this frees.
    Labels whose carriers are all in the batch are no longer drawn. Images
    without any label are used only when no label has a carrier left outside the
    batch. A batch costs O(batch size) on average, whatever the number of images:
    a label with many carriers is sampled by rejection (at most a batch of them
    can be taken), one with few by a permutation of its carriers; an epoch is
    O(N).

    An epoch has ``len(labels) // batch_size`` batches, cut to a multiple of
    ``num_replicas``. The global sequence of batches of an epoch is determined by
    ``(seed, epoch)`` (call :meth:`set_epoch` before each epoch); rank ``r`` of
    ``R`` receives batches ``r, r + R, r + 2R, ...``, so ranks get different batches
    and together the same batches a single process would. Every batch has its own
    generator derived from ``(seed, epoch, batch index)``, so a rank only computes
    its own batches.

    Only the labels are needed, e.g. the ``labels`` attribute of this package's
    datasets; no image is loaded. Use it as ``DataLoader(dataset,
    batch_sampler=sampler)``.
    """

    def __init__(
        self,
        labels: Tensor | np.ndarray[Any, Any] | Sequence[Sequence[int]],
        batch_size: int,
        m: int = 2,
        sigma: float = 0.5,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        """Initialise the sampler.

        Args:
            labels: Multi-hot labels of the dataset, ``[N, C]`` (0/1).
            batch_size: Images per batch (>= ``m``).
            m: Images drawn per drawn label (>= 1).
            sigma: Label balancing in ``[0, 1]``: labels are drawn with probability
                proportional to ``f_c ** (1 - sigma)``.
            seed: Seed shared by all ranks (>= 0).
            num_replicas: Number of ranks; default: the world size of the
                initialised process group, else 1.
            rank: Rank of this process in ``[0, num_replicas)``; default: the rank
                in the initialised process group, else 0.

        Raises:
            ValueError: If the labels are not a binary ``[N, C]`` array with at least
                one label present, a parameter is out of range, or there are fewer
                than ``batch_size * num_replicas`` images.
        """
        y = torch.as_tensor(labels)
        if y.ndim != 2 or y.shape[1] < 1:
            raise ValueError(
                f'labels must be a multi-hot [N, C] array, got shape {tuple(y.shape)}'
            )
        if y.dtype != torch.bool and not bool(((y == 0) | (y == 1)).all()):
            raise ValueError('labels must be binary (0/1 multi-hot)')
        carriers = y.bool()
        if not bool(carriers.any()):
            raise ValueError('labels must contain at least one positive label')
        if not isinstance(m, int) or m < 1:
            raise ValueError(f'm must be an integer >= 1, got {m!r}')
        if not isinstance(batch_size, int) or batch_size < m:
            raise ValueError(
                f'batch_size must be an integer >= m={m}, got {batch_size!r}'
            )
        if not 0 <= sigma <= 1:
            raise ValueError(f'sigma must lie in [0, 1], got {sigma!r}')
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
        if num_replicas is None:
            initialised = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            initialised = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if initialised else 0
        if num_replicas < 1:
            raise ValueError(f'num_replicas must be >= 1, got {num_replicas}')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank must lie in [0, {num_replicas}), got {rank}')
        n = y.shape[0]
        if (n // batch_size) // num_replicas == 0:
            raise ValueError(
                f'{n} images make no batch of {batch_size} for each of '
                f'{num_replicas} ranks'
            )
        self._num_images = n
        # carriers of each label, and labels of each image, as CSR arrays
        by_image = carriers.cpu().numpy()
        label_of, image_of = np.nonzero(by_image.T)
        self._carriers = image_of.astype(np.int64)
        self._carrier_ptr = np.concatenate(
            ([0], np.cumsum(np.bincount(label_of, minlength=y.shape[1])))
        )
        self._image_labels = by_image  # [N, C]
        self._taken = np.zeros(n, dtype=bool)
        #: Fraction of the images that carry each label, ``[C]``.
        self.label_frequencies = carriers.double().mean(0)
        freqs = self.label_frequencies
        #: Probability of drawing each label, ``[C]``.
        self.label_probabilities = torch.where(
            freqs > 0, freqs.clamp_min(1e-300) ** (1 - sigma), 0.0
        )
        self.label_probabilities /= self.label_probabilities.sum()
        self._probabilities = self.label_probabilities.numpy()
        self.batch_size = batch_size
        self.m = m
        self.sigma = float(sigma)
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which together with the seed determines the batches.

        Args:
            epoch: Epoch number (>= 0).

        Raises:
            ValueError: If ``epoch`` is negative.
        """
        if epoch < 0:
            raise ValueError(f'epoch must be >= 0, got {epoch}')
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of batches this rank yields per epoch.

        Returns:
            ``(len(labels) // batch_size) // num_replicas``.
        """
        return (self._num_images // self.batch_size) // self.num_replicas

    def _batch_seeds(self) -> list[int]:
        """Seeds of the batches of this rank in the current epoch."""
        total = len(self) * self.num_replicas
        seeds = np.random.SeedSequence([self.seed, self.epoch]).generate_state(
            total, dtype=np.uint64
        )
        return [int(s) for s in seeds[self.rank :: self.num_replicas]]

    def _pick(
        self, rng: np.random.Generator, pool: np.ndarray[Any, Any] | None, count: int
    ) -> np.ndarray[Any, Any]:
        """Draw ``count`` distinct images of ``pool`` that are not in the batch.

        Args:
            rng: Generator of the batch.
            pool: Candidate images (``None``: every image).
            count: Images to draw; at most the number of candidates not taken.

        Returns:
            The images, in random order.
        """
        size = self._num_images if pool is None else len(pool)
        taken = self._taken
        if size <= 4 * self.batch_size:
            # few candidates: a permutation of those still free
            candidates = np.arange(size) if pool is None else pool
            free = candidates[~taken[candidates]]
            return rng.permutation(free)[:count]
        # many candidates, at most batch_size of them taken: rejection sampling
        # (the first distinct free ones of a uniform stream form a uniform subset)
        picked = np.empty(0, dtype=np.int64)
        while len(picked) < count:
            draw = rng.integers(0, size, size=2 * count + 8)
            images = draw if pool is None else pool[draw]
            images = np.concatenate((picked, images[~taken[images]]))
            _, first = np.unique(images, return_index=True)
            picked = images[np.sort(first)]
        return picked[:count]

    def _draw(self, rng: np.random.Generator) -> LabelAwareBatch:
        """Draw one batch."""
        m = self.m
        ptr, carriers = self._carrier_ptr, self._carriers
        free = np.diff(ptr)  # carriers of each label not in the batch
        taken = self._taken
        chosen: list[np.ndarray[Any, Any]] = []
        full: list[np.ndarray[Any, Any]] = []
        partial: list[np.ndarray[Any, Any]] = []
        remaining = self.batch_size
        try:
            while remaining > 0:
                probs = self._probabilities * (free > 0)
                total = probs.sum()
                if total <= 0:
                    # no label has a carrier left: fill with unlabelled images
                    chosen.append(self._pick(rng, None, remaining))
                    break
                groups, leftover = divmod(remaining, m)
                draws = groups + (leftover > 0)
                drawn = rng.choice(len(probs), size=draws, p=probs / total)
                sizes = np.full(draws, m)
                if leftover:
                    sizes[-1] = leftover
                wanted = np.bincount(drawn, weights=sizes, minlength=len(probs))
                picks = [
                    self._pick(
                        rng, carriers[ptr[c] : ptr[c + 1]], int(min(wanted[c], free[c]))
                    )
                    for c in np.flatnonzero(wanted).tolist()
                ]
                all_picks = np.concatenate(picks)
                _, first = np.unique(all_picks, return_index=True)
                new = all_picks[np.sort(first)]
                taken[new] = True
                free -= self._image_labels[new].sum(axis=0)
                chosen.append(new)
                remaining -= len(new)
                full.append(drawn[sizes == m])
                partial.append(drawn[sizes < m])
            indices = rng.permutation(np.concatenate(chosen))
        finally:
            for part in chosen:
                taken[part] = False
        return LabelAwareBatch(
            indices.tolist(),
            np.concatenate(full).tolist() if full else [],
            np.concatenate(partial).tolist() if partial else [],
        )

    def batches(self) -> Iterator[LabelAwareBatch]:
        """Iterate over this rank's batches of the current epoch with their labels.

        Yields:
            The batches, with the labels drawn for each.
        """
        for seed in self._batch_seeds():
            yield self._draw(np.random.default_rng(seed))

    def __iter__(self) -> Iterator[list[int]]:
        """Iterate over this rank's batches of the current epoch.

        Yields:
            Lists of ``batch_size`` dataset indices.
        """
        for batch in self.batches():
            yield batch.indices
