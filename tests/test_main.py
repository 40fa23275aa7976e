import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import torchgeo_macl
from torchgeo_macl import main as cli
from torchgeo_macl.main import (
    DEBUG_ENV,
    SUBCOMMANDS,
    CheckpointError,
    arg,
    build_parser,
    debug_from_env,
    main,
    positive_int,
    subcommand,
)


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


@pytest.fixture
def script_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI reads ``sys.argv``: leave only the console script's name there."""
    monkeypatch.setattr(sys, 'argv', ['torchgeo-macl'])


@pytest.mark.usefixtures('script_argv')
def test_fit_help_reaches_lightning_cli(capsys: pytest.CaptureFixture[str]) -> None:
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


# ------------------------------------------------------------------ errors

CONF = Path(__file__).parent / 'conf'
DATA = Path(__file__).parent / 'data'


def _error_line(err: str, command: str) -> str:
    """The single line of standard error, checked to be a one-line error report."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f'torchgeo-macl {command}: error: '), err
    assert 'Traceback' not in err
    return lines[0]


def test_positive_int() -> None:
    assert positive_int('3') == 3
    for text, message in (('0', 'got 0'), ('-2', 'got -2'), ('x', "got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            positive_int(text)


@pytest.mark.parametrize(
    ('value', 'expected'),
    [('1', True), ('true', True), (' ON ', True), ('0', False), ('', False)],
)
def test_debug_from_env(value: str, expected: bool) -> None:
    assert debug_from_env({DEBUG_ENV: value}) is expected
    assert debug_from_env({}) is False


@pytest.mark.parametrize(
    ('argv', 'option', 'value'),
    [
        (
            ['index', '--ckpt', 'a', '--data', 'b', '--out', 'c', '--batch-size', '0'],
            '--batch-size',
            '0',
        ),
        (
            ['index', '--ckpt', 'a', '--data', 'b', '--out', 'c', '--batch-size', 'x'],
            '--batch-size',
            "'x'",
        ),
        (['search', '--index', 'i', '--ckpt', 'c', '-k', '0', 'q'], '-k', '0'),
        (['demo', '--epochs', '0'], '--epochs', '0'),
        (['demo', '--batch-size', '-1'], '--batch-size', '-1'),
        (['demo', '--num-images', '0'], '--num-images', '0'),
        (['demo', '--image-size', '0'], '--image-size', '0'),
        (['demo', '--train-size', '0'], '--train-size', '0'),
    ],
)
def test_numeric_options_reject_values_below_one(
    argv: list[str], option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = _error_line(capsys.readouterr().err, argv[0])
    assert f'argument {option}: ' in line
    assert f'got {value}' in line


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['export', '--ckpt', 'a'])
    assert exc.value.code == 2
    line = _error_line(capsys.readouterr().err, 'export')
    assert 'required: --data, --out' in line


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """A subcommand ``fail`` that raises the exception put in the returned list."""
    monkeypatch.setattr(cli, 'SUBCOMMANDS', dict(SUBCOMMANDS))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    raised: list[BaseException] = []

    @subcommand('fail', 'Raise an exception.')
    def _fail(args: argparse.Namespace) -> int:
        raise raised[0]

    return raised


@pytest.mark.parametrize(
    ('error', 'message'),
    [
        (
            PermissionError(13, 'Permission denied', '/ro/out.json'),
            "[Errno 13] Permission denied: '/ro/out.json'",
        ),
        (FileExistsError(17, 'File exists', '/out'), "[Errno 17] File exists: '/out'"),
        (FileNotFoundError('checkpoint not found: a.ckpt'), 'a.ckpt'),
        (ValueError('bad value\nspread over lines'), 'bad value spread over lines'),
        (CheckpointError('x.ckpt is not a RetrievalTask checkpoint'), 'x.ckpt'),
        (EOFError(), None),
    ],
)
def test_user_errors_are_one_line_and_exit_1(
    failing: list[BaseException],
    error: BaseException,
    message: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing.append(error)
    if message is None:  # not a user error: the traceback is kept
        with pytest.raises(EOFError):
            main(['fail'])
        return
    assert main(['fail']) == 1
    assert message in _error_line(capsys.readouterr().err, 'fail')
    with pytest.raises(type(error)):
        main(['--debug', 'fail'])
    monkeypatch.setenv(DEBUG_ENV, '1')
    with pytest.raises(type(error)):
        main(['fail'])


@pytest.mark.parametrize(
    'error', [AssertionError('bug'), TypeError('bug'), KeyError('bug')]
)
def test_faults_of_the_program_keep_their_traceback(
    failing: list[BaseException], error: BaseException
) -> None:
    failing.append(error)
    with pytest.raises(type(error)):
        main(['fail'])


@pytest.fixture(scope='module')
def checkpoint(
    tiny_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny RetrievalTask checkpoint (untrained)."""
    return tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny.ckpt')


