"""Multi-label retrieval metrics as plain functions.

Every function ranks the database for each query by cosine similarity (the embeddings
are L2-normalised inside), breaks score ties by the lower database index, and scores
the top ``k`` items against multi-hot labels. All of them share one ranking step
(:func:`retrieval_metrics` ranks once and evaluates every metric at several ``k``).

Notation, for a query ``q`` and the item ranked ``i``-th (1-based) in its result list:

* ``C(q, i)``: number of labels the two share; ``J(q, i)``: the Jaccard index
  (intersection over union) of their label sets (0 when both are empty);
* ``rel_i = [C(q, i) > 0]`` for ``relevance='any'``, ``rel_i = [J(q, i) >= t]`` for
  ``relevance='jaccard'`` with ``t = jaccard_threshold``;
* ``R_K = sum_{i<=K} rel_i``, the relevant items within the top ``K``.

Definitions (per query; the reported value is the mean over queries):

* ``P@K = R_K / K``;
* ``AP@K = (1 / R_K) sum_{i<=K} rel_i P@i`` (0 when ``R_K = 0``), whose mean is mAP@K,
  equal to torchmetrics' ``RetrievalMAP(top_k=K)``;
* ``ACG@K = (1 / K) sum_{i<=K} C(q, i)``;
* ``WAP@K = (1 / R_K) sum_{i<=K} rel_i ACG@i`` (0 when ``R_K = 0``);
* ``NDCG@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{i<=K} g_i / log2(i + 1)``, gain
  ``g = 2^C - 1`` (``relevance='any'``) or ``g = J`` (``relevance='jaccard'``), and
  ``IDCG@K`` the DCG of the ideal ordering of the *whole* database (not of the
  retrieved top ``K``); 0 when ``IDCG@K = 0``;
* per-label AP@K for label ``c``: AP@K of the queries carrying ``c`` with relevance
  "the retrieved item carries ``c``", averaged over those queries.

Accumulation is in float64 (float32 on devices without float64 support), so float32
and float64 embeddings give the same values whenever they give the same ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from .._checks import check_fraction, check_ks, check_positive_int

__all__ = (
    'average_cumulative_gain_at_k',
    'mean_average_precision_at_k',
    'ndcg_at_k',
    'per_label_average_precision_at_k',
    'precision_at_k',
    'retrieval_metrics',
    'weighted_average_precision_at_k',
)

Relevance = Literal['any', 'jaccard']
Reduction = Literal['mean', 'none']

#: Target number of similarity entries held at once when ``chunk_size`` is None.
_SIMILARITY_BLOCK = 1 << 24
#: Target number of gathered label entries (queries x k x labels) held at once.
_LABEL_BLOCK = 1 << 22


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------


def _check_embeddings(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if x.ndim != 2:
        raise ValueError(f'{name} must have shape [N, D], got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} must be a floating point tensor, got {x.dtype}')
    return x


def _check_labels(y: object, name: str, rows: int, device: torch.device) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(y).__name__}')
    if y.ndim != 2:
        raise ValueError(
            f'{name} must be multi-hot with shape [N, C], got {tuple(y.shape)}'
        )
    if y.shape[0] != rows:
        raise ValueError(
            f'{name} has {y.shape[0]} rows but its embeddings have {rows} rows'
        )
    y = y.to(device)
    if y.numel() and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f'{name} must be multi-hot (only 0 and 1), got other values')
    return y


def _validate(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    max_k: int,
    exclude_self: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    qe = _check_embeddings(query_embeddings, 'query_embeddings')
    de = _check_embeddings(database_embeddings, 'database_embeddings')
    if qe.device != de.device:
        raise ValueError(
            f'query_embeddings are on {qe.device} but database_embeddings on {de.device}'
        )
    if qe.shape[1] != de.shape[1]:
        raise ValueError(
            f'query_embeddings have dimension {qe.shape[1]} but database_embeddings '
            f'have dimension {de.shape[1]}'
        )
    if de.shape[0] == 0:
        raise ValueError('the database is empty (database_embeddings has 0 rows)')
    if qe.shape[0] == 0:
        raise ValueError('there are no queries (query_embeddings has 0 rows)')
    ql = _check_labels(query_labels, 'query_labels', qe.shape[0], qe.device)
    dl = _check_labels(database_labels, 'database_labels', de.shape[0], de.device)
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(
            f'query_labels have {ql.shape[1]} labels but database_labels have '
            f'{dl.shape[1]} labels'
        )
    size = de.shape[0]
    if exclude_self:
        if qe.shape[0] != de.shape[0]:
            raise ValueError(
                'exclude_self=True needs query i to be database item i, but there '
                f'are {qe.shape[0]} queries and {de.shape[0]} database items'
            )
        size -= 1
    if max_k > size:
        raise ValueError(
            f'k={max_k} is larger than the {size} database items each query can '
            'retrieve' + (' (itself excluded)' if exclude_self else '')
        )
    return qe, ql, de, dl


# ----------------------------------------------------------------------------------
# Ranking and per-query evaluation
# ----------------------------------------------------------------------------------


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == 'mps' else torch.float64


def _normalise(x: Tensor, name: str, dtype: torch.dtype) -> Tensor:
    """L2-normalise rows, rejecting NaN and infinite values."""
    x = x.detach().to(dtype)
    norms: Tensor = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        if bool(torch.isfinite(x).all()):
            raise ValueError(f'{name} has values too large to normalise')
        raise ValueError(f'{name} contains NaN or infinite values')
    return x / norms.clamp_min(1e-12)


def _ranked_top_k(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` best columns of each row, best first.

    Order: higher score first, equal scores by lower column index. Rows without
    equal scores among their ``k + 1`` best keep the order of ``topk``; the others
    are re-selected and re-ordered exactly.

    Args:
        scores: Scores [B, N] without NaN.
        k: Number of columns to keep, ``k <= N``.

    Returns:
        Column indices [B, k] (long).
    """
    kk = min(k + 1, scores.shape[1])
    values, indices = scores.topk(kk, dim=1, largest=True, sorted=True)
    indices = indices[:, :k]
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        sub = scores[rows]
        threshold = values[rows, k - 1 : k]
        above = sub > threshold
        at = sub == threshold
        room = k - above.sum(dim=1, keepdim=True)
        take = above | (at & (at.cumsum(dim=1) <= room))
        chosen = take.nonzero()[:, 1].view(-1, k)  # ascending column index
        best = sub.gather(1, chosen).sort(dim=1, descending=True, stable=True)
        indices[rows] = chosen.gather(1, best.indices)
    return indices


