import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from torchgeo_macl.metrics import RetrievalMetrics, retrieval_metrics

KS = (1, 5, 10)
WORLD_SIZE = 2
BATCH = 7


def make_split(seed: int, n: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (torch.rand(n, 5, generator=g) < 0.35).long()
    x[n // 2 : n // 2 + 3] = x[:3]  # exact ties
    return x, y


def rank_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices one rank sees, as torch's DistributedSampler(shuffle=False) pads them."""
    total = -(-n // world_size) * world_size
    indices = list(range(n))
    indices += indices[: total - n]
    return indices[rank:total:world_size]


def feed(
    metric: RetrievalMetrics,
    x: Tensor,
    y: Tensor,
    indices: list[int],
    database: bool = False,
    with_indexes: bool = True,
) -> None:
    for start in range(0, len(indices), BATCH):
        batch = torch.tensor(indices[start : start + BATCH], dtype=torch.long)
        metric.update(
            x[batch], y[batch], batch if with_indexes else None, database=database
        )


def to_floats(out: dict[str, Tensor]) -> dict[str, float]:
    return {key: value.item() for key, value in out.items()}


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD_SIZE
    )
    try:
        x, y = make_split(0, 45)  # 45 items: the sampler pads rank 1 with item 0
        loo = RetrievalMetrics(ks=KS, leave_one_out=True)
        feed(loo, x, y, rank_indices(45, rank, WORLD_SIZE))
        queries, query_labels = make_split(1, 23)
        database, database_labels = make_split(2, 41)
        split = RetrievalMetrics(ks=KS, leave_one_out=False)
        feed(split, queries, query_labels, rank_indices(23, rank, WORLD_SIZE))
        feed(
            split,
            database,
            database_labels,
            rank_indices(41, rank, WORLD_SIZE),
            database=True,
        )
        results = {'loo': to_floats(loo.compute()), 'split': to_floats(split.compute())}
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        port: int = s.getsockname()[1]
        return port


def test_ddp_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(
        ddp_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True
    )
    x, y = make_split(0, 45)
    loo = retrieval_metrics(x, y, x, y, KS, exclude_self=True)
    queries, query_labels = make_split(1, 23)
    database, database_labels = make_split(2, 41)
    split = retrieval_metrics(queries, query_labels, database, database_labels, KS)
    expected = {'loo': to_floats(loo), 'split': to_floats(split)}
    for rank in range(WORLD_SIZE):
        with open(tmp_path / f'rank{rank}.json') as f:
            got = json.load(f)
        assert got == expected  # identical, not just close


def test_accumulates_like_the_function() -> None:
    x, y = make_split(3, 50)
    metric = RetrievalMetrics(ks=KS)
    feed(metric, x, y, list(range(50)), with_indexes=False)
    out = metric.compute()
    expected = retrieval_metrics(x, y, x, y, KS, exclude_self=True)
    assert out.keys() == expected.keys()
    for key in out:
        assert torch.equal(out[key], expected[key])
        assert out[key].ndim == 0


def test_indexes_sort_and_drop_duplicates() -> None:
    x, y = make_split(4, 30)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0)).tolist()
    order += [order[0], order[5], order[5]]  # padding repeats
    metric = RetrievalMetrics(ks=KS)
    feed(metric, x, y, order)
    expected = retrieval_metrics(x, y, x, y, KS, exclude_self=True)
    for key, value in metric.compute().items():
        assert torch.equal(value, expected[key])


def test_queries_and_database() -> None:
    queries, query_labels = make_split(5, 12)
    database, database_labels = make_split(6, 33)
    metric = RetrievalMetrics(ks=(3, 20), leave_one_out=False, jaccard=False)
    feed(metric, database, database_labels, list(range(33)), database=True)
    feed(metric, queries, query_labels, list(range(12)))
    out = metric.compute()
    expected = retrieval_metrics(
        queries, query_labels, database, database_labels, (3, 20), jaccard=False
    )
    assert out.keys() == expected.keys()
    for key in out:
        assert torch.equal(out[key], expected[key])
    # forward only accumulates
    metric.reset()
    assert metric(queries, query_labels) is None
    assert metric(database, database_labels, database=True) is None
    for key, value in metric.compute().items():
        assert torch.equal(value, expected[key])


