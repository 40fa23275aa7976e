"""The ``torchgeo-macl`` command line.

``fit``, ``validate``, ``test`` and ``predict`` load every TorchGeo plugin and hand
the remaining arguments to TorchGeo's LightningCLI, set up as
:func:`torchgeo.main.main` sets it up, so YAML configs can use bare class names of
plugin classes. The other subcommands are registered with :func:`subcommand`; adding
one is one decorated function::

    @subcommand('hello', 'Print a greeting.', arg('--name', default='world'))
    def _hello(args: argparse.Namespace) -> int:
        print(f'hello {args.name}')
        return 0

Errors
------
A mistake in the user's input ends the command with one line on standard error,
``torchgeo-macl <subcommand>: error: <message>``, and a non-zero exit code:

* ``2`` for usage errors: an unknown option or subcommand, or a value an option does
  not accept (argparse options, and the options and config files of the
  LightningCLI subcommands as jsonargparse parses them);
* ``1`` for the user errors met while running, the exceptions in
  :data:`USER_ERRORS`: :class:`OSError` and its subclasses (a missing file, a
  read-only or existing output path, ...) and :class:`ValueError` (an invalid
  setting, an empty split, ...), including :class:`CheckpointError`, a checkpoint
  that cannot be read (an :class:`EOFError`, :class:`RuntimeError` or unpickling
  error of :func:`torch.load` is reported as one); the LightningCLI subcommands add
  Lightning's ``MisconfigurationException``. They report the first exception of
  the chain that jsonargparse did not raise itself (the constructor's own error,
  not jsonargparse's summary of it).

Any other exception is a fault of the program and propagates with its traceback.
``--debug`` (given before the subcommand) or the environment variable
``TORCHGEO_MACL_DEBUG=1`` re-raises user errors as well, with the full traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from torchgeo_macl import __version__
from torchgeo_macl.demo import MIN_IMAGES as MIN_DEMO_IMAGES

if TYPE_CHECKING:
    from torch import Tensor

    from torchgeo_macl.search import ArchiveInfo
    from torchgeo_macl.search.index import IndexKind

#: Subcommands forwarded to TorchGeo's LightningCLI.
LIGHTNING_SUBCOMMANDS = ('fit', 'validate', 'test', 'predict')

_LIGHTNING_HELP = {
    'fit': 'Train a model (LightningCLI, all plugins loaded).',
    'validate': 'Validate a model (LightningCLI, all plugins loaded).',
    'test': 'Test a model (LightningCLI, all plugins loaded).',
    'predict': 'Predict with a model (LightningCLI, all plugins loaded).',
}

#: Environment variable that turns on ``--debug`` when set to 1 (or true, yes, on).
DEBUG_ENV = 'TORCHGEO_MACL_DEBUG'


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a RetrievalTask checkpoint."""


#: Exceptions that report a mistake in the user's input: a subcommand that raises one
#: ends with a one-line message and exit code 1 (a traceback only with ``--debug``).
#: :class:`CheckpointError` is a :class:`ValueError`.
USER_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError)

_ERRORS_EPILOG = f"""\
fit/validate/test/predict accept every LightningCLI option; run
'torchgeo-macl fit --help' for them.

errors: a mistake in the input ends with one line on stderr,
'torchgeo-macl COMMAND: error: MESSAGE', and exit code 2 for usage errors (an
unknown option, a value an option does not accept) or 1 for user errors met
while running: OSError (a missing or unwritable file, ...), ValueError (an
invalid setting, an empty split, ...) and unreadable checkpoints. Other
exceptions are faults of the program and show their traceback; --debug (before
COMMAND) or {DEBUG_ENV}=1 shows it for every error.
"""


def debug_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for full tracebacks.

    Args:
        environ: Environment variables (:data:`os.environ` by default).

    Returns:
        True when :data:`DEBUG_ENV` is ``1``, ``true``, ``yes`` or ``on`` (any case).
    """
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, '')
    return value.strip().lower() in ('1', 'true', 'yes', 'on')


def positive_int(text: str) -> int:
    """Read an option value that must be an integer >= 1 (an argparse ``type``).

    Args:
        text: The value given on the command line.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: If it is not an integer or is below 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected an integer >= 1, got {text!r}'
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {value}')
    return value


