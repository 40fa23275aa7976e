#!/usr/bin/env python3
"""Training throughput of ``RetrievalTask`` (MACL) against TorchGeo's SimCLR on the CPU.

Contenders, both with a randomly initialised timm ``resnet18`` backbone, the same
batch size, image size and number of optimisation steps:

* ``RetrievalTask``: ``RetrievalTask(model='resnet18', weights=None, loss='macl',
  num_classes=17, image_size=S)`` with its default views (random resized crop,
  flips, rotations by 90 degrees, colour jitter), projection head 512 -> 128 and the
  MACL loss, given long-tailed label frequencies with
  ``criterion.set_label_frequencies``;
* ``SimCLR``: TorchGeo's SimCLR task (``SimCLRTask`` in 0.8, ``SimCLR`` in 0.10,
  through ``torchgeo_macl._compat``) as SimCLR v1: ``version=1, layers=2,
  hidden_dim=512, output_dim=128, memory_bank_size=0, gather_distributed=False,
  size=S``, with its default views (random resized crop, flips, brightness,
  contrast, grayscale, Gaussian blur) and lightly's NT-Xent loss.

Both are driven the same way, without a Lightning trainer: a plain loop over
pre-built random batches (normalised float images ``[B, 3, S, S]`` and, for
``RetrievalTask``, long-tailed multi-hot labels ``[B, 17]``) calling
``task.training_step(batch, i)``, ``loss.backward()``, ``optimizer.step()`` and
``optimizer.zero_grad()``. What is compared is the per-step work (two views, backbone,
head, loss, backward, update), not Lightning's overhead. ``task.log`` is replaced by
a no-op on both tasks, since no trainer collects the values; SimCLR's
``training_step`` needs nothing else from a trainer. The optimizer is AdamW with the
same settings for both (``--optimizer adamw``, the default), or each task's own
``configure_optimizers()`` (``--optimizer own``: AdamW for ``RetrievalTask``, LARS
for SimCLR, whose ``configure_optimizers`` reads ``trainer.max_epochs``; a stand-in
object with ``max_epochs=100`` is attached for that one call only).

Throughput: after ``--warmup`` steps of each task, ``--rounds`` rounds; in each
round both tasks run ``--steps`` steps, one after the other, the order alternating
between rounds, so that load from other processes hits both alike. The table lists,
per round, images/s of each task, their ratio (``RetrievalTask / SimCLR``; goal
>= 0.97), the same ratio computed from the CPU time of the process instead of the
wall-clock time (less sensitive to time slices taken by other processes), the CPU
time the process got per wall-clock second, and the share of the step time spent
making the views (forward hooks on ``RetrievalTask.views`` and
``SimCLR.augmentations``), and then the medians. The load average is printed at the
start, after the throughput rounds and at the end: on a loaded machine the absolute
figures are depressed and noisy, and the per-round ratios are the figures to read.
On a machine with fewer free cores than threads, stalled OpenMP threads inflate every
small operator by milliseconds (more so for a step made of many small operators);
use ``--threads 1`` there.

Loss share: ``RetrievalTask`` at ``--share-batch-size`` images (default 256) runs
one warm-up step and then ``--share-steps`` timed steps. In each, the criterion's
forward is timed with forward hooks, and its backward with tensor hooks on its output
(the loss gradient arrives) and on its input (the gradient of the embeddings is
complete): the autograd engine finishes the loss's backward before it starts on the
head. After each step the criterion's forward + ``torch.autograd.grad`` is also
replayed ``--share-repeats`` times on the step's own embeddings and labels (median).
Both are reported as a share of the whole step time (goal < 5%).

Usage::

    python experiments/benchmarks/bench_task.py [--batch-size 64] [--image-size 64]
        [--warmup 5] [--steps 4] [--rounds 6] [--optimizer {adamw,own}]
        [--share-batch-size 256] [--share-steps 3] [--share-repeats 3]
        [--threads N] [--seed 0] [--markdown]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, cast

import torch
from _common import render_table
from torch import Tensor, nn

from torchgeo_macl._compat import TORCHGEO_VERSION, SimCLRTask
from torchgeo_macl.tasks import RetrievalTask

CLASSES = 17
EMBED_DIM, HIDDEN_DIM = 128, 512
LR, WEIGHT_DECAY = 1e-3, 1e-4
# Per-band mean and standard deviation (0..255 units) the views denormalise with,
# as a datamodule's setup would give them.
MEAN, STD = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)
#: Number of distinct pre-built batches cycled through.
NUM_BATCHES = 2


def label_frequencies() -> Tensor:
    """Long-tailed label frequencies, from 0.6 down to about 0.02."""
    return torch.logspace(0, -1.5, CLASSES) * 0.6


def make_batches(b: int, size: int, seed: int) -> list[dict[str, Tensor]]:
    """Pre-built batches of normalised random images and multi-hot labels."""
    gen = torch.Generator().manual_seed(seed)
    freqs = label_frequencies()
    batches = []
    for _ in range(NUM_BATCHES):
        image = torch.randn(b, 3, size, size, generator=gen)
        label = (torch.rand(b, CLASSES, generator=gen) < freqs).long()
        # every image carries at least one label, as in the datasets
        first = torch.randint(CLASSES, (b,), generator=gen)
        label[torch.arange(b), first] = 1
        batches.append({'image': image, 'label': label})
    return batches


def no_log(*args: Any, **kwargs: Any) -> None:
    """Stand-in for ``LightningModule.log`` without a trainer."""


def build_retrieval(size: int, seed: int) -> RetrievalTask:
    """``RetrievalTask`` with MACL, random resnet18 and its default views."""
    torch.manual_seed(seed)
    task = RetrievalTask(
        model='resnet18',
        weights=None,
        in_channels=3,
        num_classes=CLASSES,
        embed_dim=EMBED_DIM,
        proj_hidden_dim=HIDDEN_DIM,
        loss='macl',
        image_size=size,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
    )
    set_frequencies = getattr(task.criterion, 'set_label_frequencies')  # noqa: B009
    set_frequencies(label_frequencies())
    task.views.set_normalization(torch.tensor(MEAN), torch.tensor(STD))
    task.log = no_log  # type: ignore[method-assign]
    task.train()
    return task


def build_simclr(size: int, seed: int) -> nn.Module:
    """TorchGeo's SimCLR (v1 settings), random resnet18 and its default views."""
    torch.manual_seed(seed)
    task: Any = SimCLRTask(
        model='resnet18',
        weights=None,
        in_channels=3,
        version=1,
        layers=2,
        hidden_dim=HIDDEN_DIM,
        output_dim=EMBED_DIM,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        memory_bank_size=0,
        gather_distributed=False,
        size=size,
    )
    task.log = no_log
    task.train()
    return cast(nn.Module, task)