def test_leave_one_out_ignores_database_flag() -> None:
    x, y = make_split(7, 20)
    metric = RetrievalMetrics(ks=(2,))
    metric.update(x[:10], y[:10], database=True)
    metric.update(x[10:], y[10:])
    expected = retrieval_metrics(x, y, x, y, (2,), exclude_self=True)
    for key, value in metric.compute().items():
        assert torch.equal(value, expected[key])


def test_errors() -> None:
    x, y = make_split(8, 20)
    with (
        pytest.warns(UserWarning, match='before the ``update``'),
        pytest.raises(ValueError, match='without any embeddings'),
    ):
        RetrievalMetrics(ks=(2,)).compute()
    metric = RetrievalMetrics(ks=(2,), leave_one_out=False)
    metric.update(x, y)
    with pytest.raises(ValueError, match='without any database embeddings'):
        metric.compute()
    metric = RetrievalMetrics(ks=(2,))
    metric.update(x[:10], y[:10], torch.arange(10))
    metric.update(x[10:], y[10:])
    with pytest.raises(ValueError, match='indexes were given for 10 of 20'):
        metric.compute()
    metric = RetrievalMetrics(ks=(50,))
    metric.update(x, y)
    with pytest.raises(ValueError, match='k=50 is larger than the 19'):
        metric.compute()
    with pytest.raises(ValueError, match='shape'):
        metric.update(x, y[:3])
    with pytest.raises(ValueError, match='indexes must have shape'):
        metric.update(x, y, torch.arange(3))
    with pytest.raises(ValueError, match='integers'):
        metric.update(x, y, torch.zeros(20))
    with pytest.raises(ValueError, match='jaccard_threshold'):
        RetrievalMetrics(jaccard_threshold=2.0)
    with pytest.raises(ValueError, match='rare_fraction'):
        RetrievalMetrics(rare_fraction=0.0)
    with pytest.raises(ValueError, match='chunk_size'):
        RetrievalMetrics(chunk_size=0)
    with pytest.raises(ValueError, match='positive integer'):
        RetrievalMetrics(ks=(0,))


def test_metric_attributes() -> None:
    assert RetrievalMetrics.full_state_update is False
    assert RetrievalMetrics.higher_is_better is True
    metric = RetrievalMetrics()
    assert metric.ks == (10, 20, 50, 100)


def test_cutoffs_larger_than_the_database() -> None:
    x, y = make_split(2, 12)
    metric = RetrievalMetrics(ks=(5, 20, 50), leave_one_out=True, clip_ks=True)
    feed(metric, x, y, list(range(12)))
    assert metric.num_retrievable() == 11
    with pytest.warns(UserWarning, match=r'cut-offs \[20, 50\] exceed the 11 items'):
        out = metric.compute()
    expected = retrieval_metrics(x, y, x, y, (5, 11), exclude_self=True)
    for name in ('mAP', 'NDCG', 'rare_mAP', 'mAP_jaccard'):
        assert out[f'{name}@5'] == expected[f'{name}@5']
        assert out[f'{name}@20'] == expected[f'{name}@11']
        assert out[f'{name}@50'] == expected[f'{name}@11']
    assert not any(key.endswith('@11') for key in out)


def test_per_label_results() -> None:
    xq, yq = make_split(3, 9)
    xd, yd = make_split(4, 20)
    metric = RetrievalMetrics(ks=(5, 10), leave_one_out=False, per_label=True)
    feed(metric, xq, yq, list(range(9)))
    feed(metric, xd, yd, list(range(20)), database=True)
    out = metric.compute()
    expected = retrieval_metrics(xq, yq, xd, yd, (5, 10), per_label=True)
    for k in (5, 10):
        torch.testing.assert_close(
            out[f'AP_label@{k}'], expected[f'AP_label@{k}'], equal_nan=True
        )
        assert out[f'mAP@{k}'] == expected[f'mAP@{k}']
    assert torch.equal(out['label_has_query'], yq.bool().any(dim=0))
    torch.testing.assert_close(out['database_label_frequency'], yd.float().mean(0))
    assert int(out['num_queries']) == 9
    assert int(out['num_database']) == 20


def test_nothing_to_retrieve() -> None:
    x, y = make_split(5, 1)
    metric = RetrievalMetrics(ks=(5,), leave_one_out=True)
    assert metric.num_retrievable() == 0
    metric.update(x, y, torch.tensor([0]))
    assert metric.num_retrievable() == 0
    with pytest.raises(ValueError, match='at least one item to retrieve'):
        metric.compute()