class _ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on standard error."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` and exit with code 2.

        Args:
            message: What is wrong.
        """
        hint = f" (see '{self.prog} --help')" if self.add_help else ''
        self.exit(2, f'{self.prog}: error: {_one_line(message)}{hint}\n')


def _one_line(message: object) -> str:
    """Join the non-empty lines of a message (or an exception's) into one line.

    Args:
        message: A message, or an exception (its class name when it has no message).

    Returns:
        The message on one line.
    """
    text = ' '.join(line.strip() for line in str(message).splitlines() if line.strip())
    if not text and isinstance(message, BaseException):
        return type(message).__name__
    return text


def _report(command: str, message: str) -> None:
    """Print the one-line error of a subcommand on standard error.

    Args:
        command: The subcommand.
        message: What went wrong (one line).
    """
    print(f'torchgeo-macl {command}: error: {message}', file=sys.stderr)


@dataclass(frozen=True)
class Argument:
    """One argparse argument of a subcommand.

    Attributes:
        flags: Option strings or the positional name.
        kwargs: Keyword arguments of :meth:`argparse.ArgumentParser.add_argument`.
    """

    flags: tuple[str, ...]
    kwargs: dict[str, Any]


def arg(*flags: str, **kwargs: Any) -> Argument:
    """Describe an argument of a subcommand.

    Args:
        flags: Option strings or the positional name.
        kwargs: Keyword arguments of :meth:`argparse.ArgumentParser.add_argument`.

    Returns:
        The argument description.
    """
    return Argument(flags, kwargs)


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand.

    Attributes:
        name: Name on the command line.
        help: One-line description.
        arguments: Its arguments.
        run: Function called with the parsed arguments; returns the exit code.
    """

    name: str
    help: str
    arguments: tuple[Argument, ...]
    run: Callable[[argparse.Namespace], int]


#: Registered subcommands (besides the LightningCLI ones), by name.
SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str, help: str, *arguments: Argument
) -> Callable[
    [Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]
]:
    """Register a function as a ``torchgeo-macl`` subcommand.

    Args:
        name: Name on the command line.
        help: One-line description shown by ``--help``.
        arguments: Its arguments, made with :func:`arg`.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: If the name is taken.
    """

    def decorator(
        func: Callable[[argparse.Namespace], int],
    ) -> Callable[[argparse.Namespace], int]:
        if name in SUBCOMMANDS or name in LIGHTNING_SUBCOMMANDS:
            raise ValueError(f'subcommand {name!r} is already registered')
        SUBCOMMANDS[name] = Subcommand(name, help, tuple(arguments), func)
        return func

    return decorator


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser.

    Returns:
        The parser, with one subparser per subcommand.
    """
    parser = _ArgumentParser(
        prog='torchgeo-macl',
        description=(
            'Multi-label adaptive contrastive learning (MACL) for remote-sensing\n'
            'image retrieval, as a TorchGeo plugin.'
        ),
        epilog=_ERRORS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        '--version', action='version', version=f'torchgeo-macl {__version__}'
    )
    parser.add_argument(
        '--debug',
        action='store_true',
        help=f'show the full traceback of errors (also {DEBUG_ENV}=1)',
    )
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=_LIGHTNING_HELP[name], add_help=False)
    for cmd in sorted(SUBCOMMANDS.values(), key=lambda c: c.name):
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for a in cmd.arguments:
            p.add_argument(*a.flags, **a.kwargs)
    return parser


def load_plugins(stream: Any = None) -> list[Any]:
    """Import every registered TorchGeo plugin, reporting the ones that fail.

    Args:
        stream: Where to print failures (standard error by default).

    Returns:
        The :class:`~torchgeo_macl.plugins.PluginInfo` records.
    """
    import warnings

    from torchgeo_macl.plugins import PluginLoadWarning, discover_plugins

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', PluginLoadWarning)
        infos = discover_plugins()
    for info in infos:
        if not info.ok:
            print(
                f'torchgeo-macl: plugin {info.name!r} ({info.target}) failed to '
                f'load and was skipped: {info.error}',
                file=stream or sys.stderr,
            )
    return infos


@subcommand(
    'plugins', 'List the TorchGeo plugins found through entry points and what they add.'
)
def _plugins(args: argparse.Namespace) -> int:
    infos = load_plugins(stream=sys.stdout)
    if not infos:
        print('no plugins registered in the torchgeo.plugins entry-point group')
        return 0
    from torchgeo_macl.plugins import KINDS

    for info in infos:
        status = 'ok' if info.ok else 'FAILED'
        print(
            f'{info.name}  [{status}]  {info.target}  '
            f'({info.distribution or "?"} {info.version or "?"})'
        )
        if info.error:
            print(f'    error: {info.error}')
        kinds = [*KINDS, *sorted(set(info.components) - set(KINDS))]
        for kind in kinds:
            names = info.components.get(kind)
            if names:
                print(f'    {kind}: {", ".join(names)}')
    return 0


@subcommand(
    'demo',
    'Train MACL and SupCon on the synthetic archive, evaluate, index, search, report.',
    arg('--out', default='outputs/demo', help='output folder (default: %(default)s)'),
    arg(
        '--num-images',
        type=positive_int,
        default=840,
        help=f'archive size, at least {MIN_DEMO_IMAGES} (default: %(default)s)',
    ),
    arg(
        '--image-size',
        type=positive_int,
        default=64,
        help='image side (default: %(default)s)',
    ),
    arg(
        '--train-size',
        type=positive_int,
        default=32,
        help='side images are resized to for training and retrieval '
        '(default: %(default)s)',
    ),
    arg(
        '--epochs',
        type=positive_int,
        default=8,
        help='epochs per loss (default: %(default)s)',
    ),
    arg(
        '--batch-size',
        type=positive_int,
        default=64,
        help='batch size (default: %(default)s)',
    ),
    arg('--seed', type=int, default=0, help='seed (default: %(default)s)'),
    arg('--model', default='resnet18', help='timm backbone (default: %(default)s)'),
    arg('--no-progress', action='store_true', help='hide progress bars'),
)
def _demo(args: argparse.Namespace) -> int:
    from dataclasses import fields
    from pathlib import Path

    from torchgeo_macl.demo import DemoConfig, run_demo

    given = vars(args)
    options = {f.name: given[f.name] for f in fields(DemoConfig) if f.name in given}
    options.update(out=Path(args.out), progress=not args.no_progress)
    run_demo(DemoConfig(**options))
    return 0


def _datamodule_from_config(path: str, image_size: int | None = None) -> Any:
    """Instantiate the datamodule of a YAML config (a ``data:`` section or bare).

    The arguments are ``init_args`` and, as LightningCLI takes them for a class
    with ``**kwargs``, ``dict_kwargs``.

    Args:
        path: The YAML file.
        image_size: Image size to use instead of the config's, for a retrieval
            datamodule (a note on standard error says when they differ).

    Returns:
        The datamodule.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not valid YAML, names no datamodule or an unknown one,
            or gives it arguments it does not take.
    """
    import importlib

    import yaml

    with open(path) as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f'{path}: invalid YAML: {_one_line(exc)}') from exc
    section = config.get('data', config) if isinstance(config, dict) else None
    if not isinstance(section, dict) or 'class_path' not in section:
        raise ValueError(
            f'{path}: no datamodule class_path found (expected data.class_path)'
        )
    name = str(section['class_path'])
    if '.' in name:
        module, _, cls = name.rpartition('.')
        try:
            target = getattr(importlib.import_module(module), cls, None)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f'{path}: cannot import datamodule {name!r}: {exc}'
            ) from exc
    else:
        import torchgeo.datamodules

        import torchgeo_macl.datamodules

        target = getattr(torchgeo_macl.datamodules, name, None) or getattr(
            torchgeo.datamodules, name, None
        )
    if target is None:
        raise ValueError(f'{path}: unknown datamodule {name!r}')
    init_args = section.get('init_args') or {}
    dict_kwargs = section.get('dict_kwargs') or {}
    for key, value in (('init_args', init_args), ('dict_kwargs', dict_kwargs)):
        if not isinstance(value, dict):
            raise ValueError(  # noqa: TRY004 - a value of the file
                f'{path}: {key} of {name} must be a mapping'
            )
    init_args = {**dict_kwargs, **init_args}
    from torchgeo_macl.datamodules import RetrievalDataModule

    if image_size is not None and issubclass(target, RetrievalDataModule):
        configured = init_args.get('image_size')
        if configured != image_size:
            print(
                f"torchgeo-macl: {path}: images are embedded at the checkpoint's "
                f'{image_size} px (the config says {configured})',
                file=sys.stderr,
            )
        init_args = {**init_args, 'image_size': image_size}
    try:
        return target(**init_args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{path}: {name}: {exc}') from exc


def _load_task(path: str) -> Any:
    """Load a RetrievalTask checkpoint for inference.

    Args:
        path: The checkpoint.

    Returns:
        The task (see :func:`torchgeo_macl.search.load_task`).

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: If it cannot be read as a RetrievalTask checkpoint
            (truncated, corrupt, or another kind of file).
    """
    import pickle
    import zipfile

    from torchgeo_macl.search import load_task

    try:
        return load_task(path)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        cause = exc.__cause__
        if cause is None:
            raise CheckpointError(str(exc)) from exc
        detail = _one_line(cause)
        if isinstance(cause, EOFError) and not str(cause):
            detail = 'the file is empty or ends too early'
        name = type(cause).__name__
        reason = detail if detail == name else f'{name}: {detail}'
        raise CheckpointError(
            f'{path} is not a RetrievalTask checkpoint ({reason})'
        ) from exc
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f'cannot read checkpoint {path}: {exc}') from exc


def _predict_datamodule(path: str, task: Any, split: str) -> Any:
    """The datamodule of a config, set up to predict a split at the task's size.

    Args:
        path: The datamodule YAML config.
        task: The loaded task (its trained image size is used, when it has one).
        split: ``predict_split``: 'database', 'test' or 'all'.

    Returns:
        The datamodule after ``setup('predict')``.

    Raises:
        ValueError: If the config is not valid (see :func:`_datamodule_from_config`)
            or the split holds no images.
    """
    size = int(task.input_size)
    dm = _datamodule_from_config(path, size if size > 0 else None)
    dm.predict_split = split
    dm.setup('predict')
    dataset = getattr(dm, 'predict_dataset', None)
    if dataset is not None and len(dataset) == 0:
        raise ValueError(
            f'{path}: the {split!r} split of {type(dm).__name__} holds no images'
        )
    return dm


_ACCELERATOR = arg(
    '--accelerator',
    default='auto',
    choices=('auto', 'cpu', 'gpu', 'cuda', 'mps'),
    help='device that embeds the images: gpu is CUDA or MPS, auto the first '
    'available of these, else the CPU (default: %(default)s)',
)

_SPLIT = arg(
    '--split',
    default='all',
    choices=('database', 'test', 'all'),
    help='datamodule images to embed (default: %(default)s)',
)


@subcommand(
    'index',
    'Build a faiss index of an archive: embed it with a checkpoint, or read the '
    'shards of `export`.',
    arg('--ckpt', help='RetrievalTask checkpoint (optional with --embeddings)'),
    arg('--data', help='datamodule YAML config, or a folder of images, to embed'),
    arg('--embeddings', help='folder of embedding shards written by `export`'),
    arg(
        '--out',
        required=True,
        help='index path prefix (writes OUT.json, the data files it names, ...)',
    ),
    arg('--kind', default='flat', choices=('flat', 'ivf', 'hnsw', 'ivfpq')),
    _SPLIT,
    arg(
        '--batch-size',
        type=positive_int,
        default=64,
        help='images per forward pass (default: %(default)s)',
    ),
    _ACCELERATOR,
)
def _index(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from torchgeo_macl.search import (
        ArchiveInfo,
        datamodule_sources,
        embed_datamodule,
        inference_device,
        model_fingerprint,
    )

    if (args.data is None) == (args.embeddings is None):
        _report('index', 'give either --data or --embeddings')
        return 2
    if args.embeddings is not None:
        return _index_shards(args)
    if args.ckpt is None:
        _report('index', '--data needs --ckpt, the checkpoint to embed with')
        return 2
    device = inference_device(args.accelerator)
    task = _load_task(args.ckpt)
    # identify the checkpoint as loaded: embedding a datamodule runs the task's setup,
    # which may overwrite its preprocessing buffers with the datamodule's settings
    fingerprint = model_fingerprint(task)
    classes: list[str] = []
    if os.path.isdir(args.data):
        embeddings, ids, sources = _embed_folder(
            args.data, task.to(device), args.out, args.batch_size
        )
        labels = None
    else:
        dm = _predict_datamodule(args.data, task, args.split)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        embeddings, ids, labels = embed_datamodule(task, dm, accelerator=device.type)
        sources = datamodule_sources(dm)
        classes = list(getattr(dm, 'classes', []))
    info = ArchiveInfo(os.path.abspath(args.ckpt), fingerprint, classes, sources)
    _write_index(args.out, args.kind, embeddings, ids, labels, info)
    return 0


def _embed_folder(
    folder: str, task: Any, out: str, batch_size: int
) -> tuple[Tensor, list[str], dict[str, str]]:
    """Embed the images of a folder (``index --data FOLDER``).

    Args:
        folder: The folder; every image is read before the index is written.
        task: The loaded task, on the device to embed with.
        out: Index path prefix; its folder is created.
        batch_size: Images per forward pass.

    Returns:
        The embeddings, their ids (paths under the folder without the suffix) and
        the image file of every id.

    Raises:
        FileNotFoundError: If the folder holds no image.
        ValueError: If images share an id or an image cannot be read (the
            message names the files).
    """
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from torchgeo_macl.search import embed_images, folder_ids, list_images, read_image

    files = list_images(folder)
    ids = folder_ids(folder, files)
    bands = int(task.hparams['in_channels'])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    parts = []
    # no bar when standard error is not a terminal, so that errors stay one line
    with tqdm(total=len(files), desc='embedding', disable=None) as bar:
        for start in range(0, len(files), batch_size):
            chunk = [
                read_image(p, bands, eight_bit=task.eight_bit_input)
                for p in files[start : start + batch_size]
            ]
            parts.append(embed_images(task, chunk, batch_size))
            bar.update(len(chunk))
    sources = {i: str(p.resolve()) for i, p in zip(ids, files)}
    return torch.cat(parts), ids, sources


def _index_shards(args: argparse.Namespace) -> int:
    """Build an index from the shards of ``export`` (``index --embeddings``).

    Args:
        args: The arguments of ``index``.

    Returns:
        The exit code.
    """
    import os
    from pathlib import Path

    from torchgeo_macl.search import ArchiveInfo, model_fingerprint, read_shards

    checkpoint = fingerprint = None
    if args.ckpt is not None:
        checkpoint = os.path.abspath(args.ckpt)
        fingerprint = model_fingerprint(_load_task(args.ckpt))
    merged = read_shards(args.embeddings, model_id=fingerprint)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    info = ArchiveInfo(
        checkpoint or merged.checkpoint, merged.model_id, merged.classes, merged.sources
    )
    _write_index(
        args.out, args.kind, merged.embeddings, merged.ids, merged.labels, info
    )
    return 0


def _write_index(
    out: str,
    kind: IndexKind,
    embeddings: Tensor,
    ids: list[str],
    labels: Tensor | None,
    info: ArchiveInfo,
) -> None:
    """Write an index and its archive sidecar, and say so.

    Args:
        out: Index path prefix.
        kind: Index kind.
        embeddings: Embeddings ``[N, D]``.
        ids: Their ids.
        labels: Their labels ``[N, C]``, or None.
        info: The :class:`~torchgeo_macl.search.ArchiveInfo` of the sidecar.
    """
    from torchgeo_macl.search import EmbeddingIndex, save_archive_info

    index = EmbeddingIndex(embeddings.shape[1], kind, model_id=info.model_id)
    index.add(embeddings, ids, labels)
    index.save(out)
    save_archive_info(out, info)
    print(f'indexed {len(index)} images ({kind}) into {out}')


def _devices(text: str) -> int | str:
    """Read ``--devices`` as Lightning's Trainer takes it.

    Args:
        text: A number of devices, a list such as ``0,1``, or ``auto``.

    Returns:
        The number as an int, anything else as given.
    """
    return int(text) if text.isdigit() else text


@subcommand(
    'export',
    "Embed a datamodule's images with Lightning predict and write embedding shards "
    '(one per process).',
    arg('--ckpt', required=True, help='RetrievalTask checkpoint'),
    arg('--data', required=True, help='datamodule YAML config'),
    arg('--out', required=True, help='folder of the shards, empty or new'),
    _SPLIT,
    arg('--accelerator', default='auto', help='Lightning accelerator'),
    arg(
        '--devices',
        type=_devices,
        default=1,
        help='Lightning devices: a number, a list such as 0,1, or auto '
        '(default: %(default)s)',
    ),
    arg(
        '--num-nodes',
        type=positive_int,
        default=1,
        help='machines, for Lightning (default: %(default)s)',
    ),
    arg('--strategy', default='auto', help='Lightning strategy, e.g. ddp'),
    arg('--no-progress', action='store_true', help='hide the progress bar'),
)
def _export(args: argparse.Namespace) -> int:
    import os

    from lightning.pytorch import Trainer

    from torchgeo_macl.search import EmbeddingWriter, model_fingerprint
    from torchgeo_macl.search.shards import list_shards

    if os.path.isdir(args.data):
        raise ValueError(
            f'{args.data} is a folder; export embeds the images of a datamodule '
            'config (index a folder of images with `index --data FOLDER`)'
        )
    existing = list_shards(args.out)
    if existing:
        raise FileExistsError(
            f'{args.out} holds embedding shards already ({existing[0].name}, ...); '
            'give an empty or new --out'
        )
    task = _load_task(args.ckpt)
    writer = EmbeddingWriter(
        args.out,
        model_id=model_fingerprint(task),
        checkpoint=os.path.abspath(args.ckpt),
    )
    dm = _predict_datamodule(args.data, task, args.split)
    os.makedirs(args.out, exist_ok=True)
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        logger=False,
        callbacks=[writer],
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.predict(task, datamodule=dm, return_predictions=False)
    print(
        f'rank {trainer.global_rank} of {trainer.world_size}: wrote '
        f'{writer.count} embeddings into {writer.manifest}'
    )
    return 0


@subcommand(
    'search',
    'Search an index with image files or archive ids; print the top-K.',
    arg('queries', nargs='+', metavar='QUERY', help='image file or id of the index'),
    arg('--index', required=True, help='index path prefix given to `index --out`'),
    arg('--ckpt', required=True, help='the checkpoint the index was built with'),
    arg(
        '-k',
        type=positive_int,
        default=10,
        help='results per query (default: %(default)s)',
    ),
    arg('--grid', default=None, help='also write a PNG grid of the results'),
    _ACCELERATOR,
)
def _search(args: argparse.Namespace) -> int:
    from torchgeo_macl.search import (
        EmbeddingIndex,
        inference_device,
        load_archive_info,
        plot_search_grid,
        search_archive,
    )

    device = inference_device(args.accelerator)
    task = _load_task(args.ckpt).to(device)
    index = EmbeddingIndex.load(args.index)
    info = load_archive_info(args.index)
    results = search_archive(index, info, task, args.queries, k=args.k)
    for query, hits in results:
        print(f'query: {query}')
        print(f'  {"rank":>4}  {"score":>7}  {"id":<32} labels')
        for h in hits:
            shared = (
                '' if h.shared is None else f'  (shared: {", ".join(h.shared) or "-"})'
            )
            print(
                f'  {h.rank:>4}  {h.score:7.4f}  {h.id:<32} {", ".join(h.labels)}{shared}'
            )
    if args.grid:
        import matplotlib

        matplotlib.use('Agg')
        fig = plot_search_grid(results, info, columns=min(args.k, 8))
        fig.savefig(args.grid, dpi=110)
        print(f'grid: {args.grid}')
    return 0


#: Environment of the rasterio readers, as :func:`torchgeo.main.main` sets it (from
#: https://github.com/pangeo-data/cog-best-practices).
_RASTERIO_SETTINGS = {
    'GDAL_DISABLE_READDIR_ON_OPEN': 'EMPTY_DIR',
    'AWS_NO_SIGN_REQUEST': 'YES',
    'GDAL_MAX_RAW_BLOCK_CACHE_SIZE': '200000000',
    'GDAL_SWATH_SIZE': '200000000',
    'VSI_CURL_CACHE_SIZE': '200000000',
}

#: Jsonargparse report lines left out of the one-line summary of a usage error.
_PARSER_NOISE = (
    'Does not validate against any of the Union subtypes',
    'Subtypes:',
    'Errors:',
    'Given value type:',
    "- Expected a <class 'NoneType'>",
)


class _HeldRecords(logging.Filter):
    """Hold back the records of a logger until :meth:`release` passes them on."""

    def __init__(self, logger: logging.Logger) -> None:
        """Initialise a new _HeldRecords filter.

        Args:
            logger: The logger whose records are held; add the filter to it.
        """
        super().__init__()
        self.logger = logger
        self.records: list[logging.LogRecord] = []
        self.holding = True

    def filter(self, record: logging.LogRecord) -> bool:
        """Hold a record back while holding, otherwise let it through.

        Args:
            record: The log record.

        Returns:
            Whether the logger emits it now.
        """
        if self.holding:
            self.records.append(record)
            return False
        return True

    def release(self) -> None:
        """Emit the held records and let later ones through."""
        self.holding = False
        records, self.records = self.records, []
        for record in records:
            self.logger.handle(record)


def _summarise_parser_error(message: str) -> str:
    """Shorten a jsonargparse usage error to one line.

    Args:
        message: The message of jsonargparse's ``ArgumentError``.

    Returns:
        Its lines that say what is wrong (the first given value kept), on one line.
    """
    kept: list[str] = []
    given = False
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith(_PARSER_NOISE):
            continue
        if line.startswith('Given value:'):
            if given or len(line) > 80 or 'NestedArg(' in line:
                continue
            given = True
        kept.append(line.removeprefix('- '))
    return ' '.join(kept) or _one_line(message)


def _raised_by_jsonargparse(exc: BaseException) -> bool:
    """Whether jsonargparse itself raised an exception.

    Args:
        exc: The exception.

    Returns:
        True when the innermost frame of its traceback is in jsonargparse.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get('__name__', '')).startswith('jsonargparse')