def _average_precision(rel: Tensor, positions: Tensor, columns: Tensor) -> Tensor:
    """AP@k along dim 1 of ``rel`` for each k in ``columns + 1``."""
    hits = rel.cumsum(dim=1)
    precision = hits / positions
    numerator = (rel * precision).cumsum(dim=1).index_select(1, columns)
    found = hits.index_select(1, columns)
    return torch.where(found > 0, numerator / found.clamp_min(1), 0.0)


def _ideal_gains(
    counts: Tensor, gains: Tensor, positions: Tensor, max_k: int
) -> Tensor:
    """Gains of the ideal ranking from a histogram of database items.

    Args:
        counts: Items per bin [B, bins] (long).
        gains: Gain of each bin [B, bins].
        positions: 1-based positions [max_k] (long).
        max_k: Ranking length, at most the number of items.

    Returns:
        The ``max_k`` largest gains in decreasing order [B, max_k].
    """
    order = gains.argsort(dim=1, descending=True)
    cumulative = counts.gather(1, order).cumsum(dim=1)
    wanted = positions.expand(counts.shape[0], max_k).contiguous()
    slot = torch.searchsorted(cumulative, wanted)
    return gains.gather(1, order).gather(1, slot)


def _label_sets(labels: Tensor, labels_f: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of a multi-hot matrix and how often each occurs.

    Args:
        labels: Multi-hot labels [N, C] (any dtype).
        labels_f: The same labels as float32.

    Returns:
        Distinct label sets [U, C] (float32) and their counts [U] (long). With more
        than 62 labels every row is returned with count 1.
    """
    n, num_labels = labels.shape
    if num_labels > 62:
        return labels_f, torch.ones(n, dtype=torch.long, device=labels.device)
    bits = torch.pow(2, torch.arange(num_labels, device=labels.device))
    keys = (labels.long() * bits).sum(dim=1)
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    first = torch.empty_like(counts).scatter_(
        0, inverse, torch.arange(n, device=labels.device)
    )
    return labels_f[first], counts


def _default_chunk(database_size: int, max_k: int, num_labels: int) -> int:
    by_scores = _SIMILARITY_BLOCK // max(database_size, 1)
    by_labels = _LABEL_BLOCK // max(max_k * max(num_labels, 1), 1)
    by_bins = _SIMILARITY_BLOCK // (num_labels + 1) ** 2
    return max(1, min(by_scores, by_labels, by_bins))


def _per_query(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    ks: tuple[int, ...],
    *,
    exclude_self: bool,
    jaccard_threshold: float,
    chunk_size: int | None,
    want: frozenset[str],
) -> dict[str, Tensor]:
    """Rank once and evaluate the requested metrics per query.

    ``want`` holds names among ``P AP WAP ACG NDCG P_jaccard AP_jaccard WAP_jaccard
    NDCG_jaccard AP_label``. Returns ``{name: [Q, len(ks)]}`` (``AP_label``:
    ``[Q, len(ks), C]``, NaN where the query does not carry the label).
    """
    max_k = max(ks)
    qe, ql, de, dl = _validate(
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        max_k,
        exclude_self,
    )
    check_fraction(jaccard_threshold, 'jaccard_threshold')
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, 'chunk_size')

    device = qe.device
    acc = _accumulation_dtype(device)
    compute = torch.promote_types(
        torch.promote_types(qe.dtype, de.dtype), torch.float32
    )
    with torch.no_grad():
        qn = _normalise(qe, 'query_embeddings', compute)
        dn = _normalise(de, 'database_embeddings', compute)
        # Label counts are small integers: float32 products and sums are exact.
        yq_all = ql.to(torch.float32)
        yd_all = dl.to(torch.float32)
        d_size = yd_all.sum(dim=1)
        num_queries, num_labels = yq_all.shape
        width = num_labels + 1
        chunk = chunk_size or _default_chunk(dn.shape[0], max_k, num_labels)

        positions = torch.arange(1, max_k + 1, device=device, dtype=acc)
        columns = torch.tensor([k - 1 for k in ks], device=device)
        k_values = torch.tensor(ks, device=device, dtype=acc)
        discount = 1.0 / torch.log2(positions + 1.0)

        need_jaccard = any(name.endswith('_jaccard') for name in want)
        need_inter = bool(want - {'AP_label'})
        need_ideal = bool(want & {'NDCG', 'NDCG_jaccard'})
        if need_ideal:
            # Histogram bins of database items: by shared labels, and by label-set
            # size too when the Jaccard gain is needed.
            bins = width * width if 'NDCG_jaccard' in want else width
            bin_ids = torch.arange(bins, device=device)
            bin_inter = (bin_ids // width if bins > width else bin_ids).to(acc)
            bin_size = (bin_ids % width).to(acc)
            # Items with the same label set fall in the same bin: count label sets.
            patterns, pattern_counts = _label_sets(dl, yd_all)
            pattern_size = patterns.sum(dim=1)
            p_key = (pattern_size if bins > width else pattern_size * 0.0)[None, :]
            scale = torch.tensor(float(width if bins > width else 1), device=device)

        parts: dict[str, list[Tensor]] = {name: [] for name in want}
        for start in range(0, num_queries, chunk):
            stop = min(start + chunk, num_queries)
            rows = torch.arange(stop - start, device=device)
            sim = qn[start:stop] @ dn.T
            if exclude_self:
                sim[rows, rows + start] = -math.inf
            top = _ranked_top_k(sim, max_k)
            del sim

            yq = yq_all[start:stop]
            out: dict[str, Tensor] = {}

            if 'AP_label' in want:
                # Only the (query, label) pairs where the query carries the label.
                pair_q, pair_c = yq.nonzero(as_tuple=True)
                rel_pairs = yd_all[top[pair_q], pair_c[:, None]].to(acc)  # [P, K]
                ap = torch.full(
                    (stop - start, len(ks), num_labels),
                    math.nan,
                    dtype=acc,
                    device=device,
                )
                ap[pair_q, :, pair_c] = _average_precision(
                    rel_pairs, positions, columns
                )
                out['AP_label'] = ap

            if need_inter:
                yd_top = yd_all[top]  # [b, K, C]
                inter = torch.bmm(yd_top, yq[:, :, None]).squeeze(2).to(acc)
                q_size = yq.sum(dim=1).to(acc)
                rel_any = (inter > 0).to(acc)
                jac = inter
                rel_jac = rel_any
                if need_jaccard:
                    union = q_size[:, None] + d_size[top].to(acc) - inter
                    jac = torch.where(union > 0, inter / union.clamp_min(1), 0.0)
                    rel_jac = (jac >= jaccard_threshold).to(acc)
                acg_i = inter.cumsum(dim=1) / positions
                if 'ACG' in want:
                    out['ACG'] = acg_i.index_select(1, columns)

                for suffix in ('', '_jaccard'):
                    if not want & {f'P{suffix}', f'AP{suffix}', f'WAP{suffix}'}:
                        continue
                    rel = rel_jac if suffix else rel_any
                    found = rel.cumsum(dim=1).index_select(1, columns)
                    if f'P{suffix}' in want:
                        out[f'P{suffix}'] = found / k_values
                    if f'AP{suffix}' in want:
                        out[f'AP{suffix}'] = _average_precision(rel, positions, columns)
                    if f'WAP{suffix}' in want:
                        weighted = (rel * acg_i).cumsum(dim=1).index_select(1, columns)
                        out[f'WAP{suffix}'] = torch.where(
                            found > 0, weighted / found.clamp_min(1), 0.0
                        )

                if need_ideal:
                    key = torch.addcmul(p_key, yq @ patterns.T, scale).long()
                    counts = torch.zeros(
                        (stop - start, bins), dtype=torch.long, device=device
                    )
                    counts.scatter_add_(1, key, pattern_counts.expand(key.shape))
                    del key
                    if exclude_self:
                        # The query itself: |q| shared labels and |q| labels.
                        self_key = q_size.long()
                        if bins > width:
                            self_key = self_key * (width + 1)
                        counts[rows, self_key] -= 1
                    for suffix in ('', '_jaccard'):
                        if f'NDCG{suffix}' not in want:
                            continue
                        if suffix:
                            bin_union = q_size[:, None] + bin_size - bin_inter
                            bin_gain = torch.where(
                                bin_union > 0, bin_inter / bin_union.clamp_min(1), 0.0
                            )
                            gain = jac
                        else:
                            bin_gain = (torch.exp2(bin_inter) - 1.0).expand(
                                stop - start, bins
                            )
                            gain = torch.exp2(inter) - 1.0
                        ideal = _ideal_gains(counts, bin_gain, positions.long(), max_k)
                        dcg = (gain * discount).cumsum(dim=1).index_select(1, columns)
                        idcg = (ideal * discount).cumsum(dim=1).index_select(1, columns)
                        out[f'NDCG{suffix}'] = torch.where(
                            idcg > 0, dcg / torch.where(idcg > 0, idcg, 1.0), 0.0
                        )

            for name in want:
                parts[name].append(out[name])

        return {name: torch.cat(values) for name, values in parts.items()}


def _label_mean(values: Tensor, carried: Tensor) -> Tensor:
    """Mean over the queries carrying each label of ``values`` [Q, ..., C]."""
    count = carried.sum(dim=0).to(values.dtype)
    while carried.ndim < values.ndim:
        carried = carried.unsqueeze(1)
        count = count.unsqueeze(0)
    total = torch.where(carried, values, 0.0).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), math.nan)


def _check_options(relevance: str, reduction: str) -> None:
    if relevance not in ('any', 'jaccard'):
        raise ValueError(f"relevance must be 'any' or 'jaccard', got {relevance!r}")
    if reduction not in ('mean', 'none'):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _single(
    base: str,
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    exclude_self: bool,
    relevance: str,
    jaccard_threshold: float,
    reduction: str,
    chunk_size: int | None,
) -> Tensor:
    """Evaluate one metric at one ``k``.

    ``base`` is a name of :func:`_per_query` without the ``_jaccard`` suffix, which
    ``relevance='jaccard'`` adds for the metrics that have a Jaccard variant.
    """
    _check_options(relevance, reduction)
    k = check_positive_int(k, 'k')
    name = base
    if relevance == 'jaccard' and base not in ('ACG', 'AP_label'):
        name += '_jaccard'
    values = _per_query(
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        (k,),
        exclude_self=exclude_self,
        jaccard_threshold=jaccard_threshold,
        chunk_size=chunk_size,
        want=frozenset({name}),
    )[name][:, 0]
    if reduction == 'none':
        return values
    if name == 'AP_label':
        return _label_mean(values, query_labels.to(values.device).bool())
    return values.mean()


# ----------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------


def precision_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Precision at k: fraction of relevant items among the top ``k``.

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: ``'any'`` (shares at least one label) or ``'jaccard'`` (Jaccard
            index of the label sets ``>= jaccard_threshold``).
        jaccard_threshold: Threshold in (0, 1] for ``relevance='jaccard'``.
        reduction: ``'mean'`` over queries (0-dim tensor) or ``'none'`` ([Q]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        P@k (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'P',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def mean_average_precision_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Mean average precision at k (torchmetrics ``RetrievalMAP(top_k=k)``).

    ``AP@k = (1 / R_k) sum_{i<=k} rel_i P@i`` with ``R_k`` the relevant items in the
    top ``k``; 0 for a query with no relevant item in its top ``k``.

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: ``'any'`` (shares at least one label) or ``'jaccard'`` (Jaccard
            index of the label sets ``>= jaccard_threshold``).
        jaccard_threshold: Threshold in (0, 1] for ``relevance='jaccard'``.
        reduction: ``'mean'`` over queries (0-dim tensor) or ``'none'`` (AP@k, [Q]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        mAP@k (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'AP',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def weighted_average_precision_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Weighted average precision at k.

    ``WAP@k = (1 / R_k) sum_{i<=k} rel_i ACG@i`` (0 when ``R_k = 0``); ``relevance``
    chooses ``rel_i``, while ACG always counts shared labels.

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: ``'any'`` (shares at least one label) or ``'jaccard'`` (Jaccard
            index of the label sets ``>= jaccard_threshold``).
        jaccard_threshold: Threshold in (0, 1] for ``relevance='jaccard'``.
        reduction: ``'mean'`` over queries (0-dim tensor) or ``'none'`` ([Q]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        WAP@k (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'WAP',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def average_cumulative_gain_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Average cumulative gain at k: ``ACG@k = (1 / k) sum_{i<=k} C(q, i)``.

    ACG counts shared labels, so it does not depend on ``relevance`` or
    ``jaccard_threshold`` (accepted for a signature shared by all metrics).

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: Validated, no effect.
        jaccard_threshold: No effect.
        reduction: ``'mean'`` over queries (0-dim tensor) or ``'none'`` ([Q]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        ACG@k (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'ACG',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def ndcg_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Normalised discounted cumulative gain at k.

    Gain ``2^C - 1`` (``relevance='any'``) or the Jaccard index ``J``
    (``relevance='jaccard'``; graded, so ``jaccard_threshold`` has no effect),
    discount ``1 / log2(i + 1)``; the ideal DCG comes from ordering the whole
    database (itself excluded with ``exclude_self``) by gain. A query whose ideal
    DCG is 0 scores 0.

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: ``'any'`` (exponential gain of shared labels) or ``'jaccard'``
            (gain ``J``).
        jaccard_threshold: No effect (the Jaccard gain is graded).
        reduction: ``'mean'`` over queries (0-dim tensor) or ``'none'`` ([Q]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        NDCG@k (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'NDCG',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def per_label_average_precision_at_k(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    relevance: Relevance = 'any',
    jaccard_threshold: float = 0.5,
    reduction: Reduction = 'mean',
    chunk_size: int | None = None,
) -> Tensor:
    """Per-label mean average precision at k.

    For label ``c``, the queries carrying ``c`` are scored with relevance "the
    retrieved item carries ``c``" (so ``relevance`` and ``jaccard_threshold`` have
    no effect), and their AP@k is averaged.

    Undefined entries are NaN, never 0: with ``reduction='mean'`` a label that no
    query carries (mask: ``query_labels.bool().any(dim=0)``); with
    ``reduction='none'`` the pairs whose query does not carry the label (mask:
    ``query_labels.bool()``). Select with the mask before averaging over labels.

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        k: Number of retrieved items, ``1 <= k <= N`` (``N - 1`` with
            ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        relevance: Validated, no effect.
        jaccard_threshold: No effect.
        reduction: ``'mean'`` over the queries carrying each label ([C]) or
            ``'none'`` ([Q, C]).
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        Per-label mAP@k [C] or per-query, per-label AP@k [Q, C] (float64; float32
        on MPS).

    Raises:
        ValueError: For an empty database or query set, ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an unknown option.
        TypeError: For inputs that are not floating point tensors.
    """
    return _single(
        'AP_label',
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        k,
        exclude_self,
        relevance,
        jaccard_threshold,
        reduction,
        chunk_size,
    )


def retrieval_metrics(
    query_embeddings: Tensor,
    query_labels: Tensor,
    database_embeddings: Tensor,
    database_labels: Tensor,
    ks: Iterable[int] = (10, 20, 50, 100),
    *,
    exclude_self: bool = False,
    jaccard: bool = True,
    jaccard_threshold: float = 0.5,
    rare_fraction: float = 1 / 3,
    per_label: bool = False,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """All retrieval metrics at several k from a single ranking.

    Keys, for each ``k`` in ``ks``: ``'P@k'``, ``'mAP@k'``, ``'WAP@k'``,
    ``'ACG@k'``, ``'NDCG@k'``, ``'rare_mAP@k'`` and, with ``jaccard``,
    ``'P_jaccard@k'``, ``'mAP_jaccard@k'``, ``'WAP_jaccard@k'``,
    ``'NDCG_jaccard@k'`` (0-dim tensors; see the module docstring for the
    formulas).

    ``rare_mAP@k`` is the mean per-label mAP@k over the rarest labels: the labels
    carried by at least one query are sorted by their database frequency (ties by
    lower label index) and the first ``ceil(rare_fraction * L)`` of them are kept,
    ``L`` being the number of such labels. It is 0 when no query carries a label.

    With ``per_label=True`` the dict also holds ``'AP_label@k'`` (per-label mAP@k,
    [C], NaN for labels that no query carries) and ``'label_has_query'`` ([C] bool,
    the labels that have a defined per-label mAP).

    Args:
        query_embeddings: Query embeddings [Q, D] (any scale; normalised inside).
        query_labels: Multi-hot query labels [Q, C].
        database_embeddings: Database embeddings [N, D], same device as the queries.
        database_labels: Multi-hot database labels [N, C].
        ks: Cut-offs, each ``1 <= k <= N`` (``N - 1`` with ``exclude_self``).
        exclude_self: Leave-one-out: query ``i`` is database item ``i`` (needs
            ``Q == N``) and is removed from its own ranking.
        jaccard: Also compute the Jaccard-relevance variants.
        jaccard_threshold: Threshold in (0, 1] for Jaccard relevance.
        rare_fraction: Fraction in (0, 1] of labels counted as rare.
        per_label: Add the per-label mAP vectors and the label mask.
        chunk_size: Queries ranked at once (default: blocks of about 2**24
            similarity entries).

    Returns:
        The metrics by name (float64; float32 on MPS).

    Raises:
        ValueError: For an empty database or query set, a ``k`` out of range,
            mismatched shapes, label widths or devices, labels other than 0/1,
            non-finite embeddings, or an option out of range.
        TypeError: For inputs that are not floating point tensors.
    """
    ks = check_ks(ks)
    check_fraction(rare_fraction, 'rare_fraction')
    want = {'P', 'AP', 'WAP', 'ACG', 'NDCG', 'AP_label'}
    if jaccard:
        want |= {'P_jaccard', 'AP_jaccard', 'WAP_jaccard', 'NDCG_jaccard'}
    per = _per_query(
        query_embeddings,
        query_labels,
        database_embeddings,
        database_labels,
        ks,
        exclude_self=exclude_self,
        jaccard_threshold=jaccard_threshold,
        chunk_size=chunk_size,
        want=frozenset(want),
    )
    device = per['AP'].device
    carried = query_labels.to(device).bool()
    label_ap = _label_mean(per.pop('AP_label'), carried)  # [len(ks), C]
    has_query = carried.any(dim=0)

    # Rarest labels among those with at least one query.
    frequency = database_labels.to(device).to(torch.float64).sum(dim=0)
    candidates = has_query.nonzero().squeeze(1)
    order = frequency[candidates].sort(stable=True).indices
    n_rare = math.ceil(rare_fraction * candidates.numel() - 1e-9)
    rare = candidates[order[:n_rare]]

    means = {name: values.mean(dim=0) for name, values in per.items()}
    names = [('P', 'P'), ('mAP', 'AP'), ('WAP', 'WAP'), ('ACG', 'ACG')]
    names += [('NDCG', 'NDCG')]
    if jaccard:
        names += [
            ('P_jaccard', 'P_jaccard'),
            ('mAP_jaccard', 'AP_jaccard'),
            ('WAP_jaccard', 'WAP_jaccard'),
            ('NDCG_jaccard', 'NDCG_jaccard'),
        ]
    result: dict[str, Tensor] = {}
    for j, k in enumerate(ks):
        for key, name in names:
            result[f'{key}@{k}'] = means[name][j]
        if rare.numel():
            result[f'rare_mAP@{k}'] = label_ap[j, rare].mean()
        else:
            result[f'rare_mAP@{k}'] = label_ap.new_zeros(())
        if per_label:
            result[f'AP_label@{k}'] = label_ap[j]
    if per_label:
        result['label_has_query'] = has_query
    return result
