"""The configuration of a run, merged and completed by LightningCLI.

A run is the command line of ``torchgeo-macl fit``: ``--config
configs/<dataset>/base.yaml --config configs/losses/<loss>.yaml`` followed by dotted
overrides (``--model.init_args.loss_kwargs.beta=0.0``), whose values jsonargparse
reads as it reads them on that command line. It merges the files and the overrides
in that order and fills in every default; its dump of the
result, ``run_config.yaml``, is the one configuration file of a run, and
``torchgeo-macl fit --config run_config.yaml`` repeats the training.

Two configurations are the same run when they are equal once both are completed by
the parser, leaving out the display switches (:data:`DISPLAY_KEYS`) and with the
run's own directory replaced by a placeholder (so moving the results directory
changes nothing). A recorded file that lists only some keys (as the files of
earlier versions of ``run.py`` do) is completed the same way before the comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provenance import replace_prefix

#: Name of the configuration written into every run directory.
RUN_CONFIG_FILE = 'run_config.yaml'
#: Trainer keys that change what a run prints, not what it computes.
DISPLAY_KEYS = ('enable_progress_bar', 'enable_model_summary')


@dataclass(frozen=True)
class RunConfig:
    """The configuration of one run.

    Attributes:
        args: The LightningCLI arguments that give it.
        config: The configuration, every default filled in.
        text: Its YAML dump (the content of ``run_config.yaml``).
    """

    args: tuple[str, ...]
    config: dict[str, Any]
    text: str


@functools.cache
def _load_plugins() -> None:
    from torchgeo_macl.main import load_plugins

    load_plugins()


def lightning_cli(args: Sequence[str], instantiate: bool = True) -> Any:
    """LightningCLI as ``torchgeo-macl fit`` sets it up, without a subcommand.

    Every TorchGeo plugin is loaded; the model and datamodule are subclasses of
    TorchGeo's task and datamodule bases given by ``class_path``. No config file is
    saved by the CLI itself (the run writes ``run_config.yaml``).

    Args:
        args: Arguments (``--config FILE``, ``--KEY=VALUE``).
        instantiate: Build the trainer, model and datamodule and seed the run;
            False only parses.

    Returns:
        The :class:`~lightning.pytorch.cli.LightningCLI`.

    Raises:
        argparse.ArgumentError: If an argument or a config file is not valid.
    """
    from torchgeo_macl.main import lightning_cli as torchgeo_macl_cli

    _load_plugins()
    return torchgeo_macl_cli(
        args, run=False, instantiate=instantiate, save_config=False
    )


def cli_value(value: Any) -> str:
    """The command-line text of an override value (strings as they are, else JSON).

    Args:
        value: The value.

    Returns:
        Text jsonargparse reads back as ``value``.
    """
    return value if isinstance(value, str) else json.dumps(value)


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


def _as_dict(namespace: Any) -> dict[str, Any]:
    config: dict[str, Any] = namespace.as_dict()
    config.pop('config', None)  # the --config files themselves
    return config


def resolve(
    files: Sequence[Path],
    overrides: Sequence[tuple[str, Any]],
    seed: int,
    run_dir: Path,
    quiet: bool = False,
) -> RunConfig:
    """The configuration of a run: config files, then dotted overrides.

    The arguments are, in order: the files, the seed (``seed_everything`` and, where
    the datamodule has one, the sampler's ``data.init_args.seed``), the overrides,
    the run directory (``trainer.default_root_dir``), a CSV logger writing to
    ``<run_dir>/logs/version_0`` unless the configuration names a logger, and with
    ``quiet`` no progress bar and no model summary.

    Args:
        files: YAML files, in merge order.
        overrides: Dotted keys and values laid over the files, in order.
        seed: Training seed.
        run_dir: Directory of the run.
        quiet: Turn off the progress bar and model summary.

    Returns:
        The configuration.

    Raises:
        argparse.ArgumentError: If LightningCLI rejects a file or an override.
    """
    head = [arg for path in files for arg in ('--config', str(path))]
    tail = [f'--{key}={cli_value(value)}' for key, value in overrides]
    first = _as_dict(lightning_cli([*head, *tail], instantiate=False).config)
    seeds = [f'--seed_everything={seed}']
    if first['data'].get('init_args', {}).get('seed') is not None:
        seeds.append(f'--data.init_args.seed={seed}')
    args = [*head, *seeds, *tail, f'--trainer.default_root_dir={run_dir}']
    if first['trainer'].get('logger') in (None, True):
        logger = {
            'class_path': 'lightning.pytorch.loggers.CSVLogger',
            'init_args': {'save_dir': str(run_dir), 'name': 'logs', 'version': 0},
        }
        args.append(f'--trainer.logger={json.dumps(logger)}')
    if quiet:
        args += [f'--trainer.{key}=false' for key in DISPLAY_KEYS]
    cli = lightning_cli(args, instantiate=False)
    with warnings.catch_warnings():
        # None values are kept, as LightningCLI's own config dump keeps them
        warnings.simplefilter('ignore', DeprecationWarning)
        text = cli.parser.dump(cli.config, skip_none=False)
    return RunConfig(tuple(args), _as_dict(cli.config), text)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    trainer = {
        k: v for k, v in config.get('trainer', {}).items() if k not in DISPLAY_KEYS
    }
    config = {**config, 'trainer': trainer}
    model = config.get('model')
    if isinstance(model, dict) and isinstance(model.get('init_args'), dict):
        # the task's deprecated max_epochs, equal to the trainer's, is the default
        # schedule length: the same run as without it
        args = model['init_args']
        if args.get('max_epochs') == trainer.get('max_epochs'):
            args = {**args, 'max_epochs': None}
        config = {**config, 'model': {**model, 'init_args': args}}
    run_dir = trainer.get('default_root_dir')
    return replace_prefix(config, str(run_dir), '<run_dir>') if run_dir else config


def same_run(recorded: Path, current: RunConfig) -> bool:
    """Whether a recorded configuration file gives the run ``current`` gives.

    Args:
        recorded: A run's ``run_config.yaml``.
        current: The configuration the configs give now.

    Returns:
        True when both are equal once completed by LightningCLI, the display
        switches left out and the run directory aside; False when the recorded
        file is missing or LightningCLI rejects it.
    """
    if not recorded.is_file():
        return False
    try:
        old = _as_dict(lightning_cli(['--config', str(recorded)], False).config)
    except argparse.ArgumentError:
        return False
    return _comparable(old) == _comparable(current.config)
