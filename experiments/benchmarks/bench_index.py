#!/usr/bin/env python3
"""Search throughput and recall of ``EmbeddingIndex`` against raw faiss on the CPU.

Data: clustered synthetic embeddings (``--clusters`` random standard-normal
centres in ``--dim`` dimensions plus Gaussian noise of scale ``--noise``; queries
drawn the same way).

Exact search (``--exact-size`` items): raw faiss ``IndexFlatIP`` searched with
pre-normalised float32 NumPy queries (the anchor) against ``EmbeddingIndex('flat')``
searched with torch queries (normalisation and conversion included). Both return
the top ``--k``; the ratio is queries/s over the anchor's queries/s, and the
positions must be identical.

Approximate search (``--ivf-size`` items): ``EmbeddingIndex('flat')`` on the same
items is the exact reference (queries/s from one timed search after the warm-up,
and ground truth for recall@k); the IVF
index (``--nlist`` lists, trained on ``--train-size`` items) is searched with each
``--nprobe``; the ratio is queries/s over the exact queries/s. ``ivfpq`` (each
``--pq-m``: bytes per code) is built on the same items, searched with the largest
``--nprobe`` and reported with its memory per vector (size of the serialised index
/ items). With ``--hnsw-size`` an HNSW
index of that many items is also measured (against exact search at that size).

Timings are medians of ``--repeats`` (``--exact-repeats`` for the comparison with
raw faiss) searches of all the queries at once, methods in rotating order after a
warm-up.

Usage::

    python experiments/benchmarks/bench_index.py [--exact-size 100000]
        [--ivf-size 1000000] [--dim 128] [--queries 1000] [--k 10]
        [--nlist 1024] [--nprobe 1 4 16 64] [--pq-m 16] [--noise 1.5]
        [--hnsw-size 0] [--ef-search 32 64 128] [--repeats 3] [--exact-repeats 5]
        [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np
import torch

from torchgeo_macl.search import EmbeddingIndex


def clustered(
    n: int, queries: int, dim: int, clusters: int, seed: int, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    x = torch.empty(n, dim)
    for start in range(0, n, 100_000):  # bounded temporary memory
        stop = min(start + 100_000, n)
        which = torch.randint(0, clusters, (stop - start,), generator=g)
        x[start:stop] = centres[which] + noise * torch.randn(
            stop - start, dim, generator=g
        )
    which = torch.randint(0, clusters, (queries,), generator=g)
    q = centres[which] + noise * torch.randn(queries, dim, generator=g)
    return x, q


def ids(n: int) -> list[str]:
    return [f'item{i}' for i in range(n)]


def timed(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for fn in methods.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def search_time(
    index: EmbeddingIndex, q: torch.Tensor, k: int, repeats: int
) -> tuple[float, torch.Tensor]:
    """Median search time and the positions found."""
    found: list[torch.Tensor] = []

    def search() -> None:
        found.append(index.search(q, k)[1])

    return timed({'search': search}, repeats)['search'], found[-1]


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(2).sum()
    return hits.item() / truth.numel()


def table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> None:
    print(f'\n## {title}')
    if markdown:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|')
        for row in rows:
            print('| ' + ' | '.join(row) + ' |')
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(
        '  '.join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths))
        )
    )
    for row in rows:
        print(
            '  '.join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )
        )


def exact_section(args: argparse.Namespace) -> None:
    k = args.k
    x, q = clustered(
        args.exact_size, args.queries, args.dim, args.clusters, seed=0, noise=args.noise
    )
    xn = np.ascontiguousarray(torch.nn.functional.normalize(x, dim=1).numpy())
    qn = np.ascontiguousarray(torch.nn.functional.normalize(q, dim=1).numpy())
    raw = faiss.IndexFlatIP(args.dim)
    raw.add(xn)
    flat = EmbeddingIndex(args.dim, 'flat')
    flat.add(x, ids(len(x)))
    results: dict[str, object] = {}

    def raw_search() -> None:
        results['raw'] = raw.search(qn, k)

    def flat_search() -> None:
        results['flat'] = flat.search(q, k)

    times = timed({'raw': raw_search, 'flat': flat_search}, args.exact_repeats)
    _, raw_positions = results['raw']  # type: ignore[misc]
    _, flat_positions = results['flat']  # type: ignore[misc]
    same = bool(np.array_equal(raw_positions, flat_positions.numpy()))
    rows = [
        [
            'faiss IndexFlatIP (raw NumPy)',
            f'{args.queries / times["raw"]:.0f}',
            '1.00x',
            '',
        ],
        [
            "EmbeddingIndex('flat')",
            f'{args.queries / times["flat"]:.0f}',
            f'{times["raw"] / times["flat"]:.2f}x',
            'identical' if same else 'DIFFERENT',
        ],
    ]
    table(
        f'Exact search, {args.exact_size:,} x {args.dim}',
        ['method', 'queries/s', 'vs raw faiss', 'positions'],
        rows,
        args.markdown,
    )


def exact_reference(
    args: argparse.Namespace, x: torch.Tensor, q: torch.Tensor, repeats: int
) -> tuple[EmbeddingIndex, float, torch.Tensor, list[str]]:
    """Exact search over ``x``, the reference of a section.

    Returns the index, its median search time, the positions it finds and its
    table row (no build time, ratio 1, recall 1).
    """
    exact = EmbeddingIndex(args.dim, 'flat')
    exact.add(x, ids(len(x)))
    exact_time, truth = search_time(exact, q, args.k, repeats)
    row = ["EmbeddingIndex('flat')", '', f'{args.queries / exact_time:.0f}', '1.00x']
    return exact, exact_time, truth, [*row, '1.000']


def measured_row(
    name: str,
    build: float,
    index: EmbeddingIndex,
    q: torch.Tensor,
    args: argparse.Namespace,
    exact_time: float,
    truth: torch.Tensor,
) -> list[str]:
    """Search ``index`` and give its table row against exact search."""
    t, found = search_time(index, q, args.k, args.repeats)
    return [
        name,
        f'{build:.0f}',
        f'{args.queries / t:.0f}',
        f'{exact_time / t:.1f}x',
        f'{recall(found, truth):.3f}',
    ]


def approximate_section(args: argparse.Namespace) -> None:
    k = args.k
    n = args.ivf_size
    x, q = clustered(n, args.queries, args.dim, args.clusters, seed=1, noise=args.noise)
    exact, exact_time, truth, row = exact_reference(args, x, q, 1)  # slow: one run
    exact_bytes = len(faiss.serialize_index(exact._index)) / n
    del exact
    rows = [[*row, f'{exact_bytes:.0f}']]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    sample = x[perm[: args.train_size]]
    builds = [('ivf', args.pq_m[0])] + [('ivfpq', m) for m in args.pq_m]
    for kind, pq_m in builds:
        start = time.perf_counter()
        index = EmbeddingIndex(args.dim, kind, nlist=args.nlist, pq_m=pq_m)
        index.train(sample)
        index.add(x, ids(n))
        build = time.perf_counter() - start
        size = len(faiss.serialize_index(index._index)) / n
        if kind == 'ivf':
            memory = f'{size:.0f}'
            name = f"EmbeddingIndex('ivf', nlist={args.nlist}, nprobe={{}})"
            probes = args.nprobe
        else:
            memory = f'{size:.1f} ({index._index.code_size} code + 8 id)'
            name = f"EmbeddingIndex('ivfpq', m={pq_m}, nprobe={{}})"
            probes = args.nprobe[-1:]
        for nprobe in probes:
            index.nprobe = nprobe
            cells = measured_row(
                name.format(nprobe), build, index, q, args, exact_time, truth
            )
            rows.append([*cells, memory])
        del index
    table(
        f'Approximate search, {n:,} x {args.dim} (recall@{k} against exact search)',
        ['method', 'build s', 'queries/s', 'vs exact', f'recall@{k}', 'bytes/vector'],
        rows,
        args.markdown,
    )


def hnsw_section(args: argparse.Namespace) -> None:
    k = args.k
    m = args.hnsw_size
    x, q = clustered(m, args.queries, args.dim, args.clusters, seed=3, noise=args.noise)
    _, exact_time, truth, row = exact_reference(args, x, q, args.repeats)
    start = time.perf_counter()
    hnsw = EmbeddingIndex(args.dim, 'hnsw')
    hnsw.add(x, ids(m))
    build = time.perf_counter() - start
    rows = [row]
    for ef in args.ef_search:
        hnsw.ef_search = ef
        name = f"EmbeddingIndex('hnsw', M=32, ef_search={ef})"
        rows.append(measured_row(name, build, hnsw, q, args, exact_time, truth))
    table(
        f'HNSW, {m:,} x {args.dim}',
        ['method', 'build s', 'queries/s', 'vs exact', f'recall@{k}'],
        rows,
        args.markdown,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--exact-size', type=int, default=100_000)
    parser.add_argument('--ivf-size', type=int, default=1_000_000)
    parser.add_argument('--train-size', type=int, default=100_000)
    parser.add_argument('--hnsw-size', type=int, default=0)
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--clusters', type=int, default=1000)
    parser.add_argument('--queries', type=int, default=1000)
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--nlist', type=int, default=1024)
    parser.add_argument('--nprobe', type=int, nargs='+', default=[1, 4, 16, 64])
    parser.add_argument('--pq-m', type=int, nargs='+', default=[16])
    parser.add_argument('--noise', type=float, default=1.5)
    parser.add_argument('--ef-search', type=int, nargs='+', default=[32, 64, 128])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--exact-repeats', type=int, default=5)
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args()
    print(
        f'# faiss {faiss.__version__}, torch {torch.__version__}, '
        f'{faiss.omp_get_max_threads()} faiss threads, {args.queries} queries, '
        f'k = {args.k}, dim {args.dim}, {args.clusters} clusters, noise {args.noise}'
    )
    for section in (exact_section, approximate_section, hnsw_section):
        if section is hnsw_section and not args.hnsw_size:
            continue
        start = time.perf_counter()
        section(args)
        print(f'({section.__name__}: {time.perf_counter() - start:.0f} s)')


if __name__ == '__main__':
    main()
