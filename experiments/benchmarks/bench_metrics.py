#!/usr/bin/env python3
"""Time of the retrieval metrics against torchmetrics' ``RetrievalMAP`` on the CPU.

Data: ``--queries`` x ``--database`` random embeddings (``--dim``), ``--labels``
multi-hot labels (each label with probability 0.15, at least one per item). Every
timed method starts from the same embeddings and ends with the final number:

* ``torchmetrics RetrievalMAP`` (the anchor of the ratios): cosine similarity
  matrix, relevance matrix (any shared label), then ``RetrievalMAP(top_k=k)`` fed
  every (query, item) pair with its query index;
* ``matmul + topk (floor)``: the similarity matmul and ``topk`` alone (at ``k`` and
  at the largest of ``--ks``), a lower bound for any exact method that ranks by
  similarity;
* ``mean_average_precision_at_k``: mAP@k of ``torchgeo_macl.metrics``;
* ``retrieval_metrics (all)``: every metric (P, mAP, WAP, ACG, NDCG, rare-label mAP
  and the Jaccard variants) at every k of ``--ks``, ranked once.

The methods run in rotating order for ``--repeats`` rounds after a warm-up, so that
load from other processes hits them alike; the table shows the median time and the
ratio of the anchor's median to each method's median (how many times faster). The
mAP@k values of torchmetrics and ``torchgeo_macl`` are compared; the check reports
whether any query has tied scores among its top ``k + 1`` items (where the tie order
of torchmetrics is unspecified).

Usage::

    python experiments/benchmarks/bench_metrics.py [--queries 1000] [--database 5000]
        [--dim 64] [--labels 17] [--k 20] [--ks 10 20 50 100] [--repeats 7]
        [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchmetrics
from torchmetrics.retrieval import RetrievalMAP

from torchgeo_macl.metrics import mean_average_precision_at_k, retrieval_metrics


def make_data(
    queries: int, database: int, dim: int, labels: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    qe = torch.randn(queries, dim, generator=g)
    de = torch.randn(database, dim, generator=g)

    def multi_hot(n: int) -> torch.Tensor:
        y = (torch.rand(n, labels, generator=g) < 0.15).long()
        empty = y.sum(1) == 0
        y[empty, torch.randint(0, labels, (int(empty.sum()),), generator=g)] = 1
        return y

    return qe, multi_hot(queries), de, multi_hot(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--queries', type=int, default=1000)
    parser.add_argument('--database', type=int, default=5000)
    parser.add_argument('--dim', type=int, default=64)
    parser.add_argument('--labels', type=int, default=17)
    parser.add_argument('--k', type=int, default=20)
    parser.add_argument('--ks', type=int, nargs='+', default=[10, 20, 50, 100])
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    qe, ql, de, dl = make_data(args.queries, args.database, args.dim, args.labels)
    k = args.k
    indexes = torch.arange(args.queries).repeat_interleave(args.database)

    def torchmetrics_map() -> float:
        q = torch.nn.functional.normalize(qe, dim=1)
        d = torch.nn.functional.normalize(de, dim=1)
        sim = q @ d.T
        relevant = (ql.float() @ dl.float().T) > 0
        metric = RetrievalMAP(top_k=k)
        metric.update(sim.flatten(), relevant.flatten(), indexes=indexes)
        return float(metric.compute())

    def floor(top: int) -> Callable[[], float]:
        def run() -> float:
            q = torch.nn.functional.normalize(qe, dim=1)
            d = torch.nn.functional.normalize(de, dim=1)
            return float((q @ d.T).topk(top, dim=1).values[0, 0])

        return run

    def ours_map() -> float:
        return float(mean_average_precision_at_k(qe, ql, de, dl, k))

    def ours_all() -> float:
        return float(retrieval_metrics(qe, ql, de, dl, args.ks)[f'mAP@{k}'])

    methods: dict[str, Callable[[], float]] = {
        'torchmetrics RetrievalMAP': torchmetrics_map,
        f'matmul + topk({k}) (floor for one k)': floor(k),
        f'mean_average_precision_at_k (k={k})': ours_map,
        f'matmul + topk({max(args.ks)}) (floor for all k)': floor(max(args.ks)),
        f'retrieval_metrics (all, k in {tuple(args.ks)})': ours_all,
    }
    values = {name: fn() for name, fn in methods.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)

    q = torch.nn.functional.normalize(qe, dim=1)
    d = torch.nn.functional.normalize(de, dim=1)
    top = (q @ d.T).topk(k + 1, dim=1).values
    ties = int((top[:, 1:] == top[:, :-1]).any(dim=1).sum())

    anchor = statistics.median(times[names[0]])
    print(
        f'# {args.queries} queries x {args.database} database, dim {args.dim}, '
        f'{args.labels} labels, k = {k}; median of {args.repeats} runs'
    )
    print(
        f'# torch {torch.__version__}, torchmetrics {torchmetrics.__version__}, '
        f'{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}'
    )
    rows = [
        (name, statistics.median(ts) * 1000, anchor / statistics.median(ts))
        for name, ts in times.items()
    ]
    if args.markdown:
        print('| method | median ms | speed-up vs torchmetrics |')
        print('|---|---:|---:|')
        for name, ms, ratio in rows:
            print(f'| {name} | {ms:.1f} | {ratio:.1f}x |')
    else:
        width = max(len(r[0]) for r in rows)
        print(f'{"method":<{width}}  {"median ms":>10}  {"speed-up":>9}')
        for name, ms, ratio in rows:
            print(f'{name:<{width}}  {ms:>10.1f}  {ratio:>8.1f}x')
    tm_value = values[names[0]]
    our_value = values[f'mean_average_precision_at_k (k={k})']
    print(
        f'mAP@{k}: torchmetrics {tm_value:.8f}, torchgeo_macl {our_value:.8f}, '
        f'|diff| {abs(tm_value - our_value):.2e}; queries with tied top-{k + 1} '
        f'scores: {ties}'
    )


if __name__ == '__main__':
    main()