def _reported_exception(exc: BaseException) -> BaseException:
    """The exception of a chain that says what is wrong.

    Jsonargparse wraps the error of a constructor that rejects its arguments in
    errors of its own (``Does not validate against any of the Union subtypes``);
    this follows ``__cause__`` (or an unsuppressed ``__context__``) past them.

    Args:
        exc: The exception raised.

    Returns:
        The first exception of the chain that jsonargparse did not raise, or the
        last one of the chain.
    """
    seen = {id(exc)}
    while _raised_by_jsonargparse(exc):
        inner = exc.__cause__
        if inner is None and not exc.__suppress_context__:
            inner = exc.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    return exc


def _unreadable_checkpoint(exc: BaseException) -> CheckpointError | None:
    """Recognise an error of :func:`torch.load` reading a truncated or corrupt file.

    Args:
        exc: The exception.

    Returns:
        A :class:`CheckpointError` naming the file when ``exc`` is an
        :class:`EOFError`, :class:`RuntimeError` or unpickling error raised inside
        :func:`torch.load`; None otherwise.
    """
    import pickle

    if not isinstance(exc, (EOFError, RuntimeError, pickle.UnpicklingError)):
        return None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (
            frame.f_globals.get('__name__') == 'torch.serialization'
            and frame.f_code.co_name == 'load'
        ):
            source = frame.f_locals.get('f')
            if not isinstance(source, (str, os.PathLike)):
                source = getattr(source, 'path', None) or getattr(source, 'name', None)
            name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ''
            where = f' {name}' if name else ''
            return CheckpointError(f'cannot read checkpoint{where}: {_one_line(exc)}')
        tb = tb.tb_next
    return None


