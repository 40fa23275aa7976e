#!/usr/bin/env python3
"""Device check: training step, loss, metrics and faiss search against anchors.

Every figure is a ratio against an anchor measured in the same process, on the same
device and data:

1. ``task``: a training step (two views, backbone, head, loss, backward, AdamW) of
   ``RetrievalTask`` (MACL) against TorchGeo's SimCLR task, both built and driven as
   in ``bench_task.py`` (random ``resnet18``, same batch and image size), under bf16
   autocast (``--precision``) with channels-last weights and images: images/s and
   their ratio; then, in separate steps, the time each task spends in its views and
   in its loss (forward hooks, tensor hooks for the loss backward, the device
   synchronised at each hook) against its step time;
2. ``loss``: ``MACLLoss`` forward + backward against pytorch-metric-learning's
   ``SupConLoss`` on the flattened ``[V * B, D]`` views with one class per image (its
   first label), on the long-tailed data of ``bench_losses.py``;
3. ``metrics``: ``retrieval_metrics`` (every metric at k = 10, 20, 50, 100) against
   the floor "cosine similarity matmul + top-k" (data of ``bench_metrics.py``);
4. ``index``: ``EmbeddingIndex`` ``'flat'`` and ``'ivf'`` searched with torch queries
   on the device against raw faiss indexes with the same parameters searched with
   normalised NumPy queries (data of ``bench_index.py``); on the GPU when faiss has
   ``StandardGpuResources`` (a GPU copy replaces the faiss index ``EmbeddingIndex``
   holds, which has no device option), else on the CPU.

Sizes: 224 px images in batches of 256; loss batches B = 1024 and 4096 (V = 2,
D = 128, C = 17, float32 whatever ``--precision``); 10,000 queries x 100,000 items
(D = 128) for the metrics and the index (IVF: nlist 1024, nprobe 16, k = 10); 5
repeats. ``--quick`` runs the same code on 32 px images in batches of 8, B = 64 and
128, 200 x 2,000 items (nlist 16, nprobe 4), 2 repeats and one CPU thread.

Ratios are method / anchor in the row's unit (above 1: faster for img/s, slower for
ms). Times are medians over repeats in rotating order after a warm-up. Peak memory is
``torch.cuda.max_memory_allocated`` after a reset, over one call (for the training
step: over its timed steps), not counting what faiss allocates itself; 'n/a' off
CUDA. A section that fails is reported as an error row and makes the exit status 1.
The JSON and Markdown reports are each replaced in one rename; the Markdown is also
printed.

Usage::

    python experiments/benchmarks/device_check.py [--quick] [--device cuda]
        [--precision {bf16,fp32}] [--threads N] [--sections task loss metrics index]
        [--out-json outputs/device_check.json] [--out-md outputs/device_check.md]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from torch import Tensor, nn

from torchgeo_macl._io import atomic_write_text
from torchgeo_macl.losses import MACLLoss
from torchgeo_macl.metrics import retrieval_metrics
from torchgeo_macl.search import EmbeddingIndex

#: This folder; its scripts import their shared helpers from ``_common.py`` here.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))


def _load(name: str) -> ModuleType:
    """Import a sibling benchmark script under a name no other module uses."""
    module_name = f'_macl_benchmarks_{name}'
    if module_name not in sys.modules:
        path = HERE / f'{name}.py'
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


bench_task = _load('bench_task')
bench_losses = _load('bench_losses')
bench_metrics = _load('bench_metrics')
bench_index = _load('bench_index')

SECTIONS = ('task', 'loss', 'metrics', 'index')
DIM, CLASSES, KS, SEED = 128, 17, (10, 20, 50, 100), 0
#: A figure (ms or img/s) and the peak MiB of its method (None off CUDA).
Figure = tuple[float, float | None]


@dataclass(frozen=True)
class Sizes:
    """Problem sizes and repeats of one run."""

    image_size: int
    batch_size: int
    warmup: int
    steps: int
    share_steps: int
    loss_sizes: tuple[int, ...]
    queries: int
    database: int
    nlist: int
    nprobe: int
    k: int
    repeats: int


FULL = Sizes(224, 256, 5, 10, 3, (1024, 4096), 10_000, 100_000, 1024, 16, 10, 5)
QUICK = Sizes(32, 8, 1, 2, 1, (64, 128), 200, 2000, 16, 4, 10, 2)


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device``."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    elif device.type == 'mps':
        torch.mps.synchronize()


def peak_mib(device: torch.device, reset: bool = False) -> float | None:
    """Peak MiB allocated by torch since the last reset (None off CUDA), or reset."""
    if device.type != 'cuda':
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def clock(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(
    methods: Mapping[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, Figure]:
    """Median ms (rotating order after a warm-up) and peak MiB of each method."""
    peaks: dict[str, float | None] = {}
    for name, fn in methods.items():
        clock(fn, device)  # warm-up
        peak_mib(device, reset=True)
        clock(fn, device)
        peaks[name] = peak_mib(device)
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(clock(methods[name], device))
    return {n: (1000 * statistics.median(times[n]), peaks[n]) for n in names}


def row(measurement: str, unit: str, figures: Mapping[str, Figure]) -> dict[str, Any]:
    """A row of ``figures``: the first entry is the method, the second its anchor."""
    (method, (value, peak)), (anchor, (anchor_value, anchor_peak)) = figures.items()
    return {
        'measurement': measurement,
        'unit': unit,
        'method': method,
        'value': value,
        'peak_mib': peak,
        'anchor': anchor,
        'anchor_value': anchor_value,
        'anchor_peak_mib': anchor_peak,
        'ratio': value / anchor_value,
    }


class HookTimer:
    """Seconds spent in a module's forward and, with ``backward``, its backward."""

    def __init__(self, module: nn.Module, device: torch.device, backward: bool) -> None:
        self.device, self.backward, self.active = device, backward, False
        self.total_s = self._start = self._grad_start = self._pending = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _now(self) -> float:
        sync(self.device)
        return time.perf_counter()

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        for arg in args:
            if self.backward and isinstance(arg, Tensor) and arg.requires_grad:
                arg.register_hook(self._grad_done)  # type: ignore[no-untyped-call]
        self._start = self._now()

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self.active:
            return
        self.total_s += self._now() - self._start
        if self.backward and isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._grad_begins)  # type: ignore[no-untyped-call]

    def _grad_begins(self, grad: Tensor) -> None:
        self._grad_start = self._now()

    def _grad_done(self, grad: Tensor) -> None:
        # The autograd engine runs the loss nodes (created last) before the nodes of
        # any input; after the first input's gradient it may run that input's graph
        # (SimCLR: the second view's head and backbone) before the next one's.
        if not self._pending:
            self._pending = self._now() - self._grad_start

    def flush(self) -> None:
        """Add the backward time of the last step."""
        self.total_s += self._pending
        self._pending = 0.0


