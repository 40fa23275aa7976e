import subprocess
import sys
import warnings

import pytest

from torchgeo_macl import _compat


def test_version_parsing() -> None:
    assert _compat._parse_version('0.10.1') == (0, 10, 1)
    assert _compat._parse_version('0.8.1.post1') == (0, 8, 1)
    assert _compat._parse_version('1.0') == (1, 0, 0)
    assert _compat._parse_version('0.11.0rc1') == (0, 11, 0)


def test_base_task_matches_installed_torchgeo() -> None:
    if _compat.TORCHGEO_VERSION >= (0, 10, 0):
        from torchgeo.tasks import BaseTask
    else:
        from torchgeo.trainers import BaseTask
    assert _compat.BaseTask is BaseTask


def test_subclassing_base_task_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')

        class _Task(_compat.BaseTask):
            def configure_models(self) -> None:
                pass

    assert issubclass(_Task, _compat.BaseTask)


def test_import_with_deprecation_warnings_as_errors() -> None:
    code = (
        'import warnings\n'
        'from torchgeo_macl._compat import BaseTask\n'
        "warnings.simplefilter('error', DeprecationWarning)\n"
        'class T(BaseTask):\n'
        '    def configure_models(self): pass\n'
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, '-W', 'error::DeprecationWarning', '-c', code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_check_sha256(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / 'f.bin'  # type: ignore[operator]
    path.write_bytes(b'abc')
    digest = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    assert _compat.check_sha256(path, digest)
    assert _compat.check_sha256(path, digest.upper())
    assert _compat.check_sha256(path, None)
    assert not _compat.check_sha256(path, '0' * 64)
    assert not _compat.check_sha256(tmp_path / 'missing', None)  # type: ignore[operator]


def test_download_url_checks_sha256(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_download(url: str, root: str, filename: str) -> None:
        with open(f'{root}/{filename}', 'wb') as f:
            f.write(b'abc')

    monkeypatch.setattr(_compat, '_download_url', fake_download)
    good = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    path = _compat.download_url('https://example.invalid/a.zip', tmp_path, sha256=good)
    assert path.endswith('a.zip')
    with pytest.raises(RuntimeError, match='does not match its SHA-256'):
        _compat.download_url('https://example.invalid/b.zip', tmp_path, sha256='0' * 64)
