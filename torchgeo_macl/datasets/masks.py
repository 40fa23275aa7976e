"""Segmentation masks of the retrieval archives and the labels they give.

Decoding of index-coded and colour-coded masks into class ids, per-class pixel
counts, multi-hot labels from those counts, and the per-archive pixel-count cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from .._io import try_atomic_write
from .utils import PathLike

__all__ = (
    'check_min_pixel_fraction',
    'decode_index_mask',
    'decode_rgb_mask',
    'labels_from_pixel_counts',
    'load_or_compute_pixel_counts',
    'pixel_counts',
)

_PIXEL_COUNT_FORMAT = 1


def check_min_pixel_fraction(min_pixel_fraction: float) -> float:
    """Check the pixel fraction a class needs to count as a label.

    Args:
        min_pixel_fraction: Threshold in [0, 1]; 0 means any pixel.

    Returns:
        The threshold as a float.

    Raises:
        ValueError: If it is outside [0, 1].
    """
    if not 0.0 <= min_pixel_fraction <= 1.0:
        raise ValueError(
            f'min_pixel_fraction must be in [0, 1], got {min_pixel_fraction}.'
        )
    return float(min_pixel_fraction)


def decode_index_mask(
    array: NDArray[Any], path: PathLike, num_classes: int
) -> NDArray[np.int64]:
    """Convert an index-coded mask (values 1..C) into class ids 0..C-1.

    Args:
        array: Mask pixels [H, W] (palette indices or grey values).
        path: The mask file, used in error messages.
        num_classes: Number of classes C.

    Returns:
        int64 array [H, W] with class ids 0..C-1.

    Raises:
        ValueError: If a value lies outside 1..C (the message names file and value).
    """
    if array.ndim != 2:
        raise ValueError(
            f'Mask {os.fspath(path)!r} must have a single channel (palette or '
            f'greyscale index values 1..{num_classes}), got shape {array.shape}.'
        )
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 1 or high > num_classes:
            bad = low if low < 1 else high
            raise ValueError(
                f'Mask {os.fspath(path)!r} contains the value {bad}; expected class '
                f'values 1..{num_classes}.'
            )
    ids: NDArray[np.int64] = np.subtract(array, 1, dtype=np.int64)
    return ids


def decode_rgb_mask(
    array: NDArray[np.uint8], path: PathLike, colours: Sequence[tuple[int, int, int]]
) -> NDArray[np.int64]:
    """Convert an RGB colour-coded mask into class ids.

    Args:
        array: Mask pixels [H, W, 3] (or 4 channels; alpha is ignored).
        path: The mask file, used in error messages.
        colours: RGB colour of each class, in class order.

    Returns:
        int64 array [H, W] with class ids 0..C-1.

    Raises:
        ValueError: If a pixel has a colour that is not a class colour (the message
            names the file and the colour).
    """
    rgb = array[..., :3].astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int32)
    order = np.argsort(table)
    sorted_table = table[order]
    pos = np.clip(np.searchsorted(sorted_table, codes), 0, len(table) - 1)
    valid = sorted_table[pos] == codes
    if not valid.all():
        y, x = np.unravel_index(int(np.argmin(valid)), valid.shape)
        colour = tuple(int(v) for v in rgb[y, x])
        raise ValueError(
            f'Mask {os.fspath(path)!r} contains the colour {colour} at pixel '
            f'(row {y}, column {x}), which is not one of the class colours '
            f'{tuple(colours)}.'
        )
    return order[pos].astype(np.int64)


def pixel_counts(mask: NDArray[Any], num_classes: int) -> NDArray[np.int64]:
    """Count the pixels of every class in a mask of class ids.

    Args:
        mask: Class ids 0..C-1, any shape.
        num_classes: Number of classes C.

    Returns:
        int64 array [C].
    """
    flat = np.asarray(mask).reshape(-1)
    return np.bincount(flat, minlength=num_classes)[:num_classes].astype(np.int64)


def labels_from_pixel_counts(
    counts: NDArray[np.integer[Any]] | Tensor, min_pixel_fraction: float = 0.0
) -> NDArray[np.int64]:
    """Multi-hot labels from per-class pixel counts.

    Label c is present when its pixel fraction ``counts[c] / counts.sum()`` is at
    least ``min_pixel_fraction``; ``0.0`` means any pixel. A class with no pixel is
    never present.

    Args:
        counts: Pixel counts [..., C].
        min_pixel_fraction: Threshold in [0, 1].

    Returns:
        int64 multi-hot array [..., C].

    Raises:
        ValueError: If ``min_pixel_fraction`` is outside [0, 1].
    """
    check_min_pixel_fraction(min_pixel_fraction)
    array = np.asarray(counts, dtype=np.int64)
    present = array > 0
    if min_pixel_fraction > 0:
        total = np.maximum(array.sum(axis=-1, keepdims=True), 1)
        present &= array / total >= min_pixel_fraction
    return present.astype(np.int64)


def load_or_compute_pixel_counts(
    cache_path: PathLike,
    ids: Sequence[str],
    mask_paths: Sequence[str],
    load_mask: Callable[[str], NDArray[Any]],
    num_classes: int,
) -> NDArray[np.int64]:
    """Per-class pixel counts of every mask of an archive, cached in a ``.npz`` file.

    The cache stores the image ids and a fingerprint of the mask files (size and
    modification time); it is recomputed when either changes. Labels for any split,
    label source and ``min_pixel_fraction`` derive from these counts, so every mask is
    decoded once per archive.

    Args:
        cache_path: The ``.npz`` cache file.
        ids: Image ids, one per mask.
        mask_paths: Mask files.
        load_mask: Decodes a mask file into class ids 0..C-1 (validating it).
        num_classes: Number of classes C.

    Returns:
        int64 array [len(ids), C].

    Raises:
        FileNotFoundError: If a mask file is missing (the message names it).
    """
    cache_path = os.fspath(cache_path)
    digest = hashlib.sha256()
    for mask_id, path in zip(ids, mask_paths, strict=True):
        try:
            st = os.stat(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f'Mask {path!r} of image {mask_id!r} does not exist.'
            ) from err
        digest.update(f'{mask_id}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    fingerprint = digest.hexdigest()

    if os.path.isfile(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as data:
                if (
                    int(data['format']) == _PIXEL_COUNT_FORMAT
                    and str(data['fingerprint']) == fingerprint
                    and data['counts'].shape == (len(ids), num_classes)
                ):
                    return np.asarray(data['counts'], dtype=np.int64)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable or stale cache: recompute and overwrite

    counts = np.zeros((len(ids), num_classes), dtype=np.int64)
    for row, path in enumerate(mask_paths):
        counts[row] = pixel_counts(load_mask(path), num_classes)

    buffer = _npz_bytes(
        format=np.array(_PIXEL_COUNT_FORMAT),
        fingerprint=np.array(fingerprint),
        counts=counts,
    )
    try_atomic_write(cache_path, buffer, 'pixel-count cache')
    return counts


def _npz_bytes(**arrays: NDArray[Any]) -> bytes:
    """Serialise arrays into ``.npz`` bytes (no pickling).

    Args:
        **arrays: Arrays to store by name.

    Returns:
        The file content.
    """
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()