@pytest.mark.parametrize(
    ('name', 'content', 'reason'),
    [
        ('empty.ckpt', lambda ckpt: b'', 'EOFError'),
        ('text.ckpt', lambda ckpt: b'not a checkpoint', ''),
        ('cut.ckpt', lambda ckpt: ckpt.read_bytes()[:4096], 'zip archive'),
    ],
)
@pytest.mark.parametrize('command', ['index', 'search'])
def test_unreadable_checkpoint(
    command: str,
    name: str,
    content: Callable[[Path], bytes],
    reason: str,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content(checkpoint))
    if command == 'index':
        argv = ['index', '--ckpt', str(bad), '--data', str(DATA)]
        argv += ['--out', str(tmp_path / 'idx' / 'x')]
    else:
        argv = ['search', '--index', str(tmp_path / 'idx'), '--ckpt', str(bad), 'q']
    assert main(argv) == 1
    line = _error_line(capsys.readouterr().err, command)
    assert f'{bad} is not a RetrievalTask checkpoint' in line
    assert reason in line
    assert not (tmp_path / 'idx').exists()
    with pytest.raises(CheckpointError):
        main(['--debug', *argv])


def test_index_output_under_a_file(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / 'file'
    blocker.write_text('')
    argv = ['index', '--ckpt', str(checkpoint), '--data', str(DATA / 'dlrsd')]
    assert main([*argv, '--out', str(blocker / 'x')]) == 1
    line = _error_line(capsys.readouterr().err, 'index')
    assert '[Errno 17] File exists' in line
    assert str(blocker) in line


@pytest.mark.skipif(
    not hasattr(os, 'geteuid') or os.geteuid() == 0,
    reason='permissions do not bind the superuser',
)
def test_demo_read_only_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o500)
    try:
        assert main(['demo', '--out', str(tmp_path / 'demo')]) == 1
    finally:
        tmp_path.chmod(0o700)
    line = _error_line(capsys.readouterr().err, 'demo')
    assert 'Permission denied' in line
    assert str(tmp_path / 'demo') in line


def test_demo_output_under_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / 'file'
    blocker.write_text('')
    assert main(['demo', '--out', str(blocker / 'demo')]) == 1
    line = _error_line(capsys.readouterr().err, 'demo')
    assert str(blocker / 'demo') in line


def _data_config(tmp_path: Path, **init_args: Any) -> Path:
    root = tmp_path / 'dlrsd'
    shutil.copytree(DATA / 'dlrsd' / 'DLRSD', root / 'DLRSD')
    shutil.rmtree(root / 'DLRSD' / 'splits', ignore_errors=True)
    args = {'root': str(root), 'batch_size': 4, **init_args}
    config = tmp_path / 'data.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'data': {
                    'class_path': 'torchgeo_macl.datamodules.DLRSDRetrievalDataModule',
                    'init_args': args,
                }
            }
        )
    )
    return config


