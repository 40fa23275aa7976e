#!/usr/bin/env python3
"""Forward + backward time and peak memory of the contrastive losses on the CPU.

Compares, at B images x V = 2 views, D = 128, C = 17 labels:

* ``pml SupCon``: pytorch-metric-learning's ``SupConLoss`` with the multi-label
  positives (any shared label, plus the other view) and negatives given as an
  ``indices_tuple`` built once outside the timed region (the anchor of the ratios);
* ``pml SupCon + pairs``: the same, with the indices built inside the timed call,
  as a training step would have to;
* ``SupConLoss`` and ``MACLLoss`` (every component on, default parameters) of
  ``torchgeo_macl.losses``.

Each timed call is ``loss(...)`` followed by ``backward()``. The methods are run in
rotating order for ``--repeats`` rounds after a warm-up, so that load from other
processes hits them alike; the table shows the median time and the median over
rounds of the ratio to the pml anchor (and to own SupCon) timed in the same round.
Peak memory is the maximum, over one call, of the running sum of the CPU tensor
allocations and frees that ``torch.profiler`` records (``profile_memory=True``):
the extra memory the call needs beyond its inputs.

Usage::

    python experiments/benchmarks/bench_losses.py [--sizes 256 512 1024]
        [--repeats 15] [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch
from _common import render_table
from pytorch_metric_learning import losses as pml_losses
from torch.profiler import ProfilerActivity, profile

from torchgeo_macl.losses import MACLLoss, SupConLoss

VIEWS, DIM, CLASSES = 2, 128, 17


def make_batch(
    b: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random features, long-tailed multi-hot labels and their label frequencies."""
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.logspace(0, -1.5, CLASSES) * 0.6  # 0.6 down to about 0.02
    labels = (torch.rand(b, CLASSES, generator=gen) < freqs).long()
    features = torch.randn(b, VIEWS, DIM, generator=gen)
    return features, labels, freqs


def pml_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Positive and negative pairs of the flattened views for pml's indices_tuple."""
    y = labels.repeat_interleave(VIEWS, 0).float()
    image = torch.arange(labels.shape[0]).repeat_interleave(VIEWS)
    same_label = (y @ y.T > 0) | (image[:, None] == image[None, :])
    other = ~torch.eye(len(y), dtype=torch.bool)
    a1, p = (same_label & other).nonzero(as_tuple=True)
    a2, n = (~same_label & other).nonzero(as_tuple=True)
    return a1, p, a2, n


def build_methods(b: int) -> tuple[dict[str, Callable[[], None]], torch.Tensor]:
    """The timed closures of every method at batch size ``b``."""
    features, labels, freqs = make_batch(b)
    features.requires_grad_(True)
    flat = features.view(b * VIEWS, DIM)
    pml = pml_losses.SupConLoss(temperature=0.1)
    pairs = pml_pairs(labels)
    supcon = SupConLoss(temperature=0.1)
    macl = MACLLoss(label_frequencies=freqs)

    def run_pml() -> None:
        pml(flat, indices_tuple=pairs).backward()

    def run_pml_pairs() -> None:
        pml(flat, indices_tuple=pml_pairs(labels)).backward()

    def run_supcon() -> None:
        supcon(features, labels).backward()

    def run_macl() -> None:
        macl(features, labels).backward()

    methods = {
        'pml SupCon': run_pml,
        'pml SupCon + pairs': run_pml_pairs,
        'SupConLoss': run_supcon,
        'MACLLoss': run_macl,
    }
    return methods, features


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ log lines written to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of the running sum of CPU allocations during one call of ``fn``."""
    with (
        quiet_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    events = [
        e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'
    ]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def bench(sizes: list[int], repeats: int) -> list[dict[str, object]]:
    """Time every method at every batch size."""
    rows: list[dict[str, object]] = []
    for b in sizes:
        methods, features = build_methods(b)
        names = list(methods)
        for fn in methods.values():  # warm-up
            for _ in range(2):
                fn()
                features.grad = None
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                features.grad = None
                start = time.perf_counter()
                methods[name]()
                times[name].append(time.perf_counter() - start)
        anchor, own = times['pml SupCon'], times['SupConLoss']
        for name in names:
            features.grad = None
            mine = times[name]
            rows.append(
                {
                    'B': b,
                    'method': name,
                    'ms': 1000 * statistics.median(mine),
                    'vs_pml': statistics.median(t / a for t, a in zip(mine, anchor)),
                    'vs_supcon': statistics.median(t / o for t, o in zip(mine, own)),
                    'peak_mib': peak_bytes(methods[name]) / 2**20,
                }
            )
    return rows


def format_table(rows: list[dict[str, object]], markdown: bool) -> str:
    """Render the rows as a plain or Markdown table."""
    header = ['B', 'method', 'fwd+bwd ms', 'x pml SupCon', 'x own SupCon', 'peak MiB']
    lines = []
    for row in rows:
        lines.append(
            [
                str(row['B']),
                str(row['method']),
                f'{row["ms"]:.2f}',
                f'{row["vs_pml"]:.2f}',
                f'{row["vs_supcon"]:.2f}',
                f'{row["peak_mib"]:.1f}',
            ]
        )
    return render_table(header, lines, markdown, left={1})


def main() -> None:
    """Parse arguments, run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512, 1024])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f'torch {torch.__version__}, {platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} threads; V={VIEWS}, D={DIM}, C={CLASSES}; '
        f'median of {args.repeats} rotating rounds'
    )
    print(format_table(bench(args.sizes, args.repeats), args.markdown))


if __name__ == '__main__':
    main()
