"""The demo: MACL vs SupCon on the embedded synthetic archive, end to end on the CPU.

:func:`run_demo` generates the synthetic DLRSD-layout archive, trains MACL and SupCon
from the same seed, evaluates retrieval (every metric at k = 10, 20, 50, 100 and the
rare-label mAP), embeds the database, builds and saves a faiss index, runs example
searches and writes ``report.md`` with the metrics table and figures.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_save_figure, atomic_write_text

if TYPE_CHECKING:
    from torch import Tensor

    from .datamodules import DLRSDRetrievalDataModule

#: File that marks a folder as the demo's output, with the archive it holds.
DEMO_MARKER = '.torchgeo-macl-demo.json'
#: Fewest archive images the demo accepts: the validation split must hold more
#: than 20 images (models are selected by validation mAP@20).
MIN_IMAGES = 240

#: Metrics shown in the report's main table, at every cut-off.
TABLE_METRICS = (
    'mAP',
    'P',
    'NDCG',
    'WAP',
    'ACG',
    'rare_mAP',
    'mAP_jaccard',
    'NDCG_jaccard',
)


@dataclass
class DemoConfig:
    """Settings of the demo (defaults sized for about 3 minutes on 2 CPU cores).

    Attributes:
        out: Output folder.
        num_images: Images in the synthetic archive.
        image_size: Side of the synthetic images.
        train_size: Side the images are resized to on the device for training and
            retrieval.
        epochs: Training epochs per loss.
        batch_size: Images per batch.
        seed: Seed of the archive, the split and the training.
        losses: Losses to train and compare.
        model: timm backbone.
        ks: Retrieval cut-offs.
        queries: Example searches shown in the report.
        progress: Show progress bars.
    """

    out: Path = Path('outputs/demo')
    num_images: int = 840
    image_size: int = 64
    train_size: int = 32
    epochs: int = 8
    batch_size: int = 64
    seed: int = 0
    losses: tuple[str, ...] = ('macl', 'supcon')
    model: str = 'resnet18'
    ks: tuple[int, ...] = (10, 20, 50, 100)
    queries: int = 4
    progress: bool = True
    extra_task_args: dict[str, Any] = field(default_factory=dict)


def _save_figure(fig: Any, path: Path) -> None:
    """Save a figure of the report as PNG, atomically, and close it."""
    atomic_save_figure(fig, path, dpi=110)


@dataclass
class LossRun:
    """What the demo keeps of one trained loss."""

    loss: str
    metrics: dict[str, float]
    per_label_ap: Tensor
    per_label_k: int
    curves: list[dict[str, str]]
    checkpoint: Path
    seconds: float


def _datamodule(cfg: DemoConfig, data_root: Path) -> DLRSDRetrievalDataModule:
    """Build the datamodule of the synthetic archive with the demo's settings.

    Its ``predict_dataloader`` serves the database (train + val).

    Args:
        cfg: Settings.
        data_root: Folder of the synthetic archive.

    Returns:
        The datamodule, not yet set up.
    """
    from torchgeo_macl.datamodules import DLRSDRetrievalDataModule

    return DLRSDRetrievalDataModule(
        root=str(data_root),
        batch_size=cfg.batch_size,
        image_size=cfg.train_size,
        seed=cfg.seed,
        split_seed=cfg.seed,
    )


def _train_and_evaluate(cfg: DemoConfig, loss: str, data_root: Path) -> LossRun:
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.loggers import CSVLogger

    from torchgeo_macl.tasks import RetrievalTask

    start = time.perf_counter()
    seed_everything(cfg.seed, verbose=False)
    dm = _datamodule(cfg, data_root)
    task = RetrievalTask(
        model=cfg.model,
        loss=loss,
        embed_dim=64,
        proj_hidden_dim=256,
        warmup_epochs=1,
        lr=1e-3,
        image_size=cfg.train_size,
        color_jitter=0.1,
        ks=cfg.ks,
        monitor='val_mAP@20',
        **cfg.extra_task_args,
    )
    run_dir = cfg.out / 'runs' / loss
    # the demo's own folder (see prepare_output): a rerun starts the run afresh
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(
        accelerator='cpu',
        max_epochs=cfg.epochs,
        default_root_dir=run_dir,
        logger=CSVLogger(run_dir, name='', version=''),
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=dm)
    results = trainer.test(task, datamodule=dm, verbose=False)[0]
    metrics = {k.removeprefix('test_'): float(v) for k, v in results.items()}
    # per-label AP of the test ranking, at the cut-off closest to 20
    per_label_k = min(cfg.ks, key=lambda k: (abs(k - 20), k))
    per_label = task.test_results[f'AP_label@{per_label_k}']
    with open(run_dir / 'metrics.csv') as f:
        curves = list(csv.DictReader(f))
    ckpt = run_dir / 'final.ckpt'
    trainer.save_checkpoint(ckpt)
    return LossRun(
        loss, metrics, per_label, per_label_k, curves, ckpt, time.perf_counter() - start
    )


def _metrics_table(runs: Sequence[LossRun], ks: Sequence[int]) -> str:
    header = '| metric | ' + ' | '.join(r.loss.upper() for r in runs) + ' |'
    lines = [header, '|---' * (len(runs) + 1) + '|']
    for name in TABLE_METRICS:
        for k in ks:
            key = f'{name}@{k}'
            if all(key in r.metrics for r in runs):
                values = [r.metrics[key] for r in runs]
                best = max(values)
                cells = [
                    f'**{v:.4f}**' if v == best and len(runs) > 1 else f'{v:.4f}'
                    for v in values
                ]
                lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _plot_per_label(
    runs: Sequence[LossRun], classes: Sequence[str], freqs: Tensor, path: Path
) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    order = freqs.argsort(descending=True).tolist()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        ap = run.per_label_ap
        values = [float(ap[c]) if math.isfinite(float(ap[c])) else 0.0 for c in order]
        ax.bar(
            [x + i * width for x in range(len(order))], values, width, label=run.loss
        )
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(order))])
    ax.set_xticklabels(
        [f'{classes[c]}\n{float(freqs[c]):.2f}' for c in order], fontsize=7
    )
    ax.set_ylabel(f'AP@{runs[0].per_label_k} (queries with the label)')
    ax.set_xlabel('label (training frequency), most frequent first')
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _plot_curves(runs: Sequence[LossRun], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for run in runs:
        steps = [
            (int(r['step']), float(r['train_loss']))
            for r in run.curves
            if r.get('train_loss')
        ]
        vals = [
            (int(r['epoch']), float(r['val_mAP@20']))
            for r in run.curves
            if r.get('val_mAP@20')
        ]
        if steps:
            axes[0].plot(*zip(*steps), label=run.loss)
        if vals:
            axes[1].plot(*zip(*vals), marker='o', label=run.loss)
    axes[0].set_title('training loss')
    axes[0].set_xlabel('step')
    axes[1].set_title('validation mAP@20')
    axes[1].set_xlabel('epoch')
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def prepare_output(cfg: DemoConfig) -> Path:
    """Claim the output folder and write (or reuse) the synthetic archive in it.

    The folder must be new, empty, or an earlier output of the demo (it holds
    :data:`DEMO_MARKER`); a folder with other files is refused before anything is
    written, so that no file of the user's is replaced. The archive of an earlier
    run is reused when it was written with the same settings, and written again
    otherwise.

    Args:
        cfg: Settings.

    Returns:
        The archive root (``<out>/data``).

    Raises:
        FileExistsError: If ``cfg.out`` is a file, or a folder with files the demo
            did not write.
    """
    from torchgeo_macl.datasets import make_synthetic_dlrsd

    out = cfg.out
    marker = out / DEMO_MARKER
    if out.exists() and not out.is_dir():
        raise FileExistsError(f'{out} exists and is not a folder')
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise FileExistsError(
            f'{out} holds files the demo did not write; choose a new or empty '
            'folder (the demo writes report.md, metrics.json, pictures, runs/ and '
            'data/ there)'
        )
    try:
        recorded = json.loads(marker.read_text()).get('archive')
    except (OSError, ValueError, AttributeError):
        recorded = None
    archive = {
        'num_images': cfg.num_images,
        'image_size': cfg.image_size,
        'seed': cfg.seed,
    }
    data_root = out / 'data'
    if recorded == archive and (data_root / 'DLRSD').is_dir():
        print(f'[demo] synthetic archive: reusing {data_root / "DLRSD"}')
        return data_root
    # claim the folder first: an interrupted archive is written again next time
    atomic_write_text(marker, json.dumps({'archive': None}) + '\n')
    print(f'[demo] synthetic archive: {cfg.num_images} images of {cfg.image_size} px')
    make_synthetic_dlrsd(
        data_root,
        num_images=cfg.num_images,
        image_size=cfg.image_size,
        seed=cfg.seed,
        overwrite=True,
    )
    atomic_write_text(marker, json.dumps({'archive': archive}, indent=1) + '\n')
    return data_root


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo and write its report.

    Args:
        cfg: Settings.

    Returns:
        Path of ``report.md``.

    Raises:
        FileExistsError: If the output folder holds files the demo did not write
            (see :func:`prepare_output`).
        ValueError: If the archive is too small for a validation split of more than
            20 images (models are selected by validation mAP@20).
    """
    from torchgeo_macl.datasets import DLRSD
    from torchgeo_macl.search import (
        ArchiveInfo,
        EmbeddingIndex,
        datamodule_sources,
        embed_datamodule,
        load_task,
        model_fingerprint,
        plot_search_grid,
        save_archive_info,
        search_archive,
    )

    start = time.perf_counter()
    if cfg.num_images < MIN_IMAGES:
        raise ValueError(
            f'num_images={cfg.num_images} is too small for the demo: models are '
            'selected by validation mAP@20, which needs a validation split of more '
            f'than 20 images; use {MIN_IMAGES} images or more'
        )
    data_root = prepare_output(cfg)
    val_size = len(DLRSD(root=str(data_root), split='val', split_seed=cfg.seed))
    if val_size <= 20:
        raise ValueError(
            f'num_images={cfg.num_images} is too small for the demo: the validation '
            f'split has {val_size} images, and models are selected by validation '
            'mAP@20, which needs at least 21; use about 250 images or more'
        )
    runs = []
    for loss in cfg.losses:
        print(f'[demo] training {loss} for {cfg.epochs} epochs')
        runs.append(_train_and_evaluate(cfg, loss, data_root))
        print(f'[demo] {loss}: mAP@20 = {runs[-1].metrics["mAP@20"]:.4f}')

    # index the database with the first loss's model and run example searches
    print('[demo] indexing the database and searching')
    task = load_task(runs[0].checkpoint)
    dm = _datamodule(cfg, data_root)
    dm.setup('predict')
    embeddings, ids, labels = embed_datamodule(
        task, dm, accelerator='cpu', progress=cfg.progress
    )
    fingerprint = model_fingerprint(task)
    index = EmbeddingIndex(embeddings.shape[1], 'flat', model_id=fingerprint)
    index.add(embeddings, ids, labels)
    index_path = cfg.out / 'index' / runs[0].loss
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index.save(index_path)
    info = ArchiveInfo(
        str(runs[0].checkpoint),
        fingerprint,
        list(DLRSD.classes),
        datamodule_sources(dm),
    )
    save_archive_info(index_path, info)
    test = DLRSD(root=str(data_root), split='test', split_seed=cfg.seed)
    import torch

    generator = torch.Generator().manual_seed(cfg.seed)
    picks = torch.randperm(len(test), generator=generator)[: cfg.queries].tolist()
    queries = [test.image_paths[i] for i in picks]
    results = search_archive(
        index, info, task, queries, k=8, query_labels=[test.labels[i] for i in picks]
    )
    _save_figure(
        plot_search_grid(results, info, columns=8), cfg.out / 'retrieval_grid.png'
    )
    # the query labels are known here: mark overlap in the table
    query_labels = {q: test.labels[i] for q, i in zip(queries, picks)}

    train = DLRSD(root=str(data_root), split='train', split_seed=cfg.seed)
    _plot_per_label(
        runs, DLRSD.classes, train.label_frequencies, cfg.out / 'per_label_ap.png'
    )
    _plot_curves(runs, cfg.out / 'training_curves.png')

    seconds = time.perf_counter() - start
    lines = [
        '# torchgeo-macl demo',
        '',
        (
            f'Synthetic DLRSD-layout archive ({cfg.num_images} images, '
            f'{cfg.image_size} px, resized to {cfg.train_size} px, seed {cfg.seed}), '
            f'{cfg.model} trained from scratch '
            f'for {cfg.epochs} epochs per loss on the CPU, batch size {cfg.batch_size}. '
            'Queries: the test split; database: train + val. Ranking by cosine '
            'similarity.'
        ),
        '',
        '## Retrieval metrics (test split)',
        '',
        _metrics_table(runs, cfg.ks),
        '',
        'Training time: '
        + ', '.join(f'{r.loss} {r.seconds:.0f} s' for r in runs)
        + f'; whole demo {seconds:.0f} s.',
        '',
        '## Example searches',
        '',
        f'Index: `{index_path}` (faiss flat, {len(index)} items, model `{fingerprint[:19]}…`).',
        'Green frames share at least one label with the query, red frames none.',
        '',
        '![retrieval grid](retrieval_grid.png)',
        '',
    ]
    for q, hits in results:
        ql = query_labels[q]
        names = [DLRSD.classes[i] for i in ql.nonzero().flatten().tolist()]
        lines.append(
            f'- `{Path(q).name}` ({", ".join(names)}): '
            + ', '.join(
                f'{h.id} {h.score:.2f} [{len(set(h.labels) & set(names))} shared]'
                for h in hits
            )
        )
    lines += [
        '',
        '## Per-label AP@20, labels ordered by training frequency',
        '',
        '![per-label AP](per_label_ap.png)',
        '',
        '## Training curves',
        '',
        '![training curves](training_curves.png)',
        '',
    ]
    report = cfg.out / 'report.md'
    atomic_write_text(report, '\n'.join(lines))
    atomic_write_text(
        cfg.out / 'metrics.json',
        json.dumps({r.loss: r.metrics for r in runs}, indent=1, sort_keys=True),
    )
    print(f'[demo] report: {report}')
    print(f'[demo] finished in {seconds:.0f} s')
    return report