def _user_error(
    exc: BaseException, classes: tuple[type[Exception], ...] = USER_ERRORS
) -> BaseException | None:
    """The user error an exception reports.

    Args:
        exc: The exception raised.
        classes: The exception classes that are user errors.

    Returns:
        The exception to report on one line (see :func:`_reported_exception`; an
        unreadable checkpoint as a :class:`CheckpointError`), or None when ``exc``
        is a fault of the program.
    """
    reported = _reported_exception(exc)
    unreadable = _unreadable_checkpoint(reported)
    if unreadable is not None:
        return unreadable
    return reported if isinstance(reported, classes) else None


def _tensorboard_with_verbatim_tags(trainer: Any, logger: object) -> None:
    """Replace Lightning's default TensorBoard logger by this package's.

    Lightning's default TensorBoard logger shows ``val_mAP@20`` as ``val_mAP_20``;
    :class:`torchgeo_macl.loggers.TensorBoardLogger` keeps the names. The
    replacement has the same folder, name and version, so the run's files land
    where Lightning's would.

    Args:
        trainer: The trainer LightningCLI built.
        logger: The trainer's ``logger`` setting: the default (True or None) is
            replaced when Lightning made its TensorBoard logger from it; False,
            or a logger of the user's, is kept.
    """
    from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
    from lightning.pytorch.loggers import TensorBoardLogger as LightningLogger

    from torchgeo_macl.loggers import TensorBoardLogger

    default = trainer.logger
    if not (logger is None or logger is True) or type(default) is not LightningLogger:
        return
    trainer.loggers = [
        TensorBoardLogger(
            save_dir=default.save_dir,
            name=default.name,
            version=SLURMEnvironment.job_id(),
        )
    ]