def train(
    name: str,
    batches: list[dict[str, Tensor]],
    sizes: Sizes,
    device: torch.device,
    precision: str,
) -> dict[str, Figure]:
    """Images/s with peak MiB, and mean step, views and loss ms of one task."""
    if name == 'RetrievalTask':
        task: Any = bench_task.build_retrieval(sizes.image_size, SEED)
        views = task.views
    else:
        task = bench_task.build_simclr(sizes.image_size, SEED)
        views = task.augmentations
    task.to(device, memory_format=torch.channels_last)
    step = task.training_step

    def autocast_step(batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == 'bf16'):
            loss: Tensor = step(batch, batch_idx)
        return loss

    task.training_step = autocast_step
    runner = bench_task.Runner(task, bench_task.make_optimizer(task, 'adamw'), batches)
    timers = [HookTimer(views, device, False), HookTimer(task.criterion, device, True)]
    for _ in range(sizes.warmup):
        runner.step()
    peak_mib(device, reset=True)
    times = [
        clock(lambda: [runner.step() for _ in range(sizes.steps)], device)
        for _ in range(sizes.repeats)
    ]
    peak = peak_mib(device)
    for timer in timers:
        timer.active = True
    step_s = 0.0
    for _ in range(sizes.share_steps):
        step_s += clock(runner.step, device)
        timers[1].flush()
    n = sizes.share_steps
    return {
        'img/s': (sizes.steps * sizes.batch_size / statistics.median(times), peak),
        'step': (1000 * step_s / n, None),
        'views': (1000 * timers[0].total_s / n, None),
        'loss': (1000 * timers[1].total_s / n, None),
    }


def task_section(sizes: Sizes, device: torch.device, precision: str) -> list[Any]:
    """RetrievalTask (MACL) against TorchGeo's SimCLR: a training step."""
    batches = [
        {k: v.to(device) for k, v in batch.items()}
        for batch in bench_task.make_batches(sizes.batch_size, sizes.image_size, SEED)
    ]
    for batch in batches:
        batch['image'] = batch['image'].contiguous(memory_format=torch.channels_last)
    res = {}
    for name in ('RetrievalTask', 'SimCLR'):
        res[name] = train(name, batches, sizes, device, precision)
        free(device)
    where = f'batch {sizes.batch_size}, {sizes.image_size} px, {precision}'
    figures = {'RetrievalTask (MACL)': res['RetrievalTask']['img/s']}
    figures['SimCLR'] = res['SimCLR']['img/s']
    rows = [row(f'train step ({where})', 'img/s', figures)]
    for name, r in res.items():
        for part in ('views', 'loss'):
            figures = {f'{name} {part}': r[part], f'{name} step': r['step']}
            rows.append(row(f'{part} share of step ({where})', 'ms', figures))
    return rows


