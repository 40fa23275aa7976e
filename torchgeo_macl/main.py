"""The ``torchgeo-macl`` command line.

``fit``, ``validate``, ``test`` and ``predict`` load every TorchGeo plugin and hand
the remaining arguments to TorchGeo's own LightningCLI (:func:`torchgeo.main.main`),
so YAML configs can use bare class names of plugin classes. The other subcommands
are registered with :func:`subcommand`; adding one is one decorated function::

    @subcommand('hello', 'Print a greeting.', arg('--name', default='world'))
    def _hello(args: argparse.Namespace) -> int:
        print(f'hello {args.name}')
        return 0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torchgeo_macl import __version__

#: Subcommands forwarded to TorchGeo's LightningCLI.
LIGHTNING_SUBCOMMANDS = ('fit', 'validate', 'test', 'predict')

_LIGHTNING_HELP = {
    'fit': 'Train a model (LightningCLI, all plugins loaded).',
    'validate': 'Validate a model (LightningCLI, all plugins loaded).',
    'test': 'Test a model (LightningCLI, all plugins loaded).',
    'predict': 'Predict with a model (LightningCLI, all plugins loaded).',
}


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
    parser = argparse.ArgumentParser(
        prog='torchgeo-macl',
        description=(
            'Multi-label adaptive contrastive learning (MACL) for remote-sensing '
            'image retrieval, as a TorchGeo plugin.'
        ),
        epilog=(
            'fit/validate/test/predict accept every LightningCLI option; '
            "run 'torchgeo-macl fit --help' for them."
        ),
    )
    parser.add_argument(
        '--version', action='version', version=f'torchgeo-macl {__version__}'
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
        type=int,
        default=840,
        help='archive size (default: %(default)s)',
    ),
    arg('--image-size', type=int, default=64, help='image side (default: %(default)s)'),
    arg(
        '--train-size',
        type=int,
        default=32,
        help='side images are resized to for training and retrieval '
        '(default: %(default)s)',
    ),
    arg('--epochs', type=int, default=8, help='epochs per loss (default: %(default)s)'),
    arg('--batch-size', type=int, default=64, help='batch size (default: %(default)s)'),
    arg('--seed', type=int, default=0, help='seed (default: %(default)s)'),
    arg('--model', default='resnet18', help='timm backbone (default: %(default)s)'),
    arg('--no-progress', action='store_true', help='hide progress bars'),
)
def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchgeo_macl.demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            out=Path(args.out),
            num_images=args.num_images,
            image_size=args.image_size,
            train_size=args.train_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            model=args.model,
            progress=not args.no_progress,
        )
    )
    return 0


def _datamodule_from_config(path: str) -> Any:
    """Instantiate the datamodule of a YAML config (a ``data:`` section or bare)."""
    import importlib

    import yaml

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    section = config.get('data', config)
    if not isinstance(section, dict) or 'class_path' not in section:
        raise ValueError(
            f'{path}: no datamodule class_path found (expected data.class_path)'
        )
    name = str(section['class_path'])
    if '.' in name:
        module, _, cls = name.rpartition('.')
        target = getattr(importlib.import_module(module), cls)
    else:
        import torchgeo.datamodules

        import torchgeo_macl.datamodules

        target = getattr(torchgeo_macl.datamodules, name, None) or getattr(
            torchgeo.datamodules, name, None
        )
        if target is None:
            raise ValueError(f'{path}: unknown datamodule {name!r}')
    return target(**(section.get('init_args') or {}))


@subcommand(
    'index',
    'Embed an archive with a trained checkpoint and build a faiss index.',
    arg('--ckpt', required=True, help='RetrievalTask checkpoint'),
    arg('--data', required=True, help='datamodule YAML config, or a folder of images'),
    arg(
        '--out',
        required=True,
        help='index path prefix (writes OUT.json, the data files it names, ...)',
    ),
    arg('--kind', default='flat', choices=('flat', 'ivf', 'hnsw', 'ivfpq')),
    arg(
        '--split',
        default='all',
        choices=('database', 'test', 'all'),
        help='datamodule images to index (default: %(default)s)',
    ),
    arg('--batch-size', type=int, default=64),
    arg('--accelerator', default='auto'),
)
def _index(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from tqdm import tqdm

    from torchgeo_macl.retrieval import EmbeddingIndex
    from torchgeo_macl.retrieval.archive import (
        ArchiveInfo,
        datamodule_sources,
        embed_datamodule,
        embed_images,
        list_images,
        load_task,
        model_fingerprint,
        read_image,
        save_archive_info,
    )

    task = load_task(args.ckpt)
    # identify the checkpoint as loaded: embedding a datamodule runs the task's setup,
    # which may overwrite its preprocessing buffers with the datamodule's settings
    fingerprint = model_fingerprint(task)
    bands = int(task.hparams['in_channels'])
    classes: list[str] = []
    if os.path.isdir(args.data):
        files = list_images(args.data)
        embeddings_parts = []
        for start in tqdm(range(0, len(files), args.batch_size), desc='embedding'):
            chunk = [
                read_image(p, bands) for p in files[start : start + args.batch_size]
            ]
            embeddings_parts.append(embed_images(task, chunk, args.batch_size))
        import torch

        embeddings = torch.cat(embeddings_parts)
        root = Path(args.data)
        ids = [str(p.relative_to(root).with_suffix('')) for p in files]
        labels = None
        sources = {i: str(p.resolve()) for i, p in zip(ids, files)}
    else:
        dm = _datamodule_from_config(args.data)
        dm.predict_split = args.split
        dm.setup('predict')
        embeddings, ids, labels = embed_datamodule(
            task, dm, accelerator=args.accelerator
        )
        sources = datamodule_sources(dm)
        classes = list(getattr(dm, 'classes', []))
    index = EmbeddingIndex(embeddings.shape[1], args.kind, model_id=fingerprint)
    index.add(embeddings, ids, labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    index.save(args.out)
    save_archive_info(
        args.out, ArchiveInfo(os.path.abspath(args.ckpt), fingerprint, classes, sources)
    )
    print(f'indexed {len(index)} images ({args.kind}) into {args.out}')
    return 0


@subcommand(
    'search',
    'Search an index with image files or archive ids; print the top-K.',
    arg('queries', nargs='+', metavar='QUERY', help='image file or id of the index'),
    arg('--index', required=True, help='index path prefix given to `index --out`'),
    arg('--ckpt', required=True, help='the checkpoint the index was built with'),
    arg('-k', type=int, default=10, help='results per query (default: %(default)s)'),
    arg('--grid', default=None, help='also write a PNG grid of the results'),
)
def _search(args: argparse.Namespace) -> int:
    from torchgeo_macl.retrieval import EmbeddingIndex
    from torchgeo_macl.retrieval.archive import (
        load_archive_info,
        load_task,
        plot_search_grid,
        search_archive,
    )

    task = load_task(args.ckpt)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchgeo-macl`` command line.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` by default).

    Returns:
        The exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_SUBCOMMANDS:
        load_plugins()
        from torchgeo.main import main as torchgeo_main

        torchgeo_main(args)
        return 0
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help()
        return 0
    try:
        return SUBCOMMANDS[ns.command].run(ns)
    except (FileNotFoundError, ValueError) as exc:
        print(f'torchgeo-macl {ns.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
