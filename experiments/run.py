"""Run the experiment grid: datasets x losses x ablations x seeds.

Every run is the command line of ``torchgeo-macl fit``: ``--config
configs/<dataset>/base.yaml`` (the protocol shared by every loss on that dataset),
``--config configs/losses/<loss>.yaml`` (only ``model.init_args.loss`` and
``loss_kwargs``, the same on every dataset), then dotted overrides: the seed
(``seed_everything`` and the sampler's ``data.init_args.seed``; the data split stays
fixed by ``split_seed``), the ablation's, the command line's and the run directory.
LightningCLI merges them (see ``run_config.py``); its dump of the result is written
to ``<results>/runs/<dataset>/<method>/seed<k>/run_config.yaml`` (``<results>``:
``outputs/experiments``, or ``--results``; the committed results are
``experiments/results``; ``method`` is the
loss, or ``<loss>+<ablation>``), so ``torchgeo-macl fit --config <that file>``
repeats the training. The run trains and tests in this process (``training.py``):
the checkpoint with the best monitored validation metric is tested
(``--test-checkpoint last``: the final weights), and ``metrics.json`` is written
next to the configuration: test metrics without the ``test_`` prefix, per-label
AP@k with the label names and training-split label frequencies, the command line,
config files, overrides, seed, date, package versions and wall time.

A run whose ``metrics.json`` exists is skipped when its recorded configuration is
the one the configs give now (display switches aside), and run again (replacing
the old results) when it changed. A run that crashed has no ``metrics.json`` and is
run again; when its configuration is unchanged and it left a ``last.ckpt``,
training resumes from that checkpoint (``--fresh`` starts over). Checkpoints are
deleted once ``metrics.json`` is written, unless ``--keep-checkpoints``.

MACL ablations (``--ablations``, listed in ``grid.py``) each turn one component of
the full ``macl`` run off; an ablation that changes nothing on a dataset (no
mask-aware views on ML-AID) is left out of the plan. ``--define-ablation NAME
KEY=VALUE ...`` adds one, applied to every selected loss.

The synthetic archive (``configs/synthetic``) is written under its
``data.init_args.root`` when missing, with :data:`SYNTHETIC_ARCHIVE` (change with
``--synthetic-images`` / ``--synthetic-size``). Relative paths in the configs are
relative to the working directory: run from the repository root.

Examples::

    python experiments/run.py --datasets synthetic --seeds 0 1 2
    python experiments/run.py --datasets synthetic --losses macl --seeds 0 1 2 \\
        --ablations all
    python experiments/run.py --datasets dlrsd --dry-run
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grid import (
    ABLATIONS,
    CONFIG_DIR,
    LOSSES,
    RESULTS_DIR,
    Ablation,
    Run,
    available_datasets,
)
from planning import METRICS_FILE, Options, configure, plan, resolve_config, state
from provenance import display_path, replace_prefix, versions, write_json_atomic
from run_config import RUN_CONFIG_FILE, RunConfig, parse_assignment, same_run
from synthetic_archive import (
    SYNTHETIC_ARCHIVE,
    SYNTHETIC_DATASETS,
    SYNTHETIC_PARAMS_FILE,
    ensure_synthetic_archive,
)
from torchgeo_macl._io import atomic_write_text
from training import run_one

#: The names this script offers to Python callers.
__all__ = [
    'ABLATIONS',
    'LOSSES',
    'SYNTHETIC_ARCHIVE',
    'SYNTHETIC_PARAMS_FILE',
    'Ablation',
    'Options',
    'Run',
    'available_datasets',
    'ensure_synthetic_archive',
    'execute',
    'main',
    'parse_assignment',
    'plan',
    'resolve_config',
    'run_one',
]


def _data_root(current: RunConfig) -> Path:
    return Path(str(current.config['data']['init_args'].get('root', 'data')))


def _find_last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob('last*.ckpt'), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def execute(run: Run, current: RunConfig, options: Options, tag: str) -> str:
    """Run one cell of the grid unless it is finished.

    Args:
        run: The run.
        current: Its configuration.
        options: Shared settings.
        tag: Prefix of the progress lines (``[i/n] <run name>``).

    Returns:
        ``'skip'``, ``'done'`` or ``'failed'``.
    """
    run_dir = run.run_dir(options.results_dir)
    metrics_path = run_dir / METRICS_FILE
    config_path = run_dir / RUN_CONFIG_FILE
    status = state(run, options, current)
    if status == 'done':
        print(f'{tag}: skip ({display_path(metrics_path)} exists)', flush=True)
        return 'skip'
    if status == 'changed':
        print(
            f'{tag}: the configuration changed since {display_path(metrics_path)} '
            'was written; running again',
            flush=True,
        )
    resume_from = None
    if status == 'unfinished':
        if same_run(config_path, current) and not options.fresh:
            resume_from = _find_last_checkpoint(run_dir)
        if resume_from is not None:
            print(f'{tag}: resume from {display_path(resume_from)}', flush=True)
        else:
            print(f'{tag}: unfinished earlier attempt, starting over', flush=True)
    if run_dir.exists() and resume_from is None:
        shutil.rmtree(run_dir)
    atomic_write_text(config_path, current.text)

    if run.dataset in SYNTHETIC_DATASETS:
        ensure_synthetic_archive(_data_root(current), options.synthetic_archive)

    print(f'{tag}: running ({display_path(config_path)})', flush=True)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')
    start = time.perf_counter()
    try:
        result = run_one(config_path, resume_from, options.test_checkpoint)
    except Exception:  # noqa: BLE001 (any failure of a run is reported)
        print(f'{tag}: FAILED after {time.perf_counter() - start:.1f} s', flush=True)
        traceback.print_exc()
        return 'failed'
    wall = time.perf_counter() - start

    record: dict[str, Any] = {
        'dataset': run.dataset,
        'loss': run.loss,
        'ablation': run.ablation.name,
        'method': run.method,
        'seed': run.seed,
        'metrics': result.pop('metrics'),
        **result,
    }
    params_file = _data_root(current) / SYNTHETIC_PARAMS_FILE
    if run.dataset in SYNTHETIC_DATASETS and params_file.is_file():
        record['synthetic_archive'] = json.loads(params_file.read_text('utf-8'))
    record |= {
        'command': options.command,
        'config_files': [display_path(p) for p in run.config_files(options.config_dir)],
        'overrides': dict(run.ablation.overrides) | dict(options.overrides),
        'run_config': display_path(config_path),
        'config': replace_prefix(current.config, str(run_dir), display_path(run_dir)),
        'resumed_from': display_path(resume_from) if resume_from else None,
        'date': date,
        'versions': versions(),
        'wall_time_s': round(wall, 3),
    }
    write_json_atomic(metrics_path, record)
    if not options.keep_checkpoints:
        for ckpt in run_dir.rglob('*.ckpt'):
            ckpt.unlink()
    summary = ', '.join(
        f'{k} = {v:.4f}'
        for k, v in record['metrics'].items()
        if k.startswith(('mAP@', 'rare_mAP@'))
    )
    print(f'{tag}: done in {wall:.1f} s  {summary}', flush=True)
    return 'done'


# --------------------------------------------------------------------- command line
def _yaml(text: str) -> Any:
    return parse_assignment(f'value={text}')[1]


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and '.' not in text else value


#: Options of this script that set a configuration key, and the keys they set.
_SHORTCUTS = {
    'max_epochs': ('trainer.max_epochs',),
    'limit_train_batches': ('trainer.limit_train_batches',),
    'limit_val_batches': ('trainer.limit_val_batches',),
    'limit_test_batches': ('trainer.limit_test_batches',),
    'accelerator': ('trainer.accelerator',),
    'devices': ('trainer.devices',),
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog='experiments/run.py',
        description=(
            'Train and test every (dataset, loss, ablation, seed) of a grid; one '
            'metrics.json per run under RESULTS/runs/<dataset>/<method>/seed<k>.'
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        '--datasets',
        nargs='+',
        default=['synthetic'],
        help="datasets (folders of the configs directory) or 'all'",
    )
    add('--losses', nargs='+', default=list(LOSSES), help="losses or 'all'")
    add('--seeds', nargs='+', type=int, default=[0, 1, 2], help='training seeds')
    add(
        '--ablations',
        nargs='+',
        help=f"ablations of MACL ({', '.join(ABLATIONS)}) or 'all' (default: full, "
        'or only the defined ones with --define-ablation)',
    )
    add(
        '--define-ablation',
        nargs='+',
        action='append',
        default=[],
        metavar=('NAME', 'KEY=VALUE'),
        help='add an ablation (applied to every selected loss) and select it',
    )
    add(
        '--set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override a config key in every run (dotted, value read as YAML), '
        'e.g. data.init_args.num_workers=2',
    )
    add('--max-epochs', type=int, help='trainer and schedule length in epochs')
    for split in ('train', 'val', 'test'):
        add(
            f'--limit-{split}-batches',
            type=_number,
            help=f'trainer.limit_{split}_batches (a count or a fraction)',
        )
    add('--accelerator', help='trainer.accelerator (cpu, gpu, auto)')
    add('--devices', type=_yaml, help='trainer.devices (a count, a list, auto)')
    add('--configs', type=Path, default=CONFIG_DIR, help='configs directory')
    add('--results', type=Path, default=RESULTS_DIR, help='results directory')
    add(
        '--synthetic-images',
        type=int,
        default=SYNTHETIC_ARCHIVE['num_images'],
        help='images of the synthetic archive when it has to be written',
    )
    add(
        '--synthetic-size',
        type=int,
        default=SYNTHETIC_ARCHIVE['image_size'],
        help='image side of the synthetic archive when it has to be written',
    )
    add(
        '--test-checkpoint',
        choices=('best', 'last'),
        default='best',
        help='test the checkpoint with the best monitored validation metric, or '
        'the final weights',
    )
    for flag, text in (
        ('--dry-run', 'list the plan and run nothing'),
        ('--fresh', 'start crashed runs over instead of resuming from their last.ckpt'),
        ('--keep-checkpoints', 'keep the checkpoints of finished runs'),
        ('--stop-on-error', 'stop at the first failed run'),
        ('--quiet', "hide Lightning's progress bars and model summaries"),
    ):
        add(flag, action='store_true', help=text)
    return parser


def _select(requested: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    if list(requested) == ['all']:
        return list(known)
    unknown = [r for r in requested if r not in known]
    if unknown:
        raise ValueError(
            f'unknown {what} {", ".join(map(repr, unknown))}; choose from '
            f'{", ".join(known)} or all'
        )
    return list(dict.fromkeys(requested))


def _ablations(args: argparse.Namespace) -> list[Ablation]:
    custom: list[Ablation] = []
    for spec in args.define_ablation:
        name, assignments = spec[0], spec[1:]
        if not assignments or '=' in name or name in ABLATIONS:
            raise ValueError(
                f'--define-ablation needs a new NAME and KEY=VALUE pairs, got '
                f'{shlex.join(spec)!r}'
            )
        overrides = tuple(parse_assignment(a) for a in assignments)
        custom.append(Ablation(name, overrides, None, 'defined on the command line'))
    names = args.ablations or ([] if custom else ['full'])
    chosen = [ABLATIONS[n] for n in _select(names, list(ABLATIONS), 'ablation')]
    return chosen + custom


def _print_plan(runs: Sequence[Run], configs: Sequence[RunConfig], o: Options) -> None:
    print(f'{len(runs)} runs; results under {display_path(o.results_dir)}')
    for i, (run, current) in enumerate(zip(runs, configs), 1):
        files = ' + '.join(display_path(p) for p in run.config_files(o.config_dir))
        extra = ', '.join(f'{k}={v!r}' for k, v in run.ablation.overrides)
        print(
            f'[{i}/{len(runs)}] {run.name}  {state(run, o, current)}  {files}'
            + (f'  [{extra}]' if extra else '')
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` by default).

    Returns:
        0 when every run finished or was skipped, 1 when a run failed, 2 for bad
        arguments.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    options = Options(
        config_dir=args.configs.resolve(),
        results_dir=args.results.resolve(),
        keep_checkpoints=args.keep_checkpoints,
        fresh=args.fresh,
        quiet=args.quiet,
        test_checkpoint=args.test_checkpoint,
        synthetic_archive=SYNTHETIC_ARCHIVE
        | {'num_images': args.synthetic_images, 'image_size': args.synthetic_size},
        command=shlex.join(['python', display_path(__file__), *args_list]),
    )
    try:
        datasets = _select(args.datasets, available_datasets(args.configs), 'dataset')
        losses = _select(args.losses, LOSSES, 'loss')
        ablations = _ablations(args)
        options.overrides = [parse_assignment(a) for a in args.set]
        for name, keys in _SHORTCUTS.items():
            if getattr(args, name) is not None:
                options.overrides += [(key, getattr(args, name)) for key in keys]
        runs = plan(datasets, losses, args.seeds, ablations, options)
        configs = [configure(run, options) for run in runs]
    except (FileNotFoundError, ValueError, argparse.ArgumentError) as exc:
        parser.error(str(exc))

    if args.dry_run:
        _print_plan(runs, configs, options)
    roots = {r.dataset: _data_root(c) for r, c in zip(runs, configs)}
    for dataset, root in roots.items():
        if dataset not in SYNTHETIC_DATASETS:
            continue
        try:
            written = ensure_synthetic_archive(
                root, options.synthetic_archive, args.dry_run
            )
        except ValueError as exc:
            parser.error(str(exc))
        if written and args.dry_run:
            print(
                f'would write the synthetic archive {root / "DLRSD"} '
                f'({options.synthetic_archive})'
            )
    if args.dry_run:
        return 0

    counts = {'done': 0, 'skip': 0, 'failed': 0}
    start = time.perf_counter()
    for i, (run, current) in enumerate(zip(runs, configs), 1):
        status = execute(run, current, options, f'[{i}/{len(runs)}] {run.name}')
        counts[status] += 1
        if status == 'failed' and args.stop_on_error:
            break
    print(
        f'{counts["done"]} done, {counts["skip"]} skipped, {counts["failed"]} failed '
        f'of {len(runs)} runs in {time.perf_counter() - start:.1f} s',
        flush=True,
    )
    return 1 if counts['failed'] else 0


if __name__ == '__main__':
    sys.exit(main())
