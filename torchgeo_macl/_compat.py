"""The one place that knows about differences between TorchGeo versions.

Supported: TorchGeo 0.8.1 (``torchgeo.trainers``, torchvision's md5-only download
helpers) up to the newest 0.10.x (``torchgeo.tasks``; ``torchgeo.trainers`` is a
deprecated alias that warns when subclassed; download helpers take any hashlib
checksum). Everything else in this package imports TorchGeo names from here.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from typing import TYPE_CHECKING

from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset
from torchgeo.datasets.utils import download_url as _download_url
from torchgeo.datasets.utils import extract_archive as _extract_archive

from ._io import sha256_file


def _parse_version(text: str) -> tuple[int, int, int]:
    parts: list[int] = []
    for piece in text.split('.')[:3]:
        match = re.match(r'\d+', piece)
        parts.append(int(match.group()) if match else 0)
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


#: Installed TorchGeo version as ``(major, minor, patch)``.
TORCHGEO_VERSION = _parse_version(importlib.metadata.version('torchgeo'))

if TYPE_CHECKING or TORCHGEO_VERSION >= (0, 10, 0):
    from torchgeo.tasks import BaseTask
    from torchgeo.tasks import SimCLR as SimCLRTask
    from torchgeo.tasks.utils import extract_backbone, load_state_dict
else:  # TorchGeo < 0.10: torchgeo.trainers, SimCLRTask
    from torchgeo.trainers import BaseTask, SimCLRTask
    from torchgeo.trainers.utils import extract_backbone, load_state_dict
from torchgeo.models import get_weight
from torchvision.models._api import WeightsEnum

__all__ = (
    'TORCHGEO_VERSION',
    'BaseTask',
    'DatasetNotFoundError',
    'NonGeoDataModule',
    'NonGeoDataset',
    'SimCLRTask',
    'WeightsEnum',
    'check_sha256',
    'download_url',
    'extract_archive',
    'extract_backbone',
    'get_weight',
    'load_state_dict',
)


def check_sha256(path: str | os.PathLike[str], sha256: str | None) -> bool:
    """Check a file against a SHA-256 checksum.

    TorchGeo 0.8.1's ``check_integrity`` only knows md5, 0.10's knows any hashlib
    algorithm; this works the same on both.

    Args:
        path: File to check.
        sha256: Expected hex digest, or None/empty to only check existence.

    Returns:
        True if the file exists and (when given) the checksum matches.
    """
    if not os.path.isfile(path):
        return False
    if not sha256:
        return True
    return sha256_file(path) == sha256.lower()


def download_url(
    url: str,
    root: str | os.PathLike[str],
    filename: str | None = None,
    sha256: str | None = None,
) -> str:
    """Download a file and optionally verify its SHA-256 checksum.

    Args:
        url: Address to download.
        root: Directory to save the file in.
        filename: Name to save it as (default: the last part of the URL).
        sha256: Expected SHA-256, checked after the download when given.

    Returns:
        Path of the downloaded file.

    Raises:
        RuntimeError: If the downloaded file does not match ``sha256``.
    """
    filename = filename or os.path.basename(url)
    path = os.path.join(os.fspath(root), filename)
    _download_url(url, os.fspath(root), filename)
    if sha256 and not check_sha256(path, sha256):
        raise RuntimeError(
            f"Downloaded file '{path}' does not match its SHA-256 checksum "
            f'{sha256}; delete it and download again.'
        )
    return path


def extract_archive(
    src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None
) -> None:
    """Extract a zip or tar archive.

    Args:
        src: Archive path.
        dst: Directory to extract into (default: the archive's directory).
    """
    _extract_archive(os.fspath(src), None if dst is None else os.fspath(dst))
