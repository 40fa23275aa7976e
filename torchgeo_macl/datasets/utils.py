"""Helpers that several retrieval datasets share: paths and multi-label tables.

Names that moved to :mod:`~torchgeo_macl.datasets.base`,
:mod:`~torchgeo_macl.datasets.masks`, :mod:`~torchgeo_macl.datasets.splits` and
:mod:`torchgeo_macl._io` stay importable from here for one release, with a
:class:`DeprecationWarning`.
"""

from __future__ import annotations

import csv
import importlib
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ('PathLike', 'lookup_labels', 'normalise_class_name', 'read_multilabel_csv')

#: A filesystem path as accepted by the datasets.
PathLike = str | os.PathLike[str]

#: Names importable from here for one more release, and the module that owns each.
_MOVED: dict[str, str] = {
    'RetrievalDataset': 'torchgeo_macl.datasets.base',
    'load_rgb_image': 'torchgeo_macl.datasets.base',
    'manual_download_error': 'torchgeo_macl.datasets.base',
    'plot_multilabel_sample': 'torchgeo_macl.datasets.base',
    'decode_index_mask': 'torchgeo_macl.datasets.masks',
    'decode_rgb_mask': 'torchgeo_macl.datasets.masks',
    'labels_from_pixel_counts': 'torchgeo_macl.datasets.masks',
    'load_or_compute_pixel_counts': 'torchgeo_macl.datasets.masks',
    'pixel_counts': 'torchgeo_macl.datasets.masks',
    'check_split_fractions': 'torchgeo_macl.datasets.splits',
    'iterative_stratification': 'torchgeo_macl.datasets.splits',
    'load_or_create_split': 'torchgeo_macl.datasets.splits',
    'split_file_name': 'torchgeo_macl.datasets.splits',
    'atomic_write_bytes': 'torchgeo_macl._io',
    'verify_zip': 'torchgeo_macl._io',
}


def __getattr__(name: str) -> object:
    """Resolve a name that moved to another module, with a deprecation warning.

    Args:
        name: The attribute requested.

    Returns:
        The object from the module that owns it now.

    Raises:
        AttributeError: If ``name`` is not a moved name.
    """
    owner = _MOVED.get(name)
    if owner is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    warnings.warn(
        f'{__name__}.{name} is deprecated and will be removed in the next release; '
        f'import it from {owner}.',
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(owner), name)


def normalise_class_name(name: str) -> str:
    """Normalise a class name for comparison (``'Bare-Soil'`` == ``'bare soil'``).

    Args:
        name: Class name as written in a header.

    Returns:
        The name in lower case without spaces, dashes and underscores.
    """
    return ''.join(ch for ch in name.lower() if ch.isalnum())


def read_multilabel_csv(
    path: PathLike, classes: Sequence[str]
) -> dict[str, NDArray[np.int64]]:
    """Read a multi-label table: first column image name, then one 0/1 column a class.

    Args:
        path: The csv file.
        classes: Expected class names, in column order (compared after
            :func:`normalise_class_name`).

    Returns:
        Mapping from image stem (any file extension removed) to an int64 [C] row.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the header does not list the classes, a row has the wrong
            number of fields, a value is not 0/1, or an image appears twice (the
            message names the file and the line).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Label file {path!r} does not exist.')
    width = len(classes) + 1
    rows: dict[str, NDArray[np.int64]] = {}
    with open(path, newline='', encoding='utf-8-sig') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f'Label file {path!r} is empty.')
        if len(header) != width:
            raise ValueError(
                f'Label file {path!r}: the header has {len(header)} columns, '
                f'expected {width} (image name + {len(classes)} classes).'
            )
        found = [normalise_class_name(h) for h in header[1:]]
        expected = [normalise_class_name(c) for c in classes]
        if found != expected:
            raise ValueError(
                f'Label file {path!r}: header classes {header[1:]} do not match '
                f'the expected classes {list(classes)}.'
            )
        for line, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                raise ValueError(
                    f'Label file {path!r}, line {line}: {len(row)} fields, '
                    f'expected {width}.'
                )
            name = os.path.splitext(row[0].strip())[0]
            values = [v.strip() for v in row[1:]]
            if any(v not in ('0', '1') for v in values):
                raise ValueError(
                    f'Label file {path!r}, line {line}: labels must be 0 or 1, '
                    f'got {values}.'
                )
            if name in rows:
                raise ValueError(
                    f'Label file {path!r}, line {line}: image {name!r} is listed twice.'
                )
            rows[name] = np.array([int(v) for v in values], dtype=np.int64)
    return rows


def lookup_labels(
    table: Mapping[str, NDArray[np.int64]],
    stems: Sequence[str],
    csv_path: PathLike,
    num_classes: int,
    names: Sequence[str] | None = None,
) -> NDArray[np.int64]:
    """Look up the label row of every image in a table from :func:`read_multilabel_csv`.

    Args:
        table: Label rows by image stem.
        stems: Stem of every image, in sample order.
        csv_path: The label file, used in error messages.
        num_classes: Number of classes C.
        names: How each image is named in error messages (default: its stem).

    Returns:
        int64 [len(stems), C].

    Raises:
        ValueError: If an image has no row (the message names the file and the
            image).
    """
    shown = stems if names is None else names
    rows = []
    for stem, name in zip(stems, shown, strict=True):
        if stem not in table:
            raise ValueError(
                f'Label file {os.fspath(csv_path)!r} has no row for image {name!r}.'
            )
        rows.append(table[stem])
    return np.stack(rows) if rows else np.zeros((0, num_classes), np.int64)
