import argparse
import os
import subprocess
import sys
import sysconfig

import pytest

import torchgeo_macl
from torchgeo_macl import main as cli
from torchgeo_macl.main import SUBCOMMANDS, arg, build_parser, main, subcommand


def _script() -> str:
    return os.path.join(sysconfig.get_path('scripts'), 'torchgeo-macl')


def test_console_script_help_and_version() -> None:
    out = subprocess.run(
        [_script(), '--help'], capture_output=True, text=True, check=True
    ).stdout
    for name in ('fit', 'validate', 'test', 'predict', 'plugins'):
        assert name in out
    out = subprocess.run(
        [_script(), '--version'], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f'torchgeo-macl {torchgeo_macl.__version__}'


def test_module_entry() -> None:
    out = subprocess.run(
        [sys.executable, '-m', 'torchgeo_macl', '--version'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert torchgeo_macl.__version__ in out


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert 'usage: torchgeo-macl' in capsys.readouterr().out


def test_unknown_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['no-such-command'])
    assert exc.value.code == 2
    assert 'invalid choice' in capsys.readouterr().err


def test_fit_help_reaches_lightning_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, 'argv', ['torchgeo-macl'])
    with pytest.raises(SystemExit) as exc:
        main(['fit', '--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert '--trainer' in out
    assert '--model' in out
    assert '--data' in out


def test_adding_a_subcommand_is_one_function(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, 'SUBCOMMANDS', dict(SUBCOMMANDS))

    @subcommand('hello', 'Print a greeting.', arg('--name', default='world'))
    def _hello(args: argparse.Namespace) -> int:
        print(f'hello {args.name}')
        return 3

    assert main(['hello', '--name', 'geo']) == 3
    assert capsys.readouterr().out == 'hello geo\n'
    assert 'hello' in build_parser().format_help()
    with pytest.raises(ValueError, match='already registered'):
        subcommand('hello', 'again')(_hello)
    with pytest.raises(ValueError, match='already registered'):
        subcommand('fit', 'clash')(_hello)
