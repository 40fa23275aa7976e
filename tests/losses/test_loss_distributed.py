"""Distributed semantics of ``gather_distributed=True`` with two gloo processes.

Each rank returns ``R * (sum of its anchor losses) / (global anchor count)``, so:
the mean of the per-rank losses equals the single-process loss on the
concatenated batch, and each rank's feature gradient (the gather's backward sums
the gradients of all ranks) divided by ``R`` - the averaging that
DistributedDataParallel applies - equals the single-process gradient of that
rank's rows.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torchgeo_macl.losses import get_loss

WORLD = 2
SIZES = [5, 3]  # unequal batches exercise the padding of the all-gather
FREQS = [0.5, 0.3, 0.2, 0.1]
NAMES = ['macl', 'supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent']


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(sum(SIZES), 2, 6, generator=gen)
    labels = (torch.rand(sum(SIZES), len(FREQS), generator=gen) < 0.4).long()
    labels[-1] = 0  # an unlabelled image on the second rank
    return features, labels


def _make(name: str, gather: bool) -> torch.nn.Module:
    return get_loss(name, label_frequencies=FREQS, gather_distributed=gather)


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        features, labels = _inputs()
        start = sum(SIZES[:rank])
        rows = slice(start, start + SIZES[rank])
        out = {}
        for name in NAMES:
            x = features[rows].clone().requires_grad_(True)
            loss = _make(name, gather=True)(x, labels[rows])
            loss.backward()
            out[f'{name}/loss'] = loss.detach()
            out[f'{name}/grad'] = x.grad
        torch.save(out, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def test_gathered_loss_equals_single_process(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [
        torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(WORLD)
    ]
    features, labels = _inputs()
    for name in NAMES:
        x = features.clone().requires_grad_(True)
        expected = _make(name, gather=False)(x, labels)
        expected.backward()
        assert x.grad is not None
        losses = torch.stack([res[f'{name}/loss'] for res in results])
        torch.testing.assert_close(
            losses.mean(), expected.detach(), atol=1e-5, rtol=1e-5
        )
        grads = torch.cat([res[f'{name}/grad'] for res in results]) / WORLD
        torch.testing.assert_close(grads, x.grad, atol=1e-5, rtol=1e-5)
        # the ranks see different anchors, so their own values differ
        assert not torch.allclose(losses[0], losses[1])