def _default_prediction_writer(trainer: Any) -> None:
    """Give ``predict`` an embedding writer unless the user configured a writer.

    Lightning's ``predict`` returns the predictions, which a command line drops;
    :class:`torchgeo_macl.search.EmbeddingWriter` writes them as shards (one per
    process) into the ``predictions`` folder of the run's log directory, for
    ``torchgeo-macl index --embeddings``.

    Args:
        trainer: The trainer LightningCLI built.
    """
    from lightning.pytorch.callbacks import BasePredictionWriter

    from torchgeo_macl.search import EmbeddingWriter

    if not any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks):
        trainer.callbacks.append(EmbeddingWriter())


def lightning_cli(
    args: Sequence[str],
    *,
    run: bool = True,
    instantiate: bool = True,
    save_config: bool = True,
    on_instantiated: Callable[[], None] | None = None,
) -> Any:
    """TorchGeo's LightningCLI, set up as :func:`torchgeo.main.main` does.

    The model and datamodule are subclasses of TorchGeo's task and datamodule bases
    given by ``class_path`` (bare names of TorchGeo's and of plugin classes resolve
    once the plugins are loaded). The parser raises usage errors instead of
    printing them and exiting. ``torchgeo-macl fit|validate|test|predict`` and the
    experiment runner both build their runs here.

    Args:
        args: With ``run``: the subcommand and its arguments; without: the
            arguments only (``--config FILE``, ``--KEY=VALUE``).
        run: Run the subcommand (else only build the classes).
        instantiate: Build the trainer, model and datamodule and seed the run;
            False only parses (only without ``run``).
        save_config: Save the configuration into the log folder, as LightningCLI
            does.
        on_instantiated: Called once the model, datamodule and trainer exist.

    Returns:
        The :class:`~lightning.pytorch.cli.LightningCLI`.

    Raises:
        argparse.ArgumentError: If an argument or a configuration is not valid.
        ValueError: If ``instantiate`` is False with ``run``.
    """
    import importlib
    import importlib.util

    import torchgeo
    from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
    from torchgeo.datamodules import BaseDataModule

    from torchgeo_macl._compat import BaseTask

    if run and not instantiate:
        raise ValueError('a LightningCLI that runs must instantiate its classes')
    # bare class names of torchgeo's datamodules, tasks and profilers in configs, as
    # torchgeo.main imports them (torchgeo.tasks and torchgeo.profilers since 0.10)
    for name in ('datamodules', 'tasks', 'trainers', 'profilers'):
        if importlib.util.find_spec(f'torchgeo.{name}') is not None:
            importlib.import_module(f'torchgeo.{name}')

    class _CLI(LightningCLI):
        def parse_arguments(
            self, parser: LightningArgumentParser, args: ArgsType
        ) -> None:
            # the arguments are given explicitly: no mix-up to warn about
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    'ignore', message="LightningCLI's args parameter"
                )
                super().parse_arguments(parser, args)

        def _set_seed(self) -> None:
            if instantiate:
                super()._set_seed()

        def instantiate_classes(self) -> None:
            if instantiate:
                super().instantiate_classes()
                trainer_config = self._get(self.config, 'trainer', default={})
                _tensorboard_with_verbatim_tags(
                    self.trainer, trainer_config.get('logger')
                )
                if self.subcommand == 'predict':
                    _default_prediction_writer(self.trainer)

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            if on_instantiated is not None:
                on_instantiated()

    os.environ.update(_RASTERIO_SETTINGS)
    save: dict[str, Any] = (
        {'save_config_kwargs': {'overwrite': True}}
        if save_config
        else {'save_config_callback': None}
    )
    return _CLI(
        model_class=BaseTask,
        datamodule_class=BaseDataModule,
        seed_everything_default=0,
        parser_kwargs={'version': torchgeo.__version__, 'exit_on_error': False},
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=run,
        args=list(args),
        **save,
    )


