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
    return SUBCOMMANDS[ns.command].run(ns)


if __name__ == '__main__':
    sys.exit(main())