def test_index_empty_split(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 12 images: the test split's 1 % is empty
    config = _data_config(tmp_path, split_fractions=[0.9, 0.09, 0.01])
    out = tmp_path / 'idx' / 'x'
    argv = ['index', '--ckpt', str(checkpoint), '--data', str(config), '--out']
    assert main([*argv, str(out), '--split', 'test']) == 1
    line = _error_line(capsys.readouterr().err, 'index')
    assert f"{config}: the 'test' split of DLRSDRetrievalDataModule holds no" in line
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('data: [unclosed', 'invalid YAML'),
        ('- a\n- b\n', 'no datamodule class_path'),
        ('data:\n  class_path: NoSuchDataModule\n', "unknown datamodule 'NoSuch"),
        ('data:\n  class_path: no_such_module.DM\n', 'cannot import datamodule'),
        (
            (
                'data:\n  class_path: DLRSDRetrievalDataModule\n'
                '  init_args:\n    no_such_arg: 1\n'
            ),
            'no_such_arg',
        ),
    ],
)
def test_index_invalid_data_config(
    text: str,
    message: str,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / 'data.yaml'
    config.write_text(text)
    argv = ['index', '--ckpt', str(checkpoint), '--data', str(config)]
    assert main([*argv, '--out', str(tmp_path / 'idx' / 'x')]) == 1
    line = _error_line(capsys.readouterr().err, 'index')
    assert str(config) in line
    assert message in line


def _fit(tmp_path: Path, *extra: str) -> list[str]:
    # the data root holds nothing: every case fails before the data is read
    return [
        'fit',
        '--config',
        str(CONF / 'dlrsd.yaml'),
        f'--data.init_args.root={tmp_path / "no_data"}',
        f'--trainer.default_root_dir={tmp_path / "out"}',
        '--trainer.fast_dev_run=1',
        *extra,
    ]


LIGHTNING_ERRORS = [
    ('--model.init_args.loss=nope', 1, "unknown loss 'nope'; choose one of macl"),
    ('--data.init_args.batch_size=-1', 1, 'batch_size must be positive, got -1'),
    (
        '--model.init_args.loss_kwargs={foo: 1}',
        1,
        "loss_kwargs ['foo'] are not arguments of the macl loss",
    ),
    (
        '--model.init_args.loss_kwargs={tau0: -1}',
        1,
        'invalid loss_kwargs for the macl loss: ',
    ),
    ('--model.init_args.weights=missing.ckpt', 1, 'weights file not found: missing'),
    (
        '--model.init_args.weights=NoSuchWeights',
        1,
        "weights 'NoSuchWeights' is neither an existing file nor",
    ),
    (
        '--model.init_args.model=resnet181',
        1,
        "unknown timm model 'resnet181'; did you mean resnet18",
    ),
    (
        '--model.init_args.model=smp:no_such_encoder',
        1,
        "unknown segmentation-models-pytorch encoder 'no_such_encoder'",
    ),
    ('--model.init_args.image_size=0', 1, 'image_size must be >= 1 or None, got 0'),
    ('--model.init_args.embed_dim=0', 1, 'embed_dim must be >= 1, got 0'),
    ('--trainer.accelerator=no_such_accelerator', 1, 'invalid accelerator name'),
    ('--model.init_args.foo=1', 2, "Option 'foo' is not accepted"),
    ('--data.init_args.batch_size=abc', 2, "Expected a <class 'int'>. Got value: abc"),
]


@pytest.mark.usefixtures('script_argv')
@pytest.mark.parametrize(('option', 'code', 'message'), LIGHTNING_ERRORS)
def test_lightning_errors_are_one_line(
    option: str,
    code: int,
    message: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert main(_fit(tmp_path, option)) == code
    assert message in _error_line(capfd.readouterr().err, 'fit')
    assert not (tmp_path / 'out').exists()
    # the full report: jsonargparse's own error, or the one raised
    with pytest.raises(Exception, match=re.escape(message)):
        main(['--debug', *_fit(tmp_path, option)])


@pytest.mark.usefixtures('script_argv')
def test_lightning_unreadable_checkpoint(
    checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / 'cut.ckpt'
    bad.write_bytes(checkpoint.read_bytes()[:4096])
    for option in (f'--ckpt_path={bad}', f'--model.init_args.weights={bad}'):
        assert main(_fit(tmp_path, option)) == 1
        line = _error_line(capfd.readouterr().err, 'fit')
        assert f'cannot read checkpoint {bad}: ' in line


def test_lightning_fault_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: list[str], on_instantiated: Callable[[], None]) -> None:
        raise ValueError('wrapped') from TypeError('a bug')

    monkeypatch.setattr(cli, 'lightning_cli', broken)
    monkeypatch.setattr(cli, 'load_plugins', list)
    assert main(['fit']) == 1  # a ValueError raised outside jsonargparse is reported

    def assertion(args: list[str], on_instantiated: Callable[[], None]) -> None:
        raise AssertionError('a bug')

    monkeypatch.setattr(cli, 'lightning_cli', assertion)
    with pytest.raises(AssertionError):
        main(['fit'])


@pytest.mark.usefixtures('script_argv')
def test_print_config_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*_fit(tmp_path), '--print_config'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert 'class_path: torchgeo_macl.tasks.RetrievalTask' in out
    assert 'batch_size: 4' in out


def test_console_script_reports_the_cause_first(tmp_path: Path) -> None:
    argv = [_script(), *_fit(tmp_path, '--model.init_args.loss=nope')]
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    line = _error_line(result.stderr, 'fit')
    assert "unknown loss 'nope'" in line
    result = subprocess.run(
        argv, capture_output=True, text=True, env={**env, DEBUG_ENV: '1'}, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith('Traceback')
    assert "ValueError: unknown loss 'nope'" in result.stderr


def test_index_embeds_at_the_checkpoint_size(
    tiny_checkpoint: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from torchgeo_macl.search import (
        EmbeddingIndex,
        load_archive_info,
        load_task,
        search_archive,
    )

    # trained at 32 px on data normalised with the datamodule's statistics
    ckpt = tiny_checkpoint(tmp_path / 'at32.ckpt', trained_at=32)
    config = _data_config(tmp_path, image_size=48)
    out = tmp_path / 'idx' / 'x'
    argv = ['index', '--ckpt', str(ckpt), '--data', str(config), '--out', str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "images are embedded at the checkpoint's 32 px (the config says 48)" in err
    # an archive image searched by its own file is its own top hit
    info = load_archive_info(out)
    index = EmbeddingIndex.load(out)
    some_id = index.ids[0]
    [(_, hits)] = search_archive(
        index, info, load_task(ckpt), [info.sources[some_id]], k=3
    )
    assert hits[0].id == some_id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------ index a folder


def _image_folder(folder: Path, *names: str) -> Path:
    """Write small RGB images of the given names (PNG, JPEG, ... by suffix)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


def _index_folder(checkpoint: Path, folder: Path, out: Path, *extra: str) -> int:
    """Run ``index --data FOLDER`` with a tiny batch size; return the exit code."""
    argv = ['index', '--ckpt', str(checkpoint), '--data', str(folder)]
    return main([*argv, '--out', str(out), '--batch-size', '2', *extra])


def test_index_folder_ids_that_clash(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _image_folder(tmp_path / 'images', 'a.png', 'a.jpg', 'b.png', 's/c.tif')
    out = tmp_path / 'idx' / 'x'
    assert _index_folder(checkpoint, folder, out) == 1
    line = _error_line(capsys.readouterr().err, 'index')
    assert "'a'" in line
    assert str(folder / 'a.jpg') in line
    assert str(folder / 'a.png') in line
    assert 'b.png' not in line
    assert not out.parent.exists()


@pytest.mark.parametrize(
    'content',
    [lambda png: b'not an image', lambda png: png[: len(png) // 2]],
    ids=['junk', 'truncated'],
)
def test_index_folder_unreadable_image(
    content: Callable[[bytes], bytes],
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _image_folder(tmp_path / 'images', 'a.png', 'b.png', 'c.png', 'd.png')
    bad = folder / 'c.png'
    bad.write_bytes(content(bad.read_bytes()))
    out = tmp_path / 'idx' / 'x'
    assert _index_folder(checkpoint, folder, out) == 1
    line = _error_line(capsys.readouterr().err, 'index')
    assert f'cannot decode image {bad}' in line
    assert list(out.parent.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, 'umask'), reason='no umask on this platform')
@pytest.mark.parametrize(('umask', 'mode'), [(0o022, 0o644), (0o027, 0o640)])
def test_index_files_follow_the_umask(
    umask: int, mode: int, checkpoint: Path, tmp_path: Path
) -> None:
    folder = _image_folder(tmp_path / 'images', 'a.png', 'b.png')
    config = _data_config(tmp_path)
    previous = os.umask(umask)
    try:
        assert _index_folder(checkpoint, folder, tmp_path / 'f' / 'x') == 0
        argv = ['index', '--ckpt', str(checkpoint), '--data', str(config)]
        assert main([*argv, '--out', str(tmp_path / 'd' / 'x')]) == 0
    finally:
        os.umask(previous)
    files = sorted((tmp_path / 'f').iterdir()) + sorted((tmp_path / 'd').iterdir())
    for end in ('.faiss', '.ids.json', '.labels.npy', 'x.json', '.archive.json'):
        assert any(p.name.endswith(end) for p in files), end
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
        p.name: oct(mode) for p in files
    }


def test_index_and_search_on_the_cpu(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _image_folder(tmp_path / 'images', 'a.png', 'b.png', 'c.png')
    out = tmp_path / 'idx' / 'x'
    assert _index_folder(checkpoint, folder, out, '--accelerator', 'cpu') == 0
    argv = ['search', '--index', str(out), '--ckpt', str(checkpoint), '-k', '1']
    assert main([*argv, 'a', '--accelerator', 'cpu']) == 0
    assert 'query: a' in capsys.readouterr().out


@pytest.mark.parametrize('accelerator', ['gpu', 'cuda'])
@pytest.mark.parametrize('command', ['index-folder', 'index-config', 'search'])
def test_unavailable_accelerator_is_refused(
    command: str,
    accelerator: str,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    folder = _image_folder(tmp_path / 'images', 'a.png', 'b.png')
    out = tmp_path / 'idx' / 'x'
    assert _index_folder(checkpoint, folder, out) == 0
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    other = tmp_path / 'other' / 'x'
    if command == 'index-folder':
        code = _index_folder(checkpoint, folder, other, '--accelerator', accelerator)
    elif command == 'index-config':
        argv = [
            'index',
            '--ckpt',
            str(checkpoint),
            '--data',
            str(_data_config(tmp_path)),
        ]
        code = main([*argv, '--out', str(other), '--accelerator', accelerator])
    else:
        argv = ['search', '--index', str(out), '--ckpt', str(checkpoint), 'a']
        code = main([*argv, '--accelerator', accelerator])
    assert code == 1
    name = command.split('-')[0]
    line = _error_line(capsys.readouterr().err, name)
    assert f"accelerator '{accelerator}' is not available" in line
    assert not other.parent.exists()


@pytest.mark.parametrize('command', ['index', 'search'])
def test_unknown_accelerator_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, '--ckpt', 'c', '--accelerator', 'abacus']
    argv += (
        ['--data', 'd', '--out', 'o'] if command == 'index' else ['--index', 'i', 'q']
    )
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "'abacus'" in err
