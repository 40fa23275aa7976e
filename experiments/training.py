"""Train and test one run configuration in this process."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from provenance import display_path
from run_config import lightning_cli


def _label_info(datamodule: Any) -> tuple[list[str] | None, list[float] | None]:
    """Label names and training-split label frequencies of a datamodule."""
    names = getattr(datamodule, 'classes', None)
    for attr in ('train_dataset', 'test_dataset', 'val_dataset'):
        if names is None:
            names = getattr(getattr(datamodule, attr, None), 'classes', None)
    freqs = getattr(datamodule, 'label_frequencies', None)
    if freqs is None:
        freqs = getattr(
            getattr(datamodule, 'train_dataset', None), 'label_frequencies', None
        )
    freq_list = None
    if freqs is not None:
        import torch

        freq_list = [float(x) for x in torch.as_tensor(freqs).flatten().tolist()]
    return (None if names is None else [str(n) for n in names]), freq_list


def _per_label(results: Mapping[str, Any], ks: Iterable[int]) -> dict[str, Any]:
    """Per-label AP@k of the test ranking, for each k within the database size."""
    if 'num_database' not in results:
        return {}
    size = int(results['num_database'])
    out: dict[str, Any] = {
        f'per_label_AP@{k}': [float(x) for x in results[f'AP_label@{k}'].tolist()]
        for k in ks
        if k <= size
    }
    if not out:
        return {}
    out['num_queries'] = int(results['num_queries'])
    out['num_database'] = size
    out['database_label_frequencies'] = [
        float(x) for x in results['database_label_frequency'].tolist()
    ]
    return out


def _device_name(trainer: Any) -> str:
    import torch

    root = getattr(trainer.strategy, 'root_device', None)
    if root is not None and root.type == 'cuda':
        return str(torch.cuda.get_device_name(root))
    return f'{platform.machine()} CPU, {os.cpu_count()} cores'


def run_one(
    config_path: Path, resume_from: Path | None = None, test_checkpoint: str = 'best'
) -> dict[str, Any]:
    """Train and test one configuration.

    LightningCLI, set up as ``torchgeo-macl fit`` sets it up, builds the trainer,
    model and datamodule from the configuration; the model is fitted, then the
    checkpoint with the best monitored validation metric (or the final weights) is
    tested.

    Args:
        config_path: The run's configuration (a ``run_config.yaml``).
        resume_from: Checkpoint to resume training from.
        test_checkpoint: ``best`` (the best monitored validation metric; the final
            weights when no checkpoint was saved) or ``last`` (the final weights).

    Returns:
        ``metrics`` (test metrics without the ``test_`` prefix), per-label AP@k,
        label names and frequencies, timings and checkpoint information.

    Raises:
        argparse.ArgumentError: If LightningCLI rejects the configuration.
        RuntimeError: If the test logged no metric.
    """
    cli = lightning_cli(['--config', str(config_path)])
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule

    start = time.perf_counter()
    trainer.fit(
        model,
        datamodule=datamodule,
        ckpt_path=None if resume_from is None else str(resume_from),
    )
    fit_time = time.perf_counter() - start

    checkpoint = getattr(trainer.checkpoint_callback, 'best_model_path', '') or ''
    if test_checkpoint == 'last':
        checkpoint = ''
    best_score = getattr(trainer.checkpoint_callback, 'best_model_score', None)
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint or None)
    test_time = time.perf_counter() - start

    metrics = {
        key[len('test_') :]: float(value)
        for key, value in sorted(trainer.callback_metrics.items())
        if key.startswith('test_')
    }
    if not metrics:
        raise RuntimeError(f'testing {config_path} logged no test_ metric')
    names, freqs = _label_info(datamodule)
    ks = [int(k) for k in model.hparams.get('ks', (10, 20, 50, 100))]
    record: dict[str, Any] = {'metrics': metrics}
    record.update(_per_label(model.test_results, ks))
    if names is not None:
        record['label_names'] = names
    if freqs is not None:
        record['label_frequencies'] = freqs
    elif 'database_label_frequencies' in record:
        record['label_frequencies'] = record['database_label_frequencies']
    record.update(
        {
            'fit_time_s': round(fit_time, 3),
            'test_time_s': round(test_time, 3),
            'epochs': int(trainer.current_epoch),
            'global_steps': int(trainer.global_step),
            'tested': 'best' if checkpoint else 'last',
            'checkpoint': display_path(checkpoint) if checkpoint else None,
            'best_val_score': None if best_score is None else float(best_score),
            'accelerator': type(trainer.accelerator).__name__,
            'device': _device_name(trainer),
        }
    )
    return record
