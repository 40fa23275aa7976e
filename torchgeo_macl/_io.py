"""File writes that readers never see half done, SHA-256 checksums and zip checks.

Every file the package writes (split files, caches, index files, reports, figures)
goes through :func:`atomic_write_bytes` or one of its wrappers: the content is
written to a temporary file in the destination folder, which then replaces the
destination in one ``os.replace``. Files get the permissions that ``open`` gives
under the process umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
import warnings
import zipfile
from typing import Any

__all__ = (
    'atomic_save_figure',
    'atomic_write_bytes',
    'atomic_write_text',
    'sha256_file',
    'sync_directory',
    'try_atomic_write',
    'verify_zip',
    'write_new_file',
)

#: Bytes read at a time when hashing a file.
_BLOCK = 1 << 20


def write_new_file(
    path: str | os.PathLike[str], data: bytes, fsync: bool = False
) -> None:
    """Create a file that must not exist yet and write ``data`` to it.

    Args:
        path: The file to create.
        data: Bytes to write.
        fsync: Also flush the file to disk before returning.

    Raises:
        FileExistsError: If ``path`` exists.
    """
    with open(path, 'xb') as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush the entries of a directory to disk, where the platform allows it.

    Args:
        directory: The directory.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, fsync: bool = False
) -> None:
    """Write a file atomically (temporary file in the same folder + ``os.replace``).

    Readers never see a partly written file, and concurrent writers of the same
    content (for example several distributed ranks) cannot corrupt it. The
    temporary file is named ``.<name>.<pid>.<random>.tmp``.

    Args:
        path: Destination file; its parent folders are created when missing.
        data: Bytes to write.
        fsync: Also flush the content to disk before the replace.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(
        folder, f'.{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp'
    )
    try:
        write_new_file(tmp, data, fsync=fsync)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(
    path: str | os.PathLike[str], text: str, fsync: bool = False
) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its parent folders are created when missing.
        text: Content, written as is (no newline translation).
        fsync: Also flush the content to disk before the replace.
    """
    atomic_write_bytes(path, text.encode('utf-8'), fsync=fsync)


def try_atomic_write(path: str | os.PathLike[str], data: bytes, what: str) -> bool:
    """Write a cache-like file atomically; warn instead of failing when not writable.

    Args:
        path: Destination file.
        data: Bytes to write.
        what: Description of the file for the warning.

    Returns:
        Whether the file was written.
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        warnings.warn(
            f'Could not write the {what} {os.fspath(path)!r} ({err}); it is kept in '
            'memory only and will be recomputed next time.',
            stacklevel=3,
        )
        return False
    return True


def atomic_save_figure(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Save a matplotlib figure as PNG atomically and close it.

    Args:
        fig: The matplotlib Figure.
        path: Destination file.
        **kwargs: Passed on to ``Figure.savefig`` (e.g. ``dpi``).
    """
    import matplotlib.pyplot as plt

    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format='png', **kwargs)
        atomic_write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)


def sha256_file(path: str | os.PathLike[str], fsync: bool = False) -> str:
    """SHA-256 of a file's content.

    Args:
        path: The file.
        fsync: Also flush the file to disk (for a file just written).

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_BLOCK), b''):
            digest.update(block)
        if fsync:
            os.fsync(f.fileno())
    return digest.hexdigest()


def verify_zip(path: str | os.PathLike[str]) -> bool:
    """Check that a zip archive is readable and every member matches its CRC-32.

    The integrity check of archives without a published checksum.

    Args:
        path: Archive to check.

    Returns:
        True if the file is a zip archive whose members all pass their CRC check.
    """
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
