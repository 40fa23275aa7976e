import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score
from torch import Tensor
from torchmetrics.retrieval import RetrievalMAP

from torchgeo_macl.metrics import (
    average_cumulative_gain_at_k,
    mean_average_precision_at_k,
    ndcg_at_k,
    per_label_average_precision_at_k,
    precision_at_k,
    retrieval_metrics,
    weighted_average_precision_at_k,
)
from torchgeo_macl.metrics.functional import _ranked_top_k

METRICS: dict[str, Callable[..., Tensor]] = {
    'P': precision_at_k,
    'mAP': mean_average_precision_at_k,
    'WAP': weighted_average_precision_at_k,
    'ACG': average_cumulative_gain_at_k,
    'NDCG': ndcg_at_k,
}
LOG3 = math.log2(3)


# ----------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------


def random_data(
    seed: int,
    num_queries: int = 25,
    num_items: int = 60,
    dim: int = 6,
    num_labels: int = 5,
    duplicates: int = 6,
    same_labels: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random float64 data; database rows [10, 10 + duplicates) repeat rows [0, ...).

    The repeated rows create exact score ties; with ``same_labels`` they also repeat
    the labels (so every tie order gives the same metric values).
    """
    g = torch.Generator().manual_seed(seed)
    qe = torch.randn(num_queries, dim, generator=g, dtype=torch.float64)
    de = torch.randn(num_items, dim, generator=g, dtype=torch.float64)
    ql = (torch.rand(num_queries, num_labels, generator=g) < 0.35).long()
    dl = (torch.rand(num_items, num_labels, generator=g) < 0.35).long()
    ql[0] = 0  # a query without labels: nothing is relevant
    de[10 : 10 + duplicates] = de[:duplicates]
    if same_labels:
        dl[10 : 10 + duplicates] = dl[:duplicates]
    return qe, ql, de, dl


def tiny_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """4 queries x 6 items with hand-chosen rankings (see the expected values).

    Database items are one-hot embeddings, so query scores are proportional to
    the query vectors. Rankings: q0 d0 d1 d2 d3 d4 d5; q1 d3 d0 d5 d1 d2 d4;
    q2 d5 d4 d3 d2 d1 d0; q3 d1 {d2 = d3 tied} d0 d4 d5 -> d1 d2 d3 d0 d4 d5.
    """
    de = torch.eye(6, dtype=torch.float64)
    qe = torch.tensor(
        [
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
            [5.0, 3.0, 2.0, 6.0, 1.0, 4.0],
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [1.0, 3.0, 2.0, 2.0, 0.5, 0.25],
        ],
        dtype=torch.float64,
    )
    dl = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]]
    )
    ql = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    return qe, ql, de, dl


# ----------------------------------------------------------------------------------
# Reference implementations: slow loops written from the formulas
# ----------------------------------------------------------------------------------


def ref_rankings(qe: Tensor, de: Tensor, exclude_self: bool) -> list[list[int]]:
    q = qe.double().numpy()
    d = de.double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sim = q @ d.T
    rankings = []
    for i in range(len(q)):
        items = [j for j in range(len(d)) if not (exclude_self and i == j)]
        items.sort(key=lambda j: (-sim[i, j], j))
        rankings.append(items)
    return rankings


def ref_metrics(
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    k: int,
    exclude_self: bool = False,
    relevance: str = 'any',
    threshold: float = 0.5,
) -> dict[str, list[float]]:
    """Per-query values of every metric, one query and one position at a time."""
    qe, ql, de, dl = data
    out: dict[str, list[float]] = {name: [] for name in [*METRICS, 'AP_label']}
    ranks = ref_rankings(qe, de, exclude_self)
    qls = ql.tolist()
    dls = dl.tolist()

    def shared(a: list[int], b: list[int]) -> int:
        return sum(x and y for x, y in zip(a, b))

    def jaccard(a: list[int], b: list[int]) -> float:
        union = sum(x or y for x, y in zip(a, b))
        return shared(a, b) / union if union else 0.0

    def is_rel(a: list[int], b: list[int]) -> bool:
        if relevance == 'any':
            return shared(a, b) > 0
        return jaccard(a, b) >= threshold

    def gain(a: list[int], b: list[int]) -> float:
        if relevance == 'any':
            return 2.0 ** shared(a, b) - 1.0
        return jaccard(a, b)

    def average_precision(rel: list[bool]) -> float:
        found = sum(rel)
        if found == 0:
            return 0.0
        total = 0.0
        for i in range(1, len(rel) + 1):
            if rel[i - 1]:
                total += sum(rel[:i]) / i
        return total / found

    for qi, ranking in enumerate(ranks):
        y = qls[qi]
        top = ranking[:k]
        rel = [is_rel(y, dls[j]) for j in top]
        counts = [shared(y, dls[j]) for j in top]
        out['P'].append(sum(rel) / k)
        out['mAP'].append(average_precision(rel))
        out['ACG'].append(sum(counts) / k)
        acg = [sum(counts[:i]) / i for i in range(1, k + 1)]
        found = sum(rel)
        out['WAP'].append(
            sum(acg[i] for i in range(k) if rel[i]) / found if found else 0.0
        )
        dcg = sum(gain(y, dls[j]) / math.log2(i + 2) for i, j in enumerate(top))
        ideal = sorted((gain(y, dls[j]) for j in ranking), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        out['NDCG'].append(dcg / idcg if idcg > 0 else 0.0)
        out['AP_label'].append(0.0)  # placeholder, per label below
    per_label = []
    for c in range(ql.shape[1]):
        values = []
        for qi, ranking in enumerate(ranks):
            if qls[qi][c]:
                values.append(average_precision([bool(dls[j][c]) for j in ranking[:k]]))
        per_label.append(sum(values) / len(values) if values else math.nan)
    out['AP_label'] = per_label
    return out


def run(
    name: str, data: tuple[Tensor, Tensor, Tensor, Tensor], k: int, **kwargs: object
) -> Tensor:
    return METRICS[name](*data, k, **kwargs)


# ----------------------------------------------------------------------------------
# Hand-computed tiny case
# ----------------------------------------------------------------------------------

# Per query, k = 3, derived by hand from the rankings and labels in tiny_data().
TINY_K3 = {
    'P': [2 / 3, 2 / 3, 2 / 3, 1 / 3],
    'mAP': [5 / 6, 5 / 6, 1.0, 1 / 3],
    'ACG': [2 / 3, 1.0, 2 / 3, 1 / 3],
    'WAP': [5 / 6, 1.0, 1.0, 1 / 3],
    'NDCG': [
        1.5 / (1.5 + 1 / LOG3),
        2.5 / (3.5 + 1 / LOG3),
        (1 + 1 / LOG3) / (3.5 + 1 / LOG3),
        0.5 / (1.5 + 1 / LOG3),
    ],
}
TINY_JACCARD_K3 = {
    'P': [2 / 3, 2 / 3, 0.0, 1 / 3],
    'mAP': [5 / 6, 5 / 6, 0.0, 1 / 3],
    'WAP': [5 / 6, 1.0, 0.0, 1 / 3],
    'NDCG': [
        1.25 / (1.25 + 0.5 / LOG3),
        1.0 / (1.25 + 0.5 / LOG3),
        (1 / 3 + 1 / 3 / LOG3) / (1.25 + 0.5 / LOG3),
        0.5 / (1.25 + 0.5 / LOG3),
    ],
}


@pytest.mark.parametrize('name', sorted(TINY_K3))
def test_tiny_hand_computed(name: str) -> None:
    values = run(name, tiny_data(), 3, reduction='none')
    expected = torch.tensor(TINY_K3[name], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-12)
    mean = run(name, tiny_data(), 3)
    assert mean.ndim == 0
    torch.testing.assert_close(mean, expected.mean(), rtol=0, atol=1e-12)


@pytest.mark.parametrize('name', sorted(TINY_JACCARD_K3))
def test_tiny_hand_computed_jaccard(name: str) -> None:
    values = run(name, tiny_data(), 3, relevance='jaccard', reduction='none')
    expected = torch.tensor(TINY_JACCARD_K3[name], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-12)


def test_tiny_acg_ignores_relevance() -> None:
    data = tiny_data()
    torch.testing.assert_close(
        run('ACG', data, 3, relevance='jaccard'), run('ACG', data, 3)
    )


def test_tiny_per_label() -> None:
    values = per_label_average_precision_at_k(*tiny_data(), 3)
    # label 0: q0 (5/6), q2 (1/2); label 1: q1 (1/3), q2 (1); label 2: q1 (5/6), q3 (1/3)
    expected = torch.tensor([2 / 3, 2 / 3, 7 / 12], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-12)
    per_query = per_label_average_precision_at_k(*tiny_data(), 3, reduction='none')
    nan = math.nan
    expected_q = torch.tensor(
        [[5 / 6, nan, nan], [nan, 1 / 3, 5 / 6], [0.5, 1.0, nan], [nan, nan, 1 / 3]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(
        per_query, expected_q, rtol=0, atol=1e-12, equal_nan=True
    )


def test_tiny_ties_by_lower_index() -> None:
    # q3: d2 and d3 tie for ranks 2-3; d2 (irrelevant) comes first. At k = 2 the
    # tie straddles the cut-off and d3 must be left out.
    data = tiny_data()
    p2 = precision_at_k(*data, 2, reduction='none')
    assert p2.tolist() == [0.5, 0.5, 1.0, 0.0]
    ap3 = mean_average_precision_at_k(*data, 3, reduction='none')
    assert ap3[3].item() == pytest.approx(1 / 3)  # d3 at rank 3, not rank 2


def test_tiny_retrieval_metrics() -> None:
    out = retrieval_metrics(*tiny_data(), ks=(3,))
    assert set(out) == {
        'P@3',
        'mAP@3',
        'WAP@3',
        'ACG@3',
        'NDCG@3',
        'rare_mAP@3',
        'P_jaccard@3',
        'mAP_jaccard@3',
        'WAP_jaccard@3',
        'NDCG_jaccard@3',
    }
    key = {'P': 'P', 'mAP': 'mAP', 'WAP': 'WAP', 'ACG': 'ACG', 'NDCG': 'NDCG'}
    for name, values in TINY_K3.items():
        assert out[f'{key[name]}@3'].item() == pytest.approx(sum(values) / 4, abs=1e-12)
    for name, values in TINY_JACCARD_K3.items():
        assert out[f'{name}_jaccard@3'].item() == pytest.approx(
            sum(values) / 4, abs=1e-12
        )
    # every label has database frequency 3: the rarest third is label 0 (lower index)
    assert out['rare_mAP@3'].item() == pytest.approx(2 / 3, abs=1e-12)
    for value in out.values():
        assert value.ndim == 0
        assert value.dtype == torch.float64


# ----------------------------------------------------------------------------------
# Independent oracles
# ----------------------------------------------------------------------------------


def torchmetrics_map(
    qe: Tensor, relevant: Tensor, de: Tensor, k: int, exclude_self: bool
) -> float:
    q = qe / qe.norm(dim=1, keepdim=True)
    d = de / de.norm(dim=1, keepdim=True)
    # RetrievalMAP treats scores <= 0 as not retrieved: shift cosines to (1, 3].
    preds = q @ d.T + 2.0
    indexes = torch.arange(len(q))[:, None].expand_as(preds)
    keep = torch.ones_like(preds, dtype=torch.bool)
    if exclude_self:
        keep.fill_diagonal_(False)
    metric = RetrievalMAP(top_k=k)
    metric.update(preds[keep], relevant[keep], indexes=indexes[keep])
    return float(metric.compute())


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('k', [1, 5, 20, 59])
@pytest.mark.parametrize('relevance', ['any', 'jaccard'])
def test_map_equals_torchmetrics(seed: int, k: int, relevance: str) -> None:
    qe, ql, de, dl = random_data(seed, same_labels=True)
    inter = ql.double() @ dl.double().T
    union = ql.sum(1, keepdim=True) + dl.sum(1) - inter
    if relevance == 'any':
        relevant = inter > 0
    else:
        relevant = torch.where(union > 0, inter / union.clamp_min(1), 0.0) >= 0.5
    ours = mean_average_precision_at_k(qe, ql, de, dl, k, relevance=relevance)  # type: ignore[arg-type]
    assert ours.item() == pytest.approx(
        torchmetrics_map(qe, relevant, de, k, False), abs=1e-6
    )


@pytest.mark.parametrize('seed', [3, 4])
def test_map_equals_torchmetrics_leave_one_out(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(40, 4, generator=g) < 0.3).long()
    x[20:25] = x[:5]
    y[20:25] = y[:5]
    relevant = (y.double() @ y.double().T) > 0
    for k in (1, 10, 39):
        ours = mean_average_precision_at_k(x, y, x, y, k, exclude_self=True)
        assert ours.item() == pytest.approx(
            torchmetrics_map(x, relevant, x, k, True), abs=1e-6
        )


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('exclude_self', [False, True])
def test_ndcg_jaccard_equals_sklearn(seed: int, exclude_self: bool) -> None:
    qe, ql, de, dl = random_data(seed, num_queries=60, same_labels=True)
    if exclude_self:
        qe, ql = de, dl
    inter = ql.double() @ dl.double().T
    union = ql.sum(1, keepdim=True) + dl.sum(1) - inter
    gains = torch.where(union > 0, inter / union.clamp_min(1), 0.0)
    q = qe / qe.norm(dim=1, keepdim=True)
    d = de / de.norm(dim=1, keepdim=True)
    scores = q @ d.T
    if exclude_self:
        keep = ~torch.eye(len(q), dtype=torch.bool)
        gains = gains[keep].view(len(q), -1)
        scores = scores[keep].view(len(q), -1)
    for k in (1, 7, 30):
        expected = ndcg_score(gains.numpy(), scores.numpy(), k=k)
        ours = ndcg_at_k(
            qe, ql, de, dl, k, relevance='jaccard', exclude_self=exclude_self
        )
        assert ours.item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize('seed', [0, 5])
@pytest.mark.parametrize('k', [1, 4, 17, 60])
@pytest.mark.parametrize('relevance', ['any', 'jaccard'])
def test_equals_reference_loops(seed: int, k: int, relevance: str) -> None:
    data = random_data(seed)  # duplicated embeddings with different labels
    expected = ref_metrics(data, k, relevance=relevance)
    for name in METRICS:
        ours = run(name, data, k, relevance=relevance, reduction='none')
        torch.testing.assert_close(
            ours, torch.tensor(expected[name], dtype=torch.float64), rtol=0, atol=1e-12
        )
    per_label = per_label_average_precision_at_k(*data, k)
    torch.testing.assert_close(
        per_label,
        torch.tensor(expected['AP_label'], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
        equal_nan=True,
    )


@pytest.mark.parametrize('k', [1, 9, 39])
def test_equals_reference_loops_leave_one_out(k: int) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(40, 4, generator=g) < 0.4).long()
    x[30:36] = x[:6]
    expected = ref_metrics((x, y, x, y), k, exclude_self=True)
    for name in METRICS:
        ours = run(name, (x, y, x, y), k, exclude_self=True, reduction='none')
        torch.testing.assert_close(
            ours, torch.tensor(expected[name], dtype=torch.float64), rtol=0, atol=1e-12
        )


def test_ranked_top_k_matches_stable_sort() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (50, 30), generator=g).float()  # many ties
    scores[0] = 1.0  # a row that is one big tie
    order = torch.sort(-scores, dim=1, stable=True).indices
    for k in (1, 2, 7, 29, 30):
        assert torch.equal(_ranked_top_k(scores.clone(), k), order[:, :k])


def test_retrieval_metrics_matches_single_functions() -> None:
    data = random_data(7)
    ks = (1, 5, 20)
    out = retrieval_metrics(*data, ks=ks, per_label=True)
    keys = {'P', 'mAP', 'WAP', 'ACG', 'NDCG'}
    jaccard_keys = {'P', 'mAP', 'WAP', 'NDCG'}
    expected_keys = {f'{n}@{k}' for n in [*keys, 'rare_mAP', 'AP_label'] for k in ks}
    expected_keys |= {f'{n}_jaccard@{k}' for n in jaccard_keys for k in ks}
    assert set(out) == expected_keys | {'label_has_query'}
    for k in ks:
        for name in keys:
            torch.testing.assert_close(
                out[f'{name}@{k}'], run(name, data, k), rtol=0, atol=1e-12
            )
        for name in jaccard_keys:
            torch.testing.assert_close(
                out[f'{name}_jaccard@{k}'],
                run(name, data, k, relevance='jaccard'),
                rtol=0,
                atol=1e-12,
            )
        per_label = per_label_average_precision_at_k(*data, k)
        torch.testing.assert_close(out[f'AP_label@{k}'], per_label, equal_nan=True)
    assert torch.equal(out['label_has_query'], data[1].bool().any(0))
    without = retrieval_metrics(*data, ks=ks, jaccard=False)
    assert set(without) == {f'{n}@{k}' for n in [*keys, 'rare_mAP'] for k in ks}


def test_rare_label_map() -> None:
    g = torch.Generator().manual_seed(3)
    qe = torch.randn(30, 4, generator=g, dtype=torch.float64)
    de = torch.randn(50, 4, generator=g, dtype=torch.float64)
    ql = (torch.rand(30, 7, generator=g) < 0.4).long()
    ql[:, 6] = 0  # label 6 has no query: never part of the rare labels
    dl = torch.zeros(50, 7, dtype=torch.long)
    # database frequencies 1, 2, ..., 7 for labels 0..6 (label 6 the most frequent
    # would not matter anyway); label 2 and 3 get swapped to test the sorting
    for c, count in enumerate([1, 2, 4, 3, 5, 6, 7]):
        dl[torch.randperm(50, generator=g)[:count], c] = 1
    per_label = per_label_average_precision_at_k(qe, ql, de, dl, 10)
    assert torch.isnan(per_label[6])
    for fraction, rare in [
        (1 / 3, [0, 1]),
        (0.5, [0, 1, 3]),
        (1.0, [0, 1, 2, 3, 4, 5]),
    ]:
        out = retrieval_metrics(qe, ql, de, dl, ks=(10,), rare_fraction=fraction)
        assert out['rare_mAP@10'].item() == pytest.approx(
            per_label[rare].mean().item(), abs=1e-12
        )


def test_exclude_self_equals_removing_the_item() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(15, 3, generator=g, dtype=torch.float64)
    y = (torch.rand(15, 4, generator=g) < 0.4).long()
    loo = retrieval_metrics(x, y, x, y, ks=(3, 14), exclude_self=True)
    for name, fn in METRICS.items():
        per_query = fn(x, y, x, y, 3, exclude_self=True, reduction='none')
        manual = []
        for i in range(15):
            keep = torch.arange(15) != i
            manual.append(fn(x[i : i + 1], y[i : i + 1], x[keep], y[keep], 3))
        torch.testing.assert_close(per_query, torch.stack(manual), rtol=0, atol=1e-12)
        torch.testing.assert_close(loo[f'{name}@3'], per_query.mean())


# ----------------------------------------------------------------------------------
# Numerics
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize('chunk_size', [1, 7, 1000])
def test_chunked_equals_unchunked(chunk_size: int) -> None:
    data = random_data(4, num_queries=40)
    full = retrieval_metrics(*data, ks=(1, 10, 50), per_label=True)
    chunked = retrieval_metrics(
        *data, ks=(1, 10, 50), per_label=True, chunk_size=chunk_size
    )
    assert full.keys() == chunked.keys()
    for key in full:
        torch.testing.assert_close(
            chunked[key], full[key], rtol=0, atol=1e-12, equal_nan=True
        )


def test_float32_equals_float64() -> None:
    qe, ql, de, dl = random_data(8, num_queries=50, num_items=200, dim=16, duplicates=0)
    high = retrieval_metrics(qe, ql, de, dl, ks=(5, 50))
    low = retrieval_metrics(qe.float(), ql, de.float(), dl, ks=(5, 50))
    for key in high:
        torch.testing.assert_close(low[key], high[key], rtol=0, atol=1e-6)
    loo_high = retrieval_metrics(de, dl, de, dl, ks=(5, 50), exclude_self=True)
    loo_low = retrieval_metrics(
        de.float(), dl.bool(), de.float(), dl.float(), ks=(5, 50), exclude_self=True
    )
    for key in loo_high:
        torch.testing.assert_close(loo_low[key], loo_high[key], rtol=0, atol=1e-6)


def test_scale_invariant() -> None:
    qe, ql, de, dl = random_data(9)
    a = retrieval_metrics(qe, ql, de, dl, ks=(5,))
    b = retrieval_metrics(qe * 7.5, ql, de * 0.01, dl, ks=(5,))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


# ----------------------------------------------------------------------------------
# Edge cases and errors
# ----------------------------------------------------------------------------------


def test_query_without_relevant_items() -> None:
    qe = torch.randn(3, 4, dtype=torch.float64)
    de = torch.randn(6, 4, dtype=torch.float64)
    ql = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    dl = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 1, 1]] * 2)
    out = retrieval_metrics(qe, ql, de, dl, ks=(1, 6), per_label=True)
    for key, value in out.items():
        if key.startswith('AP_label'):
            assert value[0].item() == 0.0
            assert torch.isnan(value[1:]).all()
        elif key != 'label_has_query':
            assert value.item() == 0.0, key
    assert out['label_has_query'].tolist() == [True, False, False]


def test_k_equal_to_database_size() -> None:
    qe, ql, de, dl = random_data(1)
    value = precision_at_k(qe, ql, de, dl, 60, reduction='none')
    relevant = (ql.double() @ dl.double().T > 0).double().mean(1)
    torch.testing.assert_close(value, relevant)
    # NDCG at k = N orders the whole database: ideal and retrieved sets coincide
    assert (ndcg_at_k(qe, ql, de, dl, 60, reduction='none') <= 1 + 1e-12).all()


def test_errors() -> None:
    qe, ql, de, dl = random_data(0)
    with pytest.raises(ValueError, match='k=61 is larger than the 60'):
        precision_at_k(qe, ql, de, dl, 61)
    with pytest.raises(ValueError, match='itself excluded'):
        precision_at_k(de, dl, de, dl, 60, exclude_self=True)
    with pytest.raises(ValueError, match='database is empty'):
        precision_at_k(qe, ql, de[:0], dl[:0], 1)
    with pytest.raises(ValueError, match='no queries'):
        precision_at_k(qe[:0], ql[:0], de, dl, 1)
    with pytest.raises(ValueError, match='5 labels but database_labels have 4'):
        precision_at_k(qe, ql, de, dl[:, :4], 1)
    with pytest.raises(ValueError, match='dimension 6 but database_embeddings have'):
        precision_at_k(qe, ql, de[:, :3], dl, 1)
    with pytest.raises(ValueError, match='database_labels has 59 rows'):
        precision_at_k(qe, ql, de, dl[:59], 1)
    bad = dl.clone()
    bad[3, 2] = 2
    with pytest.raises(ValueError, match='database_labels must be multi-hot'):
        mean_average_precision_at_k(qe, ql, de, bad, 1)
    with pytest.raises(ValueError, match='query_labels must be multi-hot'):
        mean_average_precision_at_k(qe, ql.unsqueeze(0), de, dl, 1)
    nan = qe.clone()
    nan[2, 1] = math.nan
    with pytest.raises(ValueError, match='query_embeddings contains NaN'):
        ndcg_at_k(nan, ql, de, dl, 3)
    inf = de.clone()
    inf[0, 0] = math.inf
    with pytest.raises(ValueError, match='database_embeddings contains NaN'):
        ndcg_at_k(qe, ql, inf, dl, 3)
    with pytest.raises(ValueError, match='25 queries and 60 database items'):
        precision_at_k(qe, ql, de, dl, 3, exclude_self=True)
    with pytest.raises(ValueError, match='positive integer'):
        precision_at_k(qe, ql, de, dl, 0)
    with pytest.raises(TypeError, match='positive integer'):
        precision_at_k(qe, ql, de, dl, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='floating point'):
        precision_at_k(qe.long(), ql, de, dl, 2)
    with pytest.raises(ValueError, match='relevance'):
        precision_at_k(qe, ql, de, dl, 2, relevance='all')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='reduction'):
        precision_at_k(qe, ql, de, dl, 2, reduction='sum')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='jaccard_threshold'):
        precision_at_k(qe, ql, de, dl, 2, relevance='jaccard', jaccard_threshold=0.0)
    with pytest.raises(ValueError, match='chunk_size'):
        precision_at_k(qe, ql, de, dl, 2, chunk_size=0)
    with pytest.raises(ValueError, match='rare_fraction'):
        retrieval_metrics(qe, ql, de, dl, ks=(2,), rare_fraction=0.0)
    with pytest.raises(ValueError, match='at least one'):
        retrieval_metrics(qe, ql, de, dl, ks=())
    with pytest.raises(ValueError, match='k=100 is larger'):
        retrieval_metrics(qe, ql, de, dl)
