"""RetrievalMetrics: retrieval metrics accumulated over batches, for Lightning."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .._checks import check_fraction, check_ks, check_positive_int
from .functional import retrieval_metrics

__all__ = ('RetrievalMetrics',)


class RetrievalMetrics(Metric):
    """All retrieval metrics of :func:`~torchgeo_macl.metrics.retrieval_metrics`.

    Embeddings and labels are gathered over batches (and over processes in
    distributed runs) and evaluated at :meth:`compute`, which returns the same dict
    as :func:`~torchgeo_macl.metrics.retrieval_metrics` (0-dim tensors).

    A cut-off ``k`` larger than the ``n`` items each query can retrieve is an
    error, or with ``clip_ks=True`` is evaluated at ``n`` (the whole ranking; a
    :class:`UserWarning` says so) and returned under its requested name, so that
    every requested key exists even for a small split.

    With ``per_label=True`` :meth:`compute` also returns the per-label mAP@k
    (``'AP_label@k'``, [C], NaN for a label no query carries), ``'label_has_query'``
    ([C] bool), ``'database_label_frequency'`` ([C], the share of database items
    carrying each label) and ``'num_queries'`` / ``'num_database'`` (0-dim
    integers): everything a report needs, from the ranking the scalars came from.

    With ``leave_one_out=True`` every embedding is both a query and a database item,
    and each query is removed from its own ranking. Otherwise batches are queries,
    or database items when passed with ``database=True``.

    When ``indexes`` (dataset positions) are given, :meth:`compute` orders the items
    by index and keeps one item per index. Distributed samplers pad the last batch
    with repeated samples, so this makes a multi-process result identical to the
    single-process one. Without indexes the items keep their arrival order
    (process by process after a sync) and none is dropped.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    query_embeddings: list[Tensor] | Tensor
    query_labels: list[Tensor] | Tensor
    query_indexes: list[Tensor] | Tensor
    database_embeddings: list[Tensor] | Tensor
    database_labels: list[Tensor] | Tensor
    database_indexes: list[Tensor] | Tensor

    def __init__(
        self,
        ks: Iterable[int] = (10, 20, 50, 100),
        leave_one_out: bool = True,
        jaccard: bool = True,
        jaccard_threshold: float = 0.5,
        rare_fraction: float = 1 / 3,
        per_label: bool = False,
        clip_ks: bool = False,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialise the metric.

        Args:
            ks: Cut-offs.
            leave_one_out: Queries are the database, each query excluded from its
                own ranking.
            jaccard: Also compute the Jaccard-relevance variants.
            jaccard_threshold: Threshold in (0, 1] for Jaccard relevance.
            rare_fraction: Fraction in (0, 1] of labels counted as rare.
            per_label: Also return the per-label values and the split sizes.
            clip_ks: Evaluate a cut-off larger than the ranking at the ranking's
                length instead of raising an error.
            chunk_size: Queries ranked at once (default: automatic).
            **kwargs: Passed to :class:`torchmetrics.Metric`.

        Raises:
            TypeError: If a cut-off or ``chunk_size`` is not an integer.
            ValueError: If ``ks`` or another option is out of range.
        """
        super().__init__(**kwargs)
        self.ks = check_ks(ks)
        self.leave_one_out = leave_one_out
        self.jaccard = jaccard
        self.jaccard_threshold = check_fraction(jaccard_threshold, 'jaccard_threshold')
        self.rare_fraction = check_fraction(rare_fraction, 'rare_fraction')
        self.per_label = per_label
        self.clip_ks = clip_ks
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, 'chunk_size')
        )
        for role in ('query', 'database'):
            for part in ('embeddings', 'labels', 'indexes'):
                self.add_state(f'{role}_{part}', default=[], dist_reduce_fx='cat')

    def update(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indexes: Tensor | None = None,
        database: bool = False,
    ) -> None:
        """Add a batch.

        Args:
            embeddings: Embeddings [B, D].
            labels: Multi-hot labels [B, C].
            indexes: Dataset positions [B] (optional, the same choice for every
                batch of a role).
            database: Add the batch to the database instead of the queries
                (ignored with ``leave_one_out=True``).

        Raises:
            ValueError: If the shapes do not match.
        """
        if embeddings.ndim != 2:
            raise ValueError(
                f'embeddings must have shape [B, D], got {tuple(embeddings.shape)}'
            )
        if labels.ndim != 2 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f'labels must have shape [{embeddings.shape[0]}, C], got '
                f'{tuple(labels.shape)}'
            )
        role = 'database' if database and not self.leave_one_out else 'query'
        getattr(self, f'{role}_embeddings').append(embeddings.detach())
        getattr(self, f'{role}_labels').append(labels.detach())
        if indexes is not None:
            indexes = torch.as_tensor(indexes, device=embeddings.device)
            if indexes.shape != (embeddings.shape[0],):
                raise ValueError(
                    f'indexes must have shape [{embeddings.shape[0]}], got '
                    f'{tuple(indexes.shape)}'
                )
            if indexes.is_floating_point() or indexes.is_complex():
                raise ValueError(f'indexes must be integers, got {indexes.dtype}')
            getattr(self, f'{role}_indexes').append(indexes.long())

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Add a batch, like :meth:`update`.

        Retrieval needs the whole database, so no per-batch value is computed.

        Args:
            *args: Passed to :meth:`update`.
            **kwargs: Passed to :meth:`update`.
        """
        self.update(*args, **kwargs)

    def _gather(self, role: str) -> tuple[Tensor, Tensor]:
        embeddings = self._cat(getattr(self, f'{role}_embeddings'))
        labels = self._cat(getattr(self, f'{role}_labels'))
        indexes = self._cat(getattr(self, f'{role}_indexes'))
        if embeddings.numel() == 0:
            what = 'embeddings' if role == 'query' else 'database embeddings'
            raise ValueError(f'RetrievalMetrics.compute() called without any {what}')
        if indexes.numel():
            if indexes.numel() != embeddings.shape[0]:
                raise ValueError(
                    f'{role} indexes were given for {indexes.numel()} of '
                    f'{embeddings.shape[0]} items: pass indexes with every batch or '
                    'with none'
                )
            indexes = indexes.long()
            order = indexes.sort(stable=True).indices
            sorted_indexes = indexes[order]
            first = torch.ones_like(sorted_indexes, dtype=torch.bool)
            first[1:] = sorted_indexes[1:] != sorted_indexes[:-1]
            keep = order[first]
            embeddings = embeddings[keep]
            labels = labels[keep]
        return embeddings, labels

    @staticmethod
    def _cat(state: list[Tensor] | Tensor) -> Tensor:
        if isinstance(state, list) and not state:
            return torch.empty(0)
        return dim_zero_cat(state)

    def num_retrievable(self) -> int:
        """Items each query can rank, from what was added so far.

        Items are counted once per index when indexes were given; with
        ``leave_one_out=True`` a query's own item is not counted.

        Returns:
            The size of each query's ranking (0 when nothing was added).
        """
        role = 'query' if self.leave_one_out else 'database'
        indexes = getattr(self, f'{role}_indexes')
        if isinstance(indexes, list) and indexes:
            count = int(torch.unique(torch.cat(indexes)).numel())
        elif isinstance(indexes, Tensor) and indexes.numel():
            count = int(torch.unique(indexes).numel())
        else:
            embeddings = getattr(self, f'{role}_embeddings')
            if isinstance(embeddings, list):
                count = sum(len(e) for e in embeddings)
            else:
                count = len(embeddings)
        return max(count - 1, 0) if self.leave_one_out else count

    def compute(self) -> dict[str, Tensor]:
        """Evaluate every metric on everything gathered so far.

        Returns:
            The dict of :func:`~torchgeo_macl.metrics.retrieval_metrics` for the
            requested cut-offs, and the per-label values with ``per_label=True``.

        Raises:
            ValueError: If nothing was added, no query can retrieve any item,
                indexes were given for only some batches, or the data are invalid
                for :func:`~torchgeo_macl.metrics.retrieval_metrics`.
        """
        queries, query_labels = self._gather('query')
        if self.leave_one_out:
            database, database_labels = queries, query_labels
        else:
            database, database_labels = self._gather('database')
        size = database.shape[0] - (1 if self.leave_one_out else 0)
        if size < 1:
            raise ValueError(
                'RetrievalMetrics.compute() needs at least one item to retrieve per '
                'query, got a database of '
                f'{database.shape[0]} item{"s" if database.shape[0] != 1 else ""}'
                + (' (leave-one-out)' if self.leave_one_out else '')
            )
        used = {k: min(k, size) if self.clip_ks else k for k in self.ks}
        too_large = sorted(k for k in used if used[k] != k)
        if too_large:
            warnings.warn(
                f'cut-offs {too_large} exceed the {size} items each query can '
                f'retrieve; they are evaluated at {size}',
                UserWarning,
                stacklevel=2,
            )
        values = retrieval_metrics(
            queries,
            query_labels,
            database,
            database_labels,
            sorted(set(used.values())),
            exclude_self=self.leave_one_out,
            jaccard=self.jaccard,
            jaccard_threshold=self.jaccard_threshold,
            rare_fraction=self.rare_fraction,
            per_label=self.per_label,
            chunk_size=self.chunk_size,
        )
        result: dict[str, Tensor] = {}
        for name, value in values.items():
            key, sep, cut = name.rpartition('@')
            if not sep:
                result[name] = value
                continue
            for k, evaluated in used.items():
                if evaluated == int(cut):
                    result[f'{key}@{k}'] = value
        if self.per_label:
            result['database_label_frequency'] = database_labels.float().mean(dim=0)
            result['num_queries'] = torch.tensor(queries.shape[0])
            result['num_database'] = torch.tensor(database.shape[0])
        return result