def loss_row(b: int, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """MACLLoss against pml SupConLoss at batch size ``b``: forward + backward."""
    features, labels, freqs = bench_losses.make_batch(b, SEED)
    features = features.to(device).requires_grad_(True)
    labels = labels.to(device)
    v, d = features.shape[1:]
    classes = labels.argmax(dim=1).repeat_interleave(v)
    pml = pml_losses.SupConLoss(temperature=0.1)
    macl = MACLLoss(label_frequencies=freqs).to(device)

    def run_macl() -> None:
        features.grad = None
        macl(features, labels).backward()

    def run_pml() -> None:
        features.grad = None
        pml(features.reshape(b * v, d), classes).backward()

    methods = {'MACLLoss': run_macl, 'pml SupConLoss (first label)': run_pml}
    figures = compare(methods, sizes.repeats, device)
    return row(f'loss fwd+bwd (B={b}, V={v}, D={d}, C={CLASSES})', 'ms', figures)


def loss_section(sizes: Sizes, device: torch.device, precision: str) -> list[Any]:
    """MACLLoss against pml SupConLoss at every batch size."""
    return [loss_row(b, sizes, device) for b in sizes.loss_sizes]


def metrics_section(sizes: Sizes, device: torch.device, precision: str) -> list[Any]:
    """retrieval_metrics against the similarity matmul + top-k floor."""
    q, n = sizes.queries, sizes.database
    data = bench_metrics.make_data(q, n, DIM, CLASSES, SEED)
    qe, ql, de, dl = (t.to(device) for t in data)
    ks = tuple(k for k in KS if k <= n)

    def ours() -> None:
        retrieval_metrics(qe, ql, de, dl, ks)

    def floor() -> None:
        (F.normalize(qe, dim=1) @ F.normalize(de, dim=1).T).topk(max(ks), dim=1)

    methods = {'retrieval_metrics': ours, f'matmul + topk({max(ks)})': floor}
    figures = compare(methods, sizes.repeats, device)
    return [row(f'retrieval metrics ({q} x {n}, D={DIM}, k in {ks})', 'ms', figures)]


def index_row(
    kind: Literal['flat', 'ivf'],
    data: tuple[Tensor, Tensor],
    sizes: Sizes,
    device: torch.device,
) -> dict[str, Any]:
    """EmbeddingIndex against raw faiss with the same parameters: one search."""
    x, q = data
    xn = np.ascontiguousarray(F.normalize(x, dim=1).numpy())
    qn = np.ascontiguousarray(F.normalize(q, dim=1).numpy())
    queries = q.to(device)
    gpu = device.type == 'cuda' and hasattr(faiss, 'StandardGpuResources')
    resources = faiss.StandardGpuResources() if gpu else None

    def place(index: Any) -> Any:
        if resources is None:
            return index
        return faiss.index_cpu_to_gpu(resources, device.index or 0, index)

    ours = EmbeddingIndex(DIM, kind, nlist=sizes.nlist, nprobe=sizes.nprobe)
    ours.train(x)
    ours._index = place(ours._index)
    ours.nprobe = sizes.nprobe
    ours.add(x, bench_index.ids(len(x)))
    spec = 'Flat' if kind == 'flat' else f'IVF{sizes.nlist},Flat'
    raw = faiss.index_factory(DIM, spec, faiss.METRIC_INNER_PRODUCT)
    raw.train(xn)
    raw = place(raw)
    if kind == 'ivf':
        raw.nprobe = sizes.nprobe
    raw.add(xn)
    k = sizes.k
    methods = {
        f"EmbeddingIndex('{kind}')": lambda: ours.search(queries, k),
        f"raw faiss index_factory('{spec}')": lambda: raw.search(qn, k),
    }
    params = f', nlist={sizes.nlist}, nprobe={sizes.nprobe}' if kind == 'ivf' else ''
    what = f'{len(q)} x {len(x)}, k={k}{params}'
    where = 'GPU' if gpu else 'CPU'
    figures = compare(methods, sizes.repeats, device)
    return row(f'faiss {kind} search on the {where} ({what})', 'ms', figures)


def index_section(sizes: Sizes, device: torch.device, precision: str) -> list[Any]:
    """EmbeddingIndex against raw faiss: flat and IVF search."""
    data = bench_index.clustered(sizes.database, sizes.queries, DIM, 1000, SEED, 1.5)
    return [
        index_row('flat', data, sizes, device),
        index_row('ivf', data, sizes, device),
    ]


RUNNERS: dict[str, Callable[[Sizes, torch.device, str], list[dict[str, Any]]]] = {
    'task': task_section,
    'loss': loss_section,
    'metrics': metrics_section,
    'index': index_section,
}


def free(device: torch.device) -> None:
    """Release what the last measurement left behind."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def metadata(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Date, device, versions and settings of the run."""
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        name = f'{cpu}, CPU threads: {torch.get_num_threads()}'
    return {
        'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
        'device': str(device),
        'device_name': name,
        'quick': bool(args.quick),
        'precision': args.precision,
        'python': platform.python_version(),
        'torch': torch.__version__,
        'torchgeo': importlib.metadata.version('torchgeo'),
        'faiss': faiss.__version__,
        'faiss_gpu': hasattr(faiss, 'StandardGpuResources'),
        'sizes': asdict(QUICK if args.quick else FULL),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table under a line of metadata."""
    m = report['meta']
    yes = {True: 'yes', False: 'no'}
    about = (
        f'{m["date"]}; torch {m["torch"]}, torchgeo {m["torchgeo"]}, faiss '
        f'{m["faiss"]} (GPU: {yes[m["faiss_gpu"]]}); quick: {yes[m["quick"]]}; '
        f'precision {m["precision"]}. Ratio = method / anchor in the row unit; peak '
        '= torch.cuda.max_memory_allocated over one call.'
    )
    header = (
        '| section | measurement | method | figure | anchor | anchor figure | ratio | '
        'peak MiB | anchor peak MiB |\n|---|---|---|---:|---|---:|---:|---:|---:|'
    )
    lines = [f'# Device check: {m["device_name"]} ({m["device"]})', '', about, '']
    lines.append(header)

    def mib(value: float | None) -> str:
        return 'n/a' if value is None else f'{value:.1f}'

    for section, result in report['sections'].items():
        if result['error'] is not None:
            error = ' '.join(str(result['error']).split()).replace('|', '\\|')
            lines.append(f'| {section} | ERROR | {error} | | | | | | |')
        for r in result['rows']:
            lines.append(
                f'| {section} | {r["measurement"]} | {r["method"]} | '
                f'{r["value"]:.2f} {r["unit"]} | {r["anchor"]} | '
                f'{r["anchor_value"]:.2f} {r["unit"]} | {r["ratio"]:.3f} | '
                f'{mib(r["peak_mib"])} | {mib(r["anchor_peak_mib"])} |'
            )
    return '\n'.join(lines) + '\n'


def run_section(
    section: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Rows of one section, or its error."""
    start = time.perf_counter()
    result: dict[str, Any] = {'rows': [], 'error': None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            sizes = QUICK if args.quick else FULL
            rows = RUNNERS[section](sizes, device, args.precision)
        keys = ('value', 'anchor_value', 'ratio')
        if not rows or not all(
            math.isfinite(r[k]) and r[k] > 0 for r in rows for k in keys
        ):
            raise ValueError(f'missing or non-positive figures: {rows}')
        result['rows'] = rows
    except Exception as exc:  # noqa: BLE001 (each section's failure is reported)
        traceback.print_exc()
        result['error'] = f'{type(exc).__name__}: {exc}'
    free(device)
    result['seconds'] = time.perf_counter() - start
    print(f'{section}: {result["seconds"]:.1f} s', file=sys.stderr, flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections, write the JSON and Markdown reports and print the table.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every section ran, 1 when one failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='tiny sizes, for CI')
    parser.add_argument('--device', help='default: cuda when available, else cpu')
    parser.add_argument('--precision', choices=('bf16', 'fp32'), default='bf16')
    parser.add_argument('--threads', type=int, help='default: 1 with --quick, else all')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=SECTIONS)
    parser.add_argument('--out-json', type=Path, default='outputs/device_check.json')
    parser.add_argument('--out-md', type=Path, default='outputs/device_check.md')
    args = parser.parse_args(argv)
    device = torch.device(
        args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    )
    torch.backends.cudnn.benchmark = device.type == 'cuda'
    threads = (torch.get_num_threads(), faiss.omp_get_max_threads())
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
        faiss.omp_set_num_threads(args.threads or 1)
    try:
        sections = {s: run_section(s, args, device) for s in args.sections}
        report = {'meta': metadata(args, device), 'sections': sections}
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    text = markdown(report)
    atomic_write_text(args.out_json, json.dumps(report, indent=2) + '\n', fsync=True)
    atomic_write_text(args.out_md, text, fsync=True)
    print(text, end='')
    return 1 if any(r['error'] for r in sections.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
