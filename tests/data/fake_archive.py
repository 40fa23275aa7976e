"""Helpers of the fake-data scripts ``tests/data/<name>/data.py``.

Each script puts this folder on ``sys.path`` and imports what it needs, so every
script still runs on its own: ``python tests/data/<name>/data.py``. This module puts
the repository root on ``sys.path`` too, so the scripts read the class lists and
colours of the checkout's ``torchgeo_macl``.
"""

import csv
import hashlib
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence

import numpy as np

#: The repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from torchgeo_macl.datasets import DLRSD, WHDLD

#: The 17 classes of DLRSD and ML-AID, in column order.
CLASSES_17 = DLRSD.classes
#: The class colours of the WHDLD masks.
WHDLD_COLOURS = WHDLD.colormap

#: A rectangle of a mask: (class, row0, row1, col0, col1).
Rect = tuple[int, int, int, int, int]


def header(first: str, joiner: str) -> list[str]:
    """A csv header: ``first``, then the 17 class names with spaces replaced."""
    return [first, *(name.replace(' ', joiner) for name in CLASSES_17)]


def fresh_folder(root: str, name: str) -> str:
    """Delete and return the archive folder ``root/name``."""
    folder = os.path.join(root, name)
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def rect_mask(
    shape: tuple[int, int], background: int, rects: Sequence[Rect], offset: int = 0
) -> np.ndarray:
    """A uint8 mask of ``background`` with rectangles of other classes on it."""
    mask = np.full(shape, background + offset, dtype=np.uint8)
    for cls, r0, r1, c0, c1 in rects:
        mask[r0:r1, c0:c1] = cls + offset
    return mask


def write_csv(path: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a label table with ``\\n`` line ends."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(head)
        writer.writerows(rows)


def write_zip(root: str, folder: str, archive: str) -> None:
    """Zip ``root/folder`` deterministically (sorted members, fixed timestamps)."""
    with zipfile.ZipFile(archive, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        paths = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames.sort()
            paths.extend(os.path.join(dirpath, f) for f in sorted(filenames))
        for path in sorted(paths):
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, 'rb') as f:
                zf.writestr(info, f.read())


def finish_archive(root: str, folder: str) -> str:
    """Write ``root/<folder>.zip``, print its SHA-256 and return it."""
    archive = os.path.join(root, f'{folder}.zip')
    write_zip(root, folder, archive)
    with open(archive, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f'{folder}.zip sha256: {digest}')
    return digest
