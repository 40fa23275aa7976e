"""The plan of a grid: shared settings, each run's configuration and its state.

:func:`plan` lists the runs of a grid in execution order, :func:`configure` gives
the configuration of each (see ``run_config.py``) and :func:`state` tells whether
it is finished with that configuration, finished with another one, unfinished or
still to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid import ABLATIONS, CONFIG_DIR, RESULTS_DIR, Ablation, Run
from run_config import RUN_CONFIG_FILE, RunConfig, resolve, same_run
from synthetic_archive import SYNTHETIC_ARCHIVE

#: Name of the per-run results file.
METRICS_FILE = 'metrics.json'


@dataclass
class Options:
    """Settings shared by every run of an invocation.

    Attributes:
        config_dir: Directory of the YAML configs.
        results_dir: Root of the results.
        overrides: Dotted keys and values applied to every run, in order.
        keep_checkpoints: Keep the checkpoints of finished runs.
        fresh: Start crashed runs over instead of resuming them.
        quiet: Hide Lightning's progress bars and model summary.
        test_checkpoint: ``best`` or ``last``: the weights that are tested.
        synthetic_archive: Parameters of the synthetic archive.
        command: The command line, for the records.
    """

    config_dir: Path = CONFIG_DIR
    results_dir: Path = RESULTS_DIR
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    keep_checkpoints: bool = False
    fresh: bool = False
    quiet: bool = False
    test_checkpoint: str = 'best'
    synthetic_archive: dict[str, int] = field(
        default_factory=lambda: dict(SYNTHETIC_ARCHIVE)
    )
    command: str = ''


def configure(run: Run, options: Options, run_dir: Path | None = None) -> RunConfig:
    """The configuration of one run, as LightningCLI merges it.

    Args:
        run: The run.
        options: Shared settings (config directory, overrides, ``quiet``).
        run_dir: Directory of the run (default: from ``options.results_dir``);
            becomes ``trainer.default_root_dir`` and the logger's directory.

    Returns:
        The arguments, the configuration and its dump.
    """
    return resolve(
        run.config_files(options.config_dir),
        [*run.ablation.overrides, *options.overrides],
        run.seed,
        run_dir or run.run_dir(options.results_dir),
        options.quiet,
    )


def resolve_config(
    run: Run, options: Options, run_dir: Path | None = None
) -> dict[str, Any]:
    """The configuration of one run (see :func:`configure`), every default filled in.

    Args:
        run: The run.
        options: Shared settings.
        run_dir: Directory of the run (default: from ``options.results_dir``).

    Returns:
        The configuration LightningCLI reads.
    """
    return configure(run, options, run_dir).config


def plan(
    datasets: Sequence[str],
    losses: Sequence[str],
    seeds: Sequence[int],
    ablations: Sequence[Ablation],
    options: Options,
) -> list[Run]:
    """The runs of a grid, in execution order (dataset, loss, ablation, seed).

    Ablations that do not apply to a loss, or change nothing in a dataset's
    configuration, are left out.

    Args:
        datasets: Dataset names.
        losses: Loss names.
        seeds: Training seeds.
        ablations: Ablations.
        options: Shared settings.

    Returns:
        The runs.

    Raises:
        FileNotFoundError: If a dataset or loss has no config file.
    """
    runs: list[Run] = []
    where = Path('run')
    for dataset in datasets:
        for loss in losses:
            full = Run(dataset, loss, ABLATIONS['full'], seeds[0] if seeds else 0)
            for path in full.config_files(options.config_dir):
                if not path.is_file():
                    raise FileNotFoundError(
                        f'no config file {path} for dataset {dataset!r} and loss '
                        f'{loss!r}'
                    )
            for ablation in ablations:
                if ablation.losses is not None and loss not in ablation.losses:
                    continue
                first = Run(dataset, loss, ablation, full.seed)
                if ablation.overrides and resolve_config(
                    first, options, where
                ) == resolve_config(full, options, where):
                    continue
                runs.extend(Run(dataset, loss, ablation, seed) for seed in seeds)
    return runs


def state(run: Run, options: Options, current: RunConfig) -> str:
    """Where a run stands.

    Args:
        run: The run.
        options: Shared settings.
        current: Its configuration now.

    Returns:
        ``done`` (finished with this configuration), ``changed`` (finished with
        another one), ``unfinished`` (started, no results) or ``todo``.
    """
    run_dir = run.run_dir(options.results_dir)
    if (run_dir / METRICS_FILE).exists():
        return 'done' if same_run(run_dir / RUN_CONFIG_FILE, current) else 'changed'
    return 'unfinished' if run_dir.exists() else 'todo'
