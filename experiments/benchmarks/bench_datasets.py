#!/usr/bin/env python3
"""Samples/s of torchgeo_macl's DLRSD against TorchGeo's DLRSDMultilabel.

Both read the same synthetic archive (written by ``make_synthetic_dlrsd``) in one
process; needs TorchGeo >= 0.10 (the newest-TorchGeo environment). Every dataset
reads every image of the archive once per pass, in chunks that alternate between
the datasets (so background load hits all of them alike); each chunk keeps its
fastest time over the passes. Torch runs on one thread, as in a DataLoader
worker. Printed ratios (this package / TorchGeo):

* image + label: ``DLRSD(label_source='csv', load_masks=False)`` vs
  ``DLRSDMultilabel`` (the same sample content) -- the headline ratio;
* image + label + mask: ``DLRSD(label_source='csv')`` vs ``DLRSDMultilabel``
  (this package also decodes the mask) and vs TorchGeo's segmentation ``DLRSD``
  (which decodes image and mask).

Also prints how fast the synthetic archive is written.

Usage::

    python experiments/benchmarks/bench_datasets.py [--num-images 420]
        [--image-size 256] [--passes 5] [--chunk 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from torchgeo_macl._compat import TORCHGEO_VERSION
from torchgeo_macl.datasets import DLRSD, make_synthetic_dlrsd


def flatten(datasets: Sequence[Any]) -> list[tuple[Any, int]]:
    """List (dataset, index) of every sample of the datasets.

    Args:
        datasets: Datasets to read.

    Returns:
        The (dataset, index) pairs in order.
    """
    return [(ds, i) for ds in datasets for i in range(len(ds))]


def time_chunk(items: Sequence[tuple[Any, int]]) -> float:
    """Read a chunk of samples.

    Args:
        items: (dataset, index) pairs.

    Returns:
        Seconds taken.
    """
    start = time.perf_counter()
    for ds, i in items:
        ds[i]
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-images', type=int, default=420)
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--passes', type=int, default=5)
    parser.add_argument('--chunk', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    if TORCHGEO_VERSION < (0, 10, 0):
        raise SystemExit('TorchGeo >= 0.10 is needed (DLRSDMultilabel).')
    from torchgeo.datasets import DLRSD as TorchGeoDLRSD
    from torchgeo.datasets import DLRSDMultilabel

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        make_synthetic_dlrsd(
            root, num_images=args.num_images, image_size=args.image_size, seed=args.seed
        )
        gen_seconds = time.perf_counter() - start

        def ours(**kwargs: Any) -> list[DLRSD]:
            return [
                DLRSD(root, split=s, label_source='csv', **kwargs)
                for s in ('train', 'val', 'test')
            ]

        items = {
            'ours image+label': flatten(ours(load_masks=False)),
            'ours image+label+mask': flatten(ours()),
            'torchgeo DLRSDMultilabel (image+label)': flatten(
                [DLRSDMultilabel(root, checksum=False)]
            ),
            'torchgeo DLRSD (image+mask)': flatten(
                [TorchGeoDLRSD(root, checksum=False)]
            ),
        }
        for pairs in items.values():  # warm the page cache
            time_chunk(pairs)
        # Contenders alternate chunk by chunk, so background load hits all alike;
        # every chunk keeps its fastest time over the passes.
        chunks = range(0, args.num_images, args.chunk)
        best = {name: [float('inf')] * len(chunks) for name in items}
        for _ in range(args.passes):
            for k, start in enumerate(chunks):
                for name, pairs in items.items():
                    seconds = time_chunk(pairs[start : start + args.chunk])
                    best[name][k] = min(best[name][k], seconds)
        rates = {name: args.num_images / sum(times) for name, times in best.items()}

    print(
        f'archive: {args.num_images} images {args.image_size}x{args.image_size}, '
        f'written in {gen_seconds:.2f} s ({args.num_images / gen_seconds:.0f} images/s)'
    )
    print(f'torchgeo {".".join(map(str, TORCHGEO_VERSION))}, torch threads 1')
    for name, rate in rates.items():
        print(f'  {name:42s} {rate:8.0f} samples/s')
    ml = rates['torchgeo DLRSDMultilabel (image+label)']
    ratios = {
        'image+label vs DLRSDMultilabel': rates['ours image+label'] / ml,
        'image+label+mask vs DLRSDMultilabel': rates['ours image+label+mask'] / ml,
        'image+label+mask vs torchgeo DLRSD': rates['ours image+label+mask']
        / rates['torchgeo DLRSD (image+mask)'],
    }
    for name, ratio in ratios.items():
        print(f'ratio {name}: {ratio:.2f}')
    return ratios


if __name__ == '__main__':
    main()
