#!/usr/bin/env python3
"""Seconds per epoch of the label-aware batch sampler against plain random batches.

Both samplers run over the same long-tailed multi-hot labels in one process, on one
thread (as in a DataLoader's main process). The anchor is
``BatchSampler(RandomSampler(n), batch_size, drop_last=True)``: the cost of
handing out an epoch of random batches at all. The label-aware sampler draws
labels, then carriers of each label not yet in the batch; its cost per batch
does not grow with the archive, so an epoch is O(n).

With ``--batches`` only that many label-aware batches are timed and its epoch
time is extrapolated from them; the anchor always runs a whole epoch.

Usage::

    python experiments/benchmarks/bench_sampler.py [--num-images 1000000]
        [--classes 17] [--batch-size 64] [--m 2] [--sigma 0.5] [--batches N]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterable

import torch
from torch.utils.data import BatchSampler, RandomSampler

from torchgeo_macl.samplers import LabelAwareBatchSampler


def long_tailed_labels(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    """Multi-hot labels with Zipf-like label frequencies, as in remote sensing.

    Args:
        n: Number of images.
        classes: Number of labels.
        seed: Random seed.

    Returns:
        Labels ``[n, classes]`` (bool); the most frequent label is carried by
        about half of the images, the rarest by about 0.5 %.
    """
    gen = torch.Generator().manual_seed(seed)
    rank = torch.arange(1, classes + 1, dtype=torch.float64)
    rates = 0.5 * rank ** -(torch.log(torch.tensor(100.0)) / torch.log(rank[-1]))
    return torch.rand(n, classes, generator=gen, dtype=torch.float64) < rates


def time_batches(batches: Iterable[list[int]], limit: int | None) -> float:
    """Seconds to draw ``limit`` batches (all of them when ``None``).

    Args:
        batches: The sampler.
        limit: Number of batches to draw.

    Returns:
        Seconds taken.
    """
    start = time.perf_counter()
    count = 0
    for batch in itertools.islice(batches, limit):
        count += len(batch)
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    options: dict[str, tuple[type, int | float | None]] = {
        '--num-images': (int, 1_000_000),
        '--classes': (int, 17),
        '--batch-size': (int, 64),
        '--m': (int, 2),
        '--sigma': (float, 0.5),
        '--batches': (int, None),
    }
    for flag, (kind, default) in options.items():
        parser.add_argument(flag, type=kind, default=default)
    args = parser.parse_args()
    torch.set_num_threads(1)

    labels = long_tailed_labels(args.num_images, args.classes)
    start = time.perf_counter()
    sampler = LabelAwareBatchSampler(
        labels, args.batch_size, m=args.m, sigma=args.sigma
    )
    setup = time.perf_counter() - start
    anchor = BatchSampler(
        RandomSampler(range(args.num_images)), args.batch_size, drop_last=True
    )
    epoch = len(sampler)
    timed = epoch if args.batches is None else min(args.batches, epoch)
    scale = epoch / timed
    anchor_s = time_batches(anchor, None)
    label_aware_s = time_batches(sampler, timed) * scale

    print(
        f'{args.num_images} images, {args.classes} labels, batch {args.batch_size}, '
        f'm {args.m}, sigma {args.sigma}: {epoch} batches per epoch'
        + ('' if timed == epoch else f' ({timed} timed, extrapolated)')
    )
    print('| sampler | s / epoch | ratio |')
    print('|---|---:|---:|')
    print(f'| random batches (anchor) | {anchor_s:.2f} | 1.00 |')
    print(f'| label-aware | {label_aware_s:.2f} | {label_aware_s / anchor_s:.2f} |')
    print(f'label-aware sampler set-up: {setup:.2f} s')


if __name__ == '__main__':
    main()