#: A deprecation warning that Lightning's own code raises under recent torch.
_LIGHTNING_LEAFSPEC_WARNING = r'`isinstance\(treespec, LeafSpec\)` is deprecated'


def _run_lightning(args: list[str], debug: bool) -> int:
    """Run a LightningCLI subcommand, reporting user errors on one line.

    The ``Seed set to ...`` message is held back until the classes are instantiated,
    so that an invalid setting is the first line on standard error.

    Args:
        args: The subcommand and its arguments.
        debug: Re-raise user errors (full traceback).

    Returns:
        The exit code.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    command = args[0]
    load_plugins()
    seed_logger = logging.getLogger('lightning.fabric.utilities.seed')
    held = _HeldRecords(seed_logger)
    seed_logger.addFilter(held)
    try:
        with warnings.catch_warnings():
            # Lightning's pytree helper with torch >= 2.10, on every batch transfer
            warnings.filterwarnings('ignore', message=_LIGHTNING_LEAFSPEC_WARNING)
            lightning_cli(args, on_instantiated=held.release)
    except argparse.ArgumentError as exc:
        if debug:
            raise
        _report(command, _summarise_parser_error(str(exc)))
        return 2
    except Exception as exc:
        error = _user_error(exc, (*USER_ERRORS, MisconfigurationException))
        if debug or error is None:
            raise
        _report(command, _one_line(error))
        return 1
    finally:
        seed_logger.removeFilter(held)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchgeo-macl`` command line.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` by default).

    Returns:
        The exit code: 0, 1 for a user error (:data:`USER_ERRORS`) or 2 for a
        usage error; a registered subcommand's own code otherwise.

    Raises:
        SystemExit: For ``--help``, ``--version`` and argparse usage errors.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # options before the subcommand are the global ones, which take no value
    position = next((i for i, a in enumerate(args) if not a.startswith('-')), len(args))
    if position < len(args) and args[position] in LIGHTNING_SUBCOMMANDS:
        ns = parser.parse_args(args[:position])
        return _run_lightning(args[position:], ns.debug or debug_from_env())
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help()
        return 0
    try:
        return SUBCOMMANDS[ns.command].run(ns)
    except Exception as exc:
        error = _user_error(exc)
        if error is None or ns.debug or debug_from_env():
            raise
        _report(ns.command, _one_line(error))
        return 1


if __name__ == '__main__':
    sys.exit(main())
