"""Run the experiment grid: datasets x losses x ablations x seeds.

Every run is configured by two YAML files, ``configs/<dataset>/base.yaml`` (the
protocol shared by every loss on that dataset) and ``configs/losses/<loss>.yaml``
(only ``model.init_args.loss`` and ``loss_kwargs``, shared by every dataset), merged in that order (mappings
key by key, anything else replaced), then the ablation's overrides, the seed
(``seed_everything`` and the sampler's ``data.init_args.seed``; the data split stays
fixed by ``split_seed``) and the command-line overrides. The merged configuration is
written to ``<results>/runs/<dataset>/<method>/seed<k>/run_config.yaml`` (``method`` is
the loss, or ``<loss>+<ablation>``), so ``torchgeo-macl fit --config
<that file>`` repeats the training. The run trains with LightningCLI (every TorchGeo
plugin loaded, as ``torchgeo-macl fit`` does), tests the checkpoint with the best
monitored validation metric (``--test-checkpoint last``: the final weights; the test
split queries the train + val database) and writes
``metrics.json`` next to the configuration: test metrics without the ``test_``
prefix, per-label AP@k with the label names and training-split label frequencies,
the command line, config files, overrides, seed, date, package versions and wall
time.

A run whose ``metrics.json`` exists is skipped when its recorded configuration is
the one the configs give now, and run again (replacing the old results) when it
changed. A run that crashed has no ``metrics.json`` and is run again; when its configuration is unchanged and it left a ``last.ckpt``, training
resumes from that checkpoint (``--fresh`` starts over). Checkpoints are deleted once
``metrics.json`` is written, unless ``--keep-checkpoints``.

MACL ablations (``--ablations``; each applies to the ``macl`` loss only). The full
MACL configuration is the ``macl`` run itself: ``macl.yaml`` turns on pair
reweighting (``alpha``), graded overlap (``beta``) and the dynamic temperature
(``gamma_j``, ``gamma_rho``), and ``base.yaml`` turns on label-aware sampling and,
where the dataset has masks, mask-aware views, for every loss. Each ablation turns
one component off:

==========================  ===================================================
``full``                    nothing changed (the plain ``macl`` run)
``no_pair_reweighting``     ``loss_kwargs.pair_weighting = mean``, ``alpha = 0``
``no_anchor_weighting``     ``loss_kwargs.anchor_alpha = 0``
``no_dynamic_temperature``  ``loss_kwargs.gamma_j = gamma_rho = 0``
``no_graded_overlap``       ``loss_kwargs.beta = 0``
``no_label_aware_sampling`` ``data.init_args.sampler = random``
``no_mask_aware_views``     ``model.init_args.mask_aware_views = false``
==========================  ===================================================

An ablation that changes nothing on a dataset (no mask-aware views on ML-AID) is
left out of the plan. ``--define-ablation NAME KEY=VALUE ...`` adds one, applied to
every selected loss.

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
import contextlib
import copy
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXPERIMENTS_DIR.parent
CONFIG_DIR = EXPERIMENTS_DIR / 'configs'
RESULTS_DIR = EXPERIMENTS_DIR / 'results'

#: Loss names, in report order (a ``<loss>.yaml`` per dataset).
LOSSES = ('macl', 'supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent', 'bce')

#: Name of the per-run results file.
METRICS_FILE = 'metrics.json'
#: Name of the merged configuration written into every run directory.
RUN_CONFIG_FILE = 'run_config.yaml'

#: Datasets whose archive this script writes when missing, and its parameters
#: (arguments of :func:`torchgeo_macl.datasets.make_synthetic_dlrsd`).
SYNTHETIC_DATASETS = ('synthetic',)
SYNTHETIC_ARCHIVE: dict[str, int] = {'num_images': 840, 'image_size': 64, 'seed': 0}
#: File next to the generated archive recording the parameters it was made with.
SYNTHETIC_PARAMS_FILE = 'synthetic_archive.json'


@dataclass(frozen=True)
class Ablation:
    """A named set of configuration overrides.

    Attributes:
        name: Name, used in the run directory (``<loss>+<name>``).
        overrides: Dotted configuration keys and their values.
        losses: Losses it applies to (None: every loss).
        description: One line for the plan and the report.
    """

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    losses: tuple[str, ...] | None = None
    description: str = ''


_KW = 'model.init_args.loss_kwargs'

#: Built-in ablations of MACL, in report order; ``full`` changes nothing.
ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation('full', (), None, 'every component on'),
        Ablation(
            'no_pair_reweighting',
            ((f'{_KW}.pair_weighting', 'mean'), (f'{_KW}.alpha', 0.0)),
            ('macl',),
            'pair reweighting off (pair_weighting = mean, alpha = 0)',
        ),
        Ablation(
            'no_anchor_weighting',
            ((f'{_KW}.anchor_alpha', 0.0),),
            ('macl',),
            'anchor weighting off (anchor_alpha = 0)',
        ),
        Ablation(
            'no_dynamic_temperature',
            ((f'{_KW}.gamma_j', 0.0), (f'{_KW}.gamma_rho', 0.0)),
            ('macl',),
            'dynamic temperature off (gamma_j = gamma_rho = 0)',
        ),
        Ablation(
            'no_graded_overlap',
            ((f'{_KW}.beta', 0.0),),
            ('macl',),
            'graded overlap off (beta = 0)',
        ),
        Ablation(
            'no_label_aware_sampling',
            (('data.init_args.sampler', 'random'),),
            ('macl',),
            'random batches instead of label-aware sampling',
        ),
        Ablation(
            'no_mask_aware_views',
            (('model.init_args.mask_aware_views', False),),
            ('macl',),
            'view labels = image labels (no mask-aware views)',
        ),
    )
}


@dataclass(frozen=True)
class Run:
    """One cell of the grid.

    Attributes:
        dataset: Dataset (folder under the configs directory).
        loss: Loss name.
        ablation: The ablation applied.
        seed: Training seed.
    """

    dataset: str
    loss: str
    ablation: Ablation
    seed: int

    @property
    def method(self) -> str:
        """The loss, or ``<loss>+<ablation>`` for an ablation other than ``full``."""
        if self.ablation.name == 'full':
            return self.loss
        return f'{self.loss}+{self.ablation.name}'

    @property
    def name(self) -> str:
        """``<dataset>/<method>/seed<k>``."""
        return f'{self.dataset}/{self.method}/seed{self.seed}'

    def run_dir(self, results_dir: Path) -> Path:
        """Directory of this run.

        Args:
            results_dir: Root of the results.

        Returns:
            ``<results_dir>/runs/<dataset>/<method>/seed<k>``.
        """
        return results_dir / 'runs' / self.dataset / self.method / f'seed{self.seed}'

    def config_files(self, config_dir: Path) -> list[Path]:
        """The YAML files of this run, in merge order.

        Args:
            config_dir: Directory holding ``<dataset>/base.yaml`` and
                ``losses/<loss>.yaml``.

        Returns:
            The base file and the loss file.
        """
        return [
            config_dir / self.dataset / 'base.yaml',
            config_dir / 'losses' / f'{self.loss}.yaml',
        ]


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


# --------------------------------------------------------------------- configs
def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping.

    Args:
        path: File to read.

    Returns:
        Its content (an empty mapping for an empty file).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not valid YAML.
        TypeError: If it does not hold a mapping.
    """
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} does not exist')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as exc:
        raise ValueError(f'config file {path} is not valid YAML: {exc}') from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f'config file {path} must hold a mapping, not {type(data)}')
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two configurations, mappings key by key; ``update`` wins.

    Args:
        base: Configuration to start from (not modified).
        update: Configuration laid over it (not modified).

    Returns:
        The merged configuration.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested configuration, creating mappings on the way.

    Args:
        config: Configuration to modify in place.
        key: Dotted key.
        value: Value to set.

    Raises:
        ValueError: If the key is empty.
        TypeError: If the key crosses a value that is not a mapping.
    """
    parts = key.split('.')
    if not key or any(not p for p in parts):
        raise ValueError(f'invalid configuration key {key!r}')
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = '.'.join(parts[: i + 1])
            raise TypeError(
                f'cannot set {key!r}: {where!r} is {child!r}, not a mapping'
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def get_dotted(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Read ``a.b.c`` from a nested configuration.

    Args:
        config: Configuration.
        key: Dotted key.
        default: Returned when a part of the key is missing.

    Returns:
        The value, or ``default``.
    """
    node: Any = config
    for part in key.split('.'):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; the value is read as YAML (``0``, ``true``, ``[5]``).

    Args:
        text: The assignment.

    Returns:
        The dotted key and the value.

    Raises:
        ValueError: If there is no ``=``, the key is empty or the value is not YAML.
    """
    key, sep, raw = text.partition('=')
    key = key.strip()
    if not sep or not key:
        raise ValueError(f'expected KEY=VALUE, got {text!r}')
    try:
        value = yaml.safe_load(raw) if raw.strip() else ''
    except yaml.YAMLError as exc:
        raise ValueError(f'the value of {text!r} is not valid YAML: {exc}') from exc
    return key, value


def resolve_config(
    run: Run, options: Options, run_dir: Path | None = None
) -> dict[str, Any]:
    """The merged configuration of one run.

    Args:
        run: The run.
        options: Shared settings (config directory, overrides).
        run_dir: Directory of the run (default: from ``options.results_dir``);
            becomes ``trainer.default_root_dir`` and the logger's directory.

    Returns:
        The configuration LightningCLI reads.
    """
    config: dict[str, Any] = {}
    for path in run.config_files(options.config_dir):
        config = deep_merge(config, load_yaml(path))
    for key, value in run.ablation.overrides:
        set_dotted(config, key, value)
    config['seed_everything'] = run.seed
    if get_dotted(config, 'data.init_args.seed') is not None:
        set_dotted(config, 'data.init_args.seed', run.seed)
    for key, value in options.overrides:
        set_dotted(config, key, value)
    run_dir = run_dir or run.run_dir(options.results_dir)
    set_dotted(config, 'trainer.default_root_dir', str(run_dir))
    logger = get_dotted(config, 'trainer.logger')
    if logger is None or logger is True:
        set_dotted(
            config,
            'trainer.logger',
            {
                'class_path': 'lightning.pytorch.loggers.CSVLogger',
                'init_args': {'save_dir': str(run_dir), 'name': 'logs', 'version': 0},
            },
        )
    if options.quiet:
        set_dotted(config, 'trainer.enable_progress_bar', False)
        set_dotted(config, 'trainer.enable_model_summary', False)
    return config


def _config_text(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------- planning
def available_datasets(config_dir: Path) -> list[str]:
    """Datasets with a ``base.yaml`` under the configs directory.

    Args:
        config_dir: Directory of the YAML configs.

    Returns:
        Their names, sorted.
    """
    return sorted(p.parent.name for p in config_dir.glob('*/base.yaml'))


def _changes_something(run: Run, options: Options) -> bool:
    """Whether an ablation's overrides change the run's configuration."""
    if not run.ablation.overrides:
        return True
    base = Run(run.dataset, run.loss, ABLATIONS['full'], run.seed)
    where = Path('run')
    return resolve_config(run, options, where) != resolve_config(base, options, where)


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
    for dataset in datasets:
        for loss in losses:
            for path in Run(dataset, loss, ABLATIONS['full'], 0).config_files(
                options.config_dir
            ):
                if not path.is_file():
                    raise FileNotFoundError(
                        f'no config file {path} for dataset {dataset!r} and loss '
                        f'{loss!r}'
                    )
            for ablation in ablations:
                if ablation.losses is not None and loss not in ablation.losses:
                    continue
                first = Run(dataset, loss, ablation, seeds[0] if seeds else 0)
                if not _changes_something(first, options):
                    continue
                runs.extend(Run(dataset, loss, ablation, seed) for seed in seeds)
    return runs


# --------------------------------------------------------------------- records
def display_path(path: Path | str) -> str:
    """A path relative to the repository root when inside it (POSIX style).

    Args:
        path: Any path.

    Returns:
        The path to show and record.
    """
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def _replace_paths(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace_paths(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_paths(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old) :]
    return value


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and :func:`os.replace`.

    Non-finite floats are written as ``null``.

    Args:
        path: Destination.
        data: JSON-serialisable data.
    """
    text = json.dumps(_finite_or_none(data), indent=2, allow_nan=False) + '\n'
    write_text_atomic(path, text)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file and :func:`os.replace`.

    Args:
        path: Destination.
        text: Content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on.

    Returns:
        Package name -> version (``'not installed'`` when absent).
    """
    found = {'python': platform.python_version()}
    for name in ('torchgeo-macl', 'torchgeo', 'torch', 'lightning', 'timm'):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = 'not installed'
    return found


# --------------------------------------------------------------------- running
def ensure_synthetic_archive(
    root: Path, params: Mapping[str, int], dry_run: bool = False
) -> bool:
    """Write the synthetic archive under ``root`` unless ``root/DLRSD`` exists.

    An existing archive is reused when the parameters recorded next to it
    (``synthetic_archive.json``) are the requested ones; an archive without that
    record (written by hand) is reused with a warning.

    Args:
        root: ``data.init_args.root`` of the synthetic config.
        params: Arguments of :func:`torchgeo_macl.datasets.make_synthetic_dlrsd`.
        dry_run: Only tell whether it would be written.

    Returns:
        True if the archive was (or would be) written.

    Raises:
        ValueError: If the existing archive was written with other parameters.
    """
    if (root / 'DLRSD').is_dir():
        record = root / SYNTHETIC_PARAMS_FILE
        if not record.is_file():
            print(
                f'warning: reusing {root / "DLRSD"}, which has no {record.name}: '
                f'its parameters cannot be checked against {dict(params)}',
                flush=True,
            )
            return False
        recorded = json.loads(record.read_text('utf-8'))
        if recorded != dict(params):
            raise ValueError(
                f'the synthetic archive {root / "DLRSD"} was written with '
                f'{recorded} ({record}), but {dict(params)} is requested: delete '
                f'{root} to write it again, or pass --synthetic-images '
                f'{recorded.get("num_images")} --synthetic-size '
                f'{recorded.get("image_size")}'
            )
        return False
    if dry_run:
        return True
    from torchgeo_macl.datasets import make_synthetic_dlrsd

    start = time.perf_counter()
    print(f'writing the synthetic archive {root / "DLRSD"} ({dict(params)})')
    make_synthetic_dlrsd(root, **params)
    write_json_atomic(root / SYNTHETIC_PARAMS_FILE, dict(params))
    print(f'  done in {time.perf_counter() - start:.1f} s')
    return True


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


def _make_collector() -> Any:
    """A callback that keeps the test embeddings and labels of every dataloader.

    ``test_step`` embeds each batch with the module's forward, so a forward hook
    sees every embedding once; nothing is computed twice.
    """
    from lightning.pytorch.callbacks import Callback

    class TestEmbeddings(Callback):
        def __init__(self) -> None:
            self.parts: dict[int, tuple[list[Any], list[Any]]] = {}
            self._last: Any = None
            self._handle: Any = None

        def _capture(self, module: Any, args: Any, output: Any) -> None:
            self._last = output.detach()

        def on_test_start(self, trainer: Any, pl_module: Any) -> None:
            self.parts = {}
            self._handle = pl_module.register_forward_hook(self._capture)

        def on_test_batch_end(
            self,
            trainer: Any,
            pl_module: Any,
            outputs: Any,
            batch: Any,
            batch_idx: int,
            dataloader_idx: int = 0,
        ) -> None:
            if self._last is None or 'label' not in batch:
                return
            embeddings, labels = self.parts.setdefault(dataloader_idx, ([], []))
            embeddings.append(self._last.float().cpu())
            labels.append(batch['label'].cpu())
            self._last = None

        def on_test_end(self, trainer: Any, pl_module: Any) -> None:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None

    return TestEmbeddings()


def _per_label(
    collector: Any, ks: Iterable[int], logged: Mapping[str, float]
) -> dict[str, Any]:
    """Per-label AP@k of the test queries against the database.

    The mAP@k of the collected embeddings must match the logged one (a check that
    the embeddings are the ones the test ranked).
    """
    if sorted(collector.parts) != [0, 1]:
        return {}
    import torch

    from torchgeo_macl.metrics.functional import retrieval_metrics

    q_emb, q_lab = (torch.cat(x) for x in collector.parts[0])
    d_emb, d_lab = (torch.cat(x) for x in collector.parts[1])
    ks = [k for k in ks if k <= d_emb.shape[0]]
    if not ks:
        return {}
    values = retrieval_metrics(
        q_emb, q_lab, d_emb, d_lab, ks, jaccard=False, per_label=True
    )
    for k in ks:
        if (
            f'mAP@{k}' in logged
            and abs(float(values[f'mAP@{k}']) - logged[f'mAP@{k}']) > 1e-4
        ):
            print(
                f'warning: mAP@{k} of the collected test embeddings '
                f'({float(values[f"mAP@{k}"]):.6f}) differs from the logged one '
                f'({logged[f"mAP@{k}"]:.6f}); per-label values left out',
                flush=True,
            )
            return {}
    out: dict[str, Any] = {
        f'per_label_AP@{k}': [float(x) for x in values[f'AP_label@{k}'].tolist()]
        for k in ks
    }
    out['num_queries'] = int(q_emb.shape[0])
    out['num_database'] = int(d_emb.shape[0])
    out['database_label_frequencies'] = [
        float(x) for x in d_lab.float().mean(dim=0).tolist()
    ]
    return out


@contextlib.contextmanager
def _no_exit(config_path: Path) -> Iterator[None]:
    """Turn LightningCLI's exit on a configuration error into an exception.

    An exit during training (Lightning's answer to Ctrl-C) is not caught: it stops
    the whole grid.
    """
    try:
        yield
    except SystemExit as exc:
        raise RuntimeError(
            f'LightningCLI rejected {config_path} (exit code {exc.code})'
        ) from exc


def run_one(
    config_path: Path, resume_from: Path | None = None, test_checkpoint: str = 'best'
) -> dict[str, Any]:
    """Train and test one configuration in this process.

    LightningCLI (every TorchGeo plugin loaded, the arguments of ``torchgeo fit``)
    builds the trainer, model and datamodule from the configuration; the model is
    fitted, then the checkpoint with the best monitored validation metric (or the
    final weights) is tested.

    Args:
        config_path: The merged configuration (a ``run_config.yaml``).
        resume_from: Checkpoint to resume training from.
        test_checkpoint: ``best`` (the best monitored validation metric; the final
            weights when no checkpoint was saved) or ``last`` (the final weights).

    Returns:
        ``metrics`` (test metrics without the ``test_`` prefix), per-label AP@k,
        label names and frequencies, timings and checkpoint information.

    Raises:
        RuntimeError: If LightningCLI rejects the configuration or the test logged
            no metric.
    """
    from lightning.pytorch.cli import LightningCLI

    from torchgeo_macl._compat import BaseTask, NonGeoDataModule
    from torchgeo_macl.main import load_plugins

    load_plugins()
    with warnings.catch_warnings(), _no_exit(config_path):
        # run.py's own command-line arguments are not meant for LightningCLI
        warnings.filterwarnings('ignore', message=".*LightningCLI's args parameter")
        cli = LightningCLI(
            model_class=BaseTask,
            datamodule_class=NonGeoDataModule,
            seed_everything_default=0,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={'overwrite': True},
            run=False,
            args=['--config', str(config_path)],
        )
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    collector = _make_collector()
    trainer.callbacks.append(collector)

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
    record.update(_per_label(collector, ks, metrics))
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


def _device_name(trainer: Any) -> str:
    import torch

    root = getattr(trainer.strategy, 'root_device', None)
    if root is not None and root.type == 'cuda':
        return str(torch.cuda.get_device_name(root))
    return f'{platform.machine()} CPU, {os.cpu_count()} cores'


def _find_last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob('last*.ckpt'), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


#: Trainer keys that change what a run prints, not what it computes.
_DISPLAY_KEYS = ('enable_progress_bar', 'enable_model_summary')


def _recorded_config_current(run: Run, options: Options) -> bool:
    """Whether a run's recorded configuration is the one the configs give now.

    Settings that only change the display (``--quiet``) are left out of the
    comparison.
    """
    run_dir = run.run_dir(options.results_dir)
    path = run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        return False
    recorded = yaml.safe_load(path.read_text('utf-8'))
    current = resolve_config(run, options, run_dir)
    for config in (recorded, current):
        trainer = config.get('trainer') if isinstance(config, dict) else None
        for key in _DISPLAY_KEYS if isinstance(trainer, dict) else ():
            trainer.pop(key, None)
    return bool(recorded == current)


def execute(run: Run, options: Options, index: int, total: int) -> str:
    """Run one cell of the grid unless it is finished.

    Args:
        run: The run.
        options: Shared settings.
        index: Position in the plan (1-based), for the progress lines.
        total: Number of runs in the plan.

    Returns:
        ``'skip'``, ``'done'`` or ``'failed'``.
    """
    tag = f'[{index}/{total}] {run.name}'
    run_dir = run.run_dir(options.results_dir)
    metrics_path = run_dir / METRICS_FILE
    config = resolve_config(run, options, run_dir)
    text = _config_text(config)
    config_path = run_dir / RUN_CONFIG_FILE
    if metrics_path.exists():
        if _recorded_config_current(run, options):
            print(f'{tag}: skip ({display_path(metrics_path)} exists)', flush=True)
            return 'skip'
        print(
            f'{tag}: the configuration changed since {display_path(metrics_path)} '
            'was written; running again',
            flush=True,
        )
    resume_from = None
    if run_dir.exists() and not metrics_path.exists():
        same = config_path.is_file() and config_path.read_text('utf-8') == text
        last = _find_last_checkpoint(run_dir) if same and not options.fresh else None
        if last is not None:
            resume_from = last
            print(f'{tag}: resume from {display_path(last)}', flush=True)
        else:
            print(f'{tag}: unfinished earlier attempt, starting over', flush=True)
            shutil.rmtree(run_dir)
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    write_text_atomic(config_path, text)

    if run.dataset in SYNTHETIC_DATASETS:
        root = Path(str(get_dotted(config, 'data.init_args.root', 'data')))
        ensure_synthetic_archive(root, options.synthetic_archive)

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
    }
    record.update(result)
    root = get_dotted(config, 'data.init_args.root')
    params_file = Path(str(root)) / SYNTHETIC_PARAMS_FILE if root else None
    if run.dataset in SYNTHETIC_DATASETS and params_file and params_file.is_file():
        record['synthetic_archive'] = json.loads(params_file.read_text('utf-8'))
    record.update(
        {
            'command': options.command,
            'config_files': [
                display_path(p) for p in run.config_files(options.config_dir)
            ],
            'overrides': {k: v for k, v in run.ablation.overrides}
            | {k: v for k, v in options.overrides},
            'run_config': display_path(config_path),
            'config': _replace_paths(config, str(run_dir), display_path(run_dir)),
            'resumed_from': display_path(resume_from) if resume_from else None,
            'date': date,
            'versions': versions(),
            'wall_time_s': round(wall, 3),
        }
    )
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
def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and '.' not in text else value


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
    parser.add_argument(
        '--datasets',
        nargs='+',
        default=['synthetic'],
        help="datasets (folders of the configs directory) or 'all'",
    )
    parser.add_argument(
        '--losses', nargs='+', default=list(LOSSES), help="losses or 'all'"
    )
    parser.add_argument(
        '--seeds', nargs='+', type=int, default=[0, 1, 2], help='training seeds'
    )
    parser.add_argument(
        '--ablations',
        nargs='+',
        help=f"ablations of MACL ({', '.join(ABLATIONS)}) or 'all' (default: full, "
        'or only the defined ones with --define-ablation)',
    )
    parser.add_argument(
        '--define-ablation',
        nargs='+',
        action='append',
        default=[],
        metavar=('NAME', 'KEY=VALUE'),
        help='add an ablation (applied to every selected loss) and select it',
    )
    parser.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override a config key in every run (dotted, value read as YAML), '
        'e.g. data.init_args.num_workers=2',
    )
    parser.add_argument(
        '--max-epochs', type=int, help='trainer and schedule length in epochs'
    )
    for split in ('train', 'val', 'test'):
        parser.add_argument(
            f'--limit-{split}-batches',
            type=_number,
            help=f'trainer.limit_{split}_batches (a count or a fraction)',
        )
    parser.add_argument('--accelerator', help='trainer.accelerator (cpu, gpu, auto)')
    parser.add_argument('--devices', help='trainer.devices')
    parser.add_argument(
        '--configs', type=Path, default=CONFIG_DIR, help='configs directory'
    )
    parser.add_argument(
        '--results', type=Path, default=RESULTS_DIR, help='results directory'
    )
    parser.add_argument(
        '--synthetic-images',
        type=int,
        default=SYNTHETIC_ARCHIVE['num_images'],
        help='images of the synthetic archive when it has to be written',
    )
    parser.add_argument(
        '--synthetic-size',
        type=int,
        default=SYNTHETIC_ARCHIVE['image_size'],
        help='image side of the synthetic archive when it has to be written',
    )
    parser.add_argument(
        '--dry-run', action='store_true', help='list the plan and run nothing'
    )
    parser.add_argument(
        '--fresh',
        action='store_true',
        help='start crashed runs over instead of resuming from their last.ckpt',
    )
    parser.add_argument(
        '--test-checkpoint',
        choices=('best', 'last'),
        default='best',
        help='test the checkpoint with the best monitored validation metric, or '
        'the final weights',
    )
    parser.add_argument(
        '--keep-checkpoints',
        action='store_true',
        help='keep the checkpoints of finished runs',
    )
    parser.add_argument(
        '--stop-on-error', action='store_true', help='stop at the first failed run'
    )
    parser.add_argument(
        '--quiet',
        action='store_true',
        help="hide Lightning's progress bars and model summaries",
    )
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
    command = shlex.join(['python', display_path(__file__), *args_list])

    overrides: list[tuple[str, Any]] = []
    try:
        custom: dict[str, Ablation] = {}
        for spec in args.define_ablation:
            name, assignments = spec[0], spec[1:]
            if not assignments or '=' in name or name in ABLATIONS:
                raise ValueError(
                    f'--define-ablation needs a new NAME and KEY=VALUE pairs, got '
                    f'{shlex.join(spec)!r}'
                )
            custom[name] = Ablation(
                name,
                tuple(parse_assignment(a) for a in assignments),
                None,
                'defined on the command line',
            )
        datasets = _select(args.datasets, available_datasets(args.configs), 'dataset')
        losses = _select(args.losses, LOSSES, 'loss')
        names = args.ablations
        if names is None:
            names = [] if custom else ['full']
        ablations = [ABLATIONS[n] for n in _select(names, list(ABLATIONS), 'ablation')]
        ablations += list(custom.values())
        if not ablations:
            ablations = [ABLATIONS['full']]
        overrides = [parse_assignment(a) for a in args.set]
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_epochs is not None:
        overrides += [
            ('trainer.max_epochs', args.max_epochs),
            ('model.init_args.max_epochs', args.max_epochs),
        ]
    for split in ('train', 'val', 'test'):
        value = getattr(args, f'limit_{split}_batches')
        if value is not None:
            overrides.append((f'trainer.limit_{split}_batches', value))
    if args.accelerator is not None:
        overrides.append(('trainer.accelerator', args.accelerator))
    if args.devices is not None:
        overrides.append(('trainer.devices', parse_assignment(f'd={args.devices}')[1]))

    options = Options(
        config_dir=args.configs.resolve(),
        results_dir=args.results.resolve(),
        overrides=overrides,
        keep_checkpoints=args.keep_checkpoints,
        fresh=args.fresh,
        quiet=args.quiet,
        test_checkpoint=args.test_checkpoint,
        synthetic_archive={
            'num_images': args.synthetic_images,
            'image_size': args.synthetic_size,
            'seed': SYNTHETIC_ARCHIVE['seed'],
        },
        command=command,
    )
    try:
        runs = plan(datasets, losses, args.seeds, ablations, options)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))

    if args.dry_run:
        print(f'{len(runs)} runs; results under {display_path(options.results_dir)}')
        for i, run in enumerate(runs, 1):
            run_dir = run.run_dir(options.results_dir)
            if (run_dir / METRICS_FILE).exists():
                state = 'done' if _recorded_config_current(run, options) else 'changed'
            elif run_dir.exists():
                state = 'unfinished'
            else:
                state = 'todo'
            files = ' + '.join(
                display_path(p) for p in run.config_files(options.config_dir)
            )
            extra = ', '.join(f'{k}={v!r}' for k, v in run.ablation.overrides)
            print(
                f'[{i}/{len(runs)}] {run.name}  {state}  {files}'
                + (f'  [{extra}]' if extra else '')
            )
    for dataset in dict.fromkeys(r.dataset for r in runs):
        if dataset in SYNTHETIC_DATASETS:
            run = next(r for r in runs if r.dataset == dataset)
            root = Path(
                str(get_dotted(resolve_config(run, options), 'data.init_args.root'))
            )
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
    for i, run in enumerate(runs, 1):
        status = execute(run, options, i, len(runs))
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
