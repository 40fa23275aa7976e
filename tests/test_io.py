import os
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from torchgeo_macl import _io
from torchgeo_macl._io import (
    atomic_save_figure,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    sync_directory,
    try_atomic_write,
    verify_zip,
    write_new_file,
)

ABC_SHA256 = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'


class TestFiles:
    def test_atomic_write(self, tmp_path: Path) -> None:
        path = tmp_path / 'a' / 'b.txt'
        atomic_write_bytes(path, b'one')
        atomic_write_bytes(path, b'two')
        assert path.read_bytes() == b'two'
        assert os.listdir(path.parent) == ['b.txt']

    def test_atomic_write_text_and_fsync(self, tmp_path: Path) -> None:
        path = tmp_path / 'c.txt'
        atomic_write_text(path, 'é\nline\n', fsync=True)
        assert path.read_bytes() == 'é\nline\n'.encode()
        assert os.listdir(tmp_path) == ['c.txt']

    def test_atomic_write_keeps_old_file_on_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / 'd.txt'
        path.write_bytes(b'old')

        def fail(src: str, dst: str) -> None:
            raise OSError('disk full')

        monkeypatch.setattr(os, 'replace', fail)
        with pytest.raises(OSError, match='disk full'):
            atomic_write_bytes(path, b'new')
        assert path.read_bytes() == b'old'
        assert os.listdir(tmp_path) == ['d.txt']

    def test_try_atomic_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert try_atomic_write(tmp_path / 'e.bin', b'x', 'cache')
        assert (tmp_path / 'e.bin').read_bytes() == b'x'

        def fail(path: object, data: bytes) -> None:
            raise PermissionError('read-only')

        monkeypatch.setattr(_io, 'atomic_write_bytes', fail)
        with pytest.warns(UserWarning, match="Could not write the cache '.*f.bin'"):
            assert not try_atomic_write(tmp_path / 'f.bin', b'x', 'cache')

    def test_write_new_file(self, tmp_path: Path) -> None:
        path = tmp_path / 'g.bin'
        write_new_file(path, b'abc', fsync=True)
        assert path.read_bytes() == b'abc'
        with pytest.raises(FileExistsError):
            write_new_file(path, b'again')
        sync_directory(tmp_path)
        sync_directory(tmp_path / 'missing')  # ignored

    def test_atomic_save_figure(self, tmp_path: Path) -> None:
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        path = tmp_path / 'fig.png'
        atomic_save_figure(fig, path, dpi=20)
        assert path.read_bytes().startswith(b'\x89PNG')
        assert not plt.fignum_exists(fig.number)
        assert os.listdir(tmp_path) == ['fig.png']


class TestChecksums:
    def test_sha256_file(self, tmp_path: Path) -> None:
        path = tmp_path / 'f.bin'
        path.write_bytes(b'abc')
        assert sha256_file(path) == ABC_SHA256
        assert sha256_file(path, fsync=True) == ABC_SHA256

    def test_verify_zip(self, tmp_path: Path) -> None:
        good = tmp_path / 'good.zip'
        with zipfile.ZipFile(good, 'w', compression=zipfile.ZIP_STORED) as zf:
            zf.writestr('a.txt', b'hello world' * 10)
        assert verify_zip(good)
        bad = tmp_path / 'bad.zip'
        data = bytearray(good.read_bytes())
        data[data.index(b'hello')] ^= 1
        bad.write_bytes(bytes(data))
        assert not verify_zip(bad)
        (tmp_path / 'text.zip').write_text('bad')
        assert not verify_zip(tmp_path / 'text.zip')
        assert not verify_zip(tmp_path / 'missing.zip')