def make_optimizer(task: Any, kind: str) -> torch.optim.Optimizer:
    """The same AdamW for every task, or the task's own optimizer."""
    if kind == 'adamw':
        return torch.optim.AdamW(task.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    task._trainer = SimpleNamespace(max_epochs=100)
    try:
        config = task.configure_optimizers()
    finally:
        task._trainer = None
    optimizer: torch.optim.Optimizer = config['optimizer']
    return optimizer


class Runner:
    """One task, its optimizer and batches, stepping as a training loop would."""

    def __init__(
        self, task: Any, optimizer: torch.optim.Optimizer, batches: list[dict[str, Any]]
    ) -> None:
        self.task = task
        self.optimizer = optimizer
        self.batches = batches
        self.count = 0

    def step(self) -> None:
        """One optimisation step on the next batch."""
        batch = self.batches[self.count % len(self.batches)]
        loss = self.task.training_step(batch, self.count)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.count += 1

    def timed(self, steps: int) -> tuple[float, float]:
        """Wall-clock and process CPU seconds of ``steps`` steps."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        return time.perf_counter() - wall, time.process_time() - cpu


class ModuleTimer:
    """Forward hooks that add up the wall-clock seconds spent in a module."""

    def __init__(self, module: nn.Module) -> None:
        self.total_s = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._start = time.perf_counter()

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.total_s += time.perf_counter() - self._start


def bench_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Interleaved rounds of both tasks; one row per round."""
    b, size = args.batch_size, args.image_size
    batches = make_batches(b, size, args.seed)
    retrieval = build_retrieval(size, args.seed)
    simclr = build_simclr(size, args.seed)
    runners = {
        'RetrievalTask': Runner(
            retrieval, make_optimizer(retrieval, args.optimizer), batches
        ),
        'SimCLR': Runner(simclr, make_optimizer(simclr, args.optimizer), batches),
    }
    views = {
        'RetrievalTask': ModuleTimer(retrieval.views),
        'SimCLR': ModuleTimer(getattr(simclr, 'augmentations')),  # noqa: B009
    }
    for runner in runners.values():
        runner.timed(args.warmup)
    names = list(runners)
    rows = []
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        row: dict[str, Any] = {'round': r + 1, 'first': order[0]}
        for name in order:
            views_before = views[name].total_s
            wall, cpu = runners[name].timed(args.steps)
            row[name] = args.steps * b / wall
            row[f'{name} cpu'] = cpu / wall
            row[f'{name} cpu_s'] = cpu
            row[f'{name} views'] = 100 * (views[name].total_s - views_before) / wall
        row['ratio'] = row['RetrievalTask'] / row['SimCLR']
        # images per CPU-second of the process: less sensitive to time slices lost
        # to other processes (same steps and batch size, so a ratio of CPU times)
        row['ratio_cpu'] = row['SimCLR cpu_s'] / row['RetrievalTask cpu_s']
        rows.append(row)
        print(
            f'  round {r + 1}: RetrievalTask {row["RetrievalTask"]:.1f} img/s, '
            f'SimCLR {row["SimCLR"]:.1f} img/s, ratio {row["ratio"]:.3f} '
            f'(CPU time {row["ratio_cpu"]:.3f})',
            file=sys.stderr,
            flush=True,
        )
    return rows


class LossTimer:
    """Forward and tensor hooks that time the criterion inside a training step."""

    def __init__(self, criterion: nn.Module) -> None:
        self.forward_s: list[float] = []
        self.backward_s: list[float] = []
        self.inputs: tuple[Tensor, Tensor] | None = None
        self.active = True
        self._start = 0.0
        self._grad_start = 0.0
        criterion.register_forward_pre_hook(self._pre)
        criterion.register_forward_hook(self._post)

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        features, labels = args
        self.inputs = (features.detach().clone(), labels.clone())
        if features.requires_grad:
            features.register_hook(self._grad_done)
        self._start = time.perf_counter()

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if not self.active:
            return
        self.forward_s.append(time.perf_counter() - self._start)
        if output.requires_grad:
            output.register_hook(self._grad_begins)  # type: ignore[no-untyped-call]

    def _grad_begins(self, grad: Tensor) -> None:
        self._grad_start = time.perf_counter()

    def _grad_done(self, grad: Tensor) -> None:
        self.backward_s.append(time.perf_counter() - self._grad_start)


def replay(criterion: Callable[..., Tensor], features: Tensor, labels: Tensor) -> float:
    """Seconds of one criterion forward + gradient on the given embeddings."""
    leaf = features.detach().requires_grad_(True)
    start = time.perf_counter()
    loss = criterion(leaf, labels)
    torch.autograd.grad(loss, leaf)
    return time.perf_counter() - start


def bench_loss_share(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Share of ``RetrievalTask``'s step time spent in the loss; one row per step."""
    b, size = args.share_batch_size, args.image_size
    task = build_retrieval(size, args.seed)
    assert task.criterion is not None
    runner = Runner(
        task, make_optimizer(task, args.optimizer), make_batches(b, size, args.seed)
    )
    timer = LossTimer(task.criterion)
    runner.timed(1)  # warm-up
    rows = []
    for i in range(args.share_steps):
        step_s, _ = runner.timed(1)
        assert timer.inputs is not None
        assert len(timer.forward_s) == len(timer.backward_s) == i + 2
        features, labels = timer.inputs
        loss_s = timer.forward_s[-1] + timer.backward_s[-1]
        timer.active = False
        replays = [
            replay(task.criterion, features, labels) for _ in range(args.share_repeats)
        ]
        timer.active = True
        rows.append(
            {
                'step': i + 1,
                'step_ms': 1000 * step_s,
                'fwd_ms': 1000 * timer.forward_s[-1],
                'bwd_ms': 1000 * timer.backward_s[-1],
                'share': 100 * loss_s / step_s,
                'replay_ms': 1000 * statistics.median(replays),
                'replay_share': 100 * statistics.median(replays) / step_s,
            }
        )
        print(
            f'  loss share step {i + 1}: step {1000 * step_s:.0f} ms, loss '
            f'{1000 * loss_s:.1f} ms in step ({rows[-1]["share"]:.2f}%)',
            file=sys.stderr,
            flush=True,
        )
    return rows


def median_columns(
    rows: list[dict[str, Any]], columns: Mapping[str, tuple[str, int]]
) -> tuple[list[list[str]], list[str]]:
    """Format the values of some columns of each row, and their medians.

    Args:
        rows: Measurements, one dict a row.
        columns: ``key: (title, decimals)`` of each column, in order.

    Returns:
        The cells of each row, and the median of each column, as text.
    """
    cells = [[f'{row[key]:.{d}f}' for key, (_, d) in columns.items()] for row in rows]
    medians = [
        f'{statistics.median(row[key] for row in rows):.{d}f}'
        for key, (_, d) in columns.items()
    ]
    return cells, medians


def throughput_table(rows: list[dict[str, Any]], markdown: bool) -> str:
    """Per-round images/s and ratios, then the medians."""
    columns = {
        'RetrievalTask': ('RetrievalTask img/s', 1),
        'SimCLR': ('SimCLR img/s', 1),
        'ratio': ('ratio', 3),
        'ratio_cpu': ('ratio by CPU time', 3),
        'RetrievalTask cpu': ('CPU s/s (R)', 2),
        'SimCLR cpu': ('CPU s/s (S)', 2),
        'RetrievalTask views': ('views % (R)', 1),
        'SimCLR views': ('views % (S)', 1),
    }
    cells, medians = median_columns(rows, columns)
    if markdown:
        medians[2:4] = [f'**{m}**' for m in medians[2:4]]
    header = ['round', 'first', *(title for title, _ in columns.values())]
    lines = [[str(row['round']), str(row['first']), *c] for row, c in zip(rows, cells)]
    lines.append(['median', '', *medians])
    return render_table(header, lines, markdown)


def share_table(rows: list[dict[str, Any]], markdown: bool) -> str:
    """Per-step loss timings and shares, then the medians."""
    columns = {
        'step_ms': ('step ms', 0),
        'fwd_ms': ('loss fwd ms', 1),
        'bwd_ms': ('loss bwd ms', 1),
        'share': ('loss share %', 2),
        'replay_ms': ('replay fwd+grad ms', 1),
        'replay_share': ('replay share %', 2),
    }
    cells, medians = median_columns(rows, columns)
    header = ['step', *(title for title, _ in columns.values())]
    lines = [[str(row['step']), *c] for row, c in zip(rows, cells)]
    lines.append(['median', *medians])
    return render_table(header, lines, markdown)


def load_line(label: str) -> str:
    """The load average, and whether the machine was busy with other work."""
    cores = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    busy = 'not noticeably loaded'
    if one > 0.5 * cores:
        busy = (
            'LOADED by other processes: absolute figures are depressed and noisy, '
            'read the per-round ratios'
        )
        if torch.get_num_threads() > 1:
            busy += (
                '; with more threads than free cores, stalled OpenMP threads inflate '
                'every small operator: prefer --threads 1'
            )
    return (
        f'load average {label}: {one:.2f} (1 min), {five:.2f} (5 min) on {cores} '
        f'cores: {busy}'
    )


def main() -> None:
    """Parse arguments, run both benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--steps', type=int, default=4, help='steps per round')
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--optimizer', choices=('adamw', 'own'), default='adamw')
    parser.add_argument('--share-batch-size', type=int, default=256)
    parser.add_argument('--share-steps', type=int, default=3)
    parser.add_argument('--share-repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore', category=UserWarning)
    tg = '.'.join(map(str, TORCHGEO_VERSION))
    print(
        f'Python {platform.python_version()}, torch {torch.__version__}, torchgeo '
        f'{tg}, {platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} threads'
    )
    print(load_line('at start'))
    start = time.perf_counter()
    print(
        f'\nThroughput: resnet18 (random init), batch {args.batch_size}, image '
        f'{args.image_size}x{args.image_size}, optimizer {args.optimizer}; '
        f'{args.warmup} warm-up steps, then {args.rounds} interleaved rounds of '
        f'{args.steps} steps per task (order alternating). Goal: ratio >= 0.97.\n'
    )
    rows = bench_throughput(args)
    print(throughput_table(rows, args.markdown))
    print(load_line('after throughput'))
    print(
        f'\nLoss share of RetrievalTask (MACL): batch {args.share_batch_size}, image '
        f'{args.image_size}x{args.image_size}, 1 warm-up step, then '
        f'{args.share_steps} timed steps; replay = median of {args.share_repeats} '
        'criterion forward + autograd.grad on the step embeddings. Goal: < 5%.\n'
    )
    print(share_table(bench_loss_share(args), args.markdown))
    print(load_line('at end'))
    print(f'total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
    main()
