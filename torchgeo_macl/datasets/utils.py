"""Shared helpers of the multi-label retrieval datasets.

Label derivation from segmentation masks, seeded multi-label-stratified splits stored
in split files, the per-archive pixel-count cache, mask decoding, atomic writes and
plotting. Everything here is independent of the TorchGeo version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import textwrap
import uuid
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from .._compat import DatasetNotFoundError, NonGeoDataset, extract_archive

__all__ = (
    'PathLike',
    'RetrievalDataset',
    'atomic_write_bytes',
    'check_split_fractions',
    'decode_index_mask',
    'decode_rgb_mask',
    'iterative_stratification',
    'labels_from_pixel_counts',
    'load_or_compute_pixel_counts',
    'load_or_create_split',
    'load_rgb_image',
    'manual_download_error',
    'normalise_class_name',
    'pixel_counts',
    'plot_multilabel_sample',
    'read_multilabel_csv',
    'split_file_name',
    'verify_zip',
)

#: A filesystem path as accepted by the datasets.
PathLike = str | os.PathLike[str]

_SPLIT_FORMAT = 1
_PIXEL_COUNT_FORMAT = 1


# --------------------------------------------------------------------------- files


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write a file atomically (temporary file in the same folder + ``os.replace``).

    Readers never see a partly written file, and concurrent writers of the same
    content (for example several distributed ranks) cannot corrupt it.

    Args:
        path: Destination file; its parent folders are created when missing.
        data: Bytes to write.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(
        folder, f'.{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp'
    )
    # os.open honours the umask (unlike mkstemp's 0600), so the file gets the
    # permissions of any other file the user writes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _try_atomic_write(path: str, data: bytes, what: str) -> None:
    """Write a cache-like file atomically; warn instead of failing when not writable.

    Args:
        path: Destination file.
        data: Bytes to write.
        what: Description of the file for the warning.
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        warnings.warn(
            f'Could not write the {what} {path!r} ({err}); it is kept in memory '
            'only and will be recomputed next time.',
            stacklevel=3,
        )


def verify_zip(path: PathLike) -> bool:
    """Check that a zip archive is readable and every member matches its CRC-32.

    Used as the integrity check of archives without a published checksum.

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


def find_or_extract(
    root: PathLike, directory: str, filename: str, checksum: bool
) -> bool:
    """Find a manually downloaded dataset, extracting its zip archive if needed.

    Args:
        root: Root directory of the dataset.
        directory: Folder the archive extracts to, under ``root``.
        filename: Name of the zip archive, under ``root``.
        checksum: Check the CRC-32 of every archive member before extracting.

    Returns:
        True if the extracted folder exists (now), False if neither it nor the
        archive was found.

    Raises:
        RuntimeError: If the archive is corrupted.
    """
    if os.path.isdir(os.path.join(root, directory)):
        return True
    archive = os.path.join(root, filename)
    if not os.path.isfile(archive):
        return False
    if checksum and not verify_zip(archive):
        raise RuntimeError('Dataset found, but corrupted.')
    extract_archive(archive)
    return True


def manual_download_error(
    dataset: object, name: str, source: str, layout: str
) -> DatasetNotFoundError:
    """Build the error of a dataset that has to be downloaded by hand.

    Args:
        dataset: The dataset instance (must have a ``root`` attribute).
        name: Dataset name used in the message.
        source: Where the archive can be obtained.
        layout: The folder layout expected under ``root``.

    Returns:
        A :class:`~torchgeo.datasets.DatasetNotFoundError` (raise it).
    """
    root = getattr(dataset, 'root', None)
    msg = (
        f'Dataset not found in `root={root!r}` and {name} cannot be automatically '
        f'downloaded (it has no stable download URL). Get it from {source} and '
        f'put it under root as:\n{layout}'
    )
    err = DatasetNotFoundError(dataset)  # type: ignore[arg-type]
    err.args = (msg,)
    return err


# -------------------------------------------------------------------------- images


def load_rgb_image(path: PathLike) -> Tensor:
    """Decode an image file into a float tensor.

    Args:
        path: Image file (any format Pillow reads).

    Returns:
        float32 tensor [3, H, W] with values in 0..255 (a channels-first view of
        an HWC buffer, as TorchGeo's image datasets return).

    Raises:
        OSError: If the file cannot be opened or decoded (the message names it).
    """
    try:
        with Image.open(path) as img:
            rgb = img if img.mode == 'RGB' else img.convert('RGB')
            array = np.asarray(rgb, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as err:
        raise OSError(f'Could not decode image {os.fspath(path)!r}: {err}') from err
    # A channels-first view of the decoded HWC buffer (no extra copy).
    return torch.from_numpy(array).permute(2, 0, 1)


# --------------------------------------------------------------------------- masks


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
    if not 0.0 <= min_pixel_fraction <= 1.0:
        raise ValueError(
            f'min_pixel_fraction must be in [0, 1], got {min_pixel_fraction}.'
        )
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
    _try_atomic_write(cache_path, buffer, 'pixel-count cache')
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


# ---------------------------------------------------------------------- csv labels


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


# -------------------------------------------------------------------------- splits


def iterative_stratification(
    labels: NDArray[Any], fractions: Sequence[float], seed: int = 0
) -> NDArray[np.int64]:
    """Assign samples to folds by iterative multi-label stratification.

    The greedy algorithm of Sechidis, Tsoumakas and Vlahavas (ECML PKDD 2011): take
    the label with the fewest unassigned samples, give each of its samples to the
    fold that still wants most of that label (ties: the fold that wants most samples,
    then at random), repeat. Rare labels are spread first, so a label with a single
    sample lands in the largest fold. Samples without labels fill the folds up to
    their sizes. Deterministic for a given seed and sample order.

    Args:
        labels: Multi-hot labels [N, C].
        fractions: Positive fold fractions summing to 1.
        seed: Seed for tie-breaking.

    Returns:
        int64 array [N] with the fold of every sample.

    Raises:
        ValueError: If the fractions are not positive or do not sum to 1.
    """
    y = np.asarray(labels).astype(bool)
    if y.ndim != 2:
        raise ValueError(f'labels must be [N, C], got shape {y.shape}.')
    ratio = np.asarray(fractions, dtype=np.float64)
    if ratio.ndim != 1 or ratio.size == 0 or (ratio <= 0).any():
        raise ValueError(f'Split fractions must be positive, got {list(fractions)}.')
    if abs(ratio.sum() - 1.0) > 1e-6:
        raise ValueError(f'Split fractions must sum to 1, got {list(fractions)}.')
    rng = np.random.default_rng(seed)
    num = y.shape[0]
    wanted_total = ratio * num
    wanted = ratio[:, None] * y.sum(axis=0)[None, :]
    fold = np.full(num, -1, dtype=np.int64)
    unassigned = np.ones(num, dtype=bool)

    def choose(scores: NDArray[np.float64], totals: NDArray[np.float64]) -> int:
        best = np.flatnonzero(scores == np.max(scores))
        if best.size > 1:
            sub = totals[best]
            best = best[sub == np.max(sub)]
        return int(best[0] if best.size == 1 else rng.choice(best))

    while True:
        remaining = y[unassigned].sum(axis=0)
        if not remaining.any():
            break
        candidates = np.where(remaining > 0, remaining, np.iinfo(np.int64).max)
        rarest = np.flatnonzero(candidates == candidates.min())
        label = int(rarest[0] if rarest.size == 1 else rng.choice(rarest))
        members = np.flatnonzero(unassigned & y[:, label])
        for i in rng.permutation(members):
            f = choose(wanted[:, label], wanted_total)
            fold[i] = f
            unassigned[i] = False
            wanted[f] -= y[i]
            wanted_total[f] -= 1
    for i in rng.permutation(np.flatnonzero(unassigned)):
        f = choose(wanted_total, wanted_total)
        fold[i] = f
        wanted_total[f] -= 1

    # On small datasets a small fold can stay empty (the larger folds always want
    # more of every label): give it one sample from the fold with the largest
    # surplus, choosing a sample whose labels all stay present in that fold.
    for small in np.flatnonzero(ratio * num >= 1):
        if (fold == small).any():
            continue
        sizes = np.bincount(fold, minlength=ratio.size)
        donor = int(np.argmax(sizes - ratio * num))
        members = np.flatnonzero(fold == donor)
        label_counts = y[members].sum(axis=0)
        # Smallest remaining count of the sample's labels after moving it.
        spare = np.where(y[members], label_counts[None, :] - 1, num).min(axis=1)
        best = members[spare == spare.max()]
        fold[int(rng.choice(best))] = small
    return fold


def check_split_fractions(
    fractions: Sequence[float], names: Sequence[str] = ('train', 'val', 'test')
) -> dict[str, float]:
    """Validate split fractions and name them.

    Args:
        fractions: One positive fraction per split, summing to 1.
        names: Split names, in the order of ``fractions``.

    Returns:
        Mapping from split name to fraction.

    Raises:
        ValueError: If the number of fractions is wrong, one is not positive, or
            they do not sum to 1.
    """
    values = [float(v) for v in fractions]
    if len(values) != len(names):
        raise ValueError(
            f'Expected {len(names)} split fractions for {tuple(names)}, got {values}.'
        )
    if any(not v > 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f'Split fractions must be positive and sum to 1, got {values}.'
        )
    return dict(zip(names, values))


def split_file_name(prefix: str, seed: int, fractions: Mapping[str, float]) -> str:
    """Name of a split file, e.g. ``dlrsd_seed0_70-10-20.json``.

    Args:
        prefix: Dataset prefix.
        seed: Split seed.
        fractions: Fraction of every split, in split order.

    Returns:
        The file name.
    """
    percents = '-'.join(f'{round(v * 100, 6):g}' for v in fractions.values())
    return f'{prefix}_seed{seed}_{percents}.json'


def load_or_create_split(
    path: PathLike,
    ids: Sequence[str],
    stratify_labels: Callable[[], NDArray[Any]],
    fractions: Mapping[str, float],
    seed: int,
    dataset: str,
) -> dict[str, list[str]]:
    """Read a split file, or create it with :func:`iterative_stratification`.

    The file is JSON: ``{"format", "dataset", "seed", "fractions", "splits":
    {name: [ids]}}``, written atomically, and reused by every later run so all runs
    on a machine see the same split. A file that is read is validated: it must name
    exactly the archive's images, each in one split.

    Args:
        path: The split file.
        ids: Every image id of the archive part being split, sorted.
        stratify_labels: Returns the multi-hot labels [len(ids), C] to stratify on;
            called only when the file has to be created.
        fractions: Fraction of every split, e.g. ``{'train': 0.7, 'val': 0.1,
            'test': 0.2}``.
        seed: Split seed.
        dataset: Dataset name stored in the file and used in messages.

    Returns:
        Mapping from split name to its sorted ids.

    Raises:
        ValueError: If an existing split file is unreadable, names images that do
            not exist, leaves images out, or repeats an image (the message names it).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return _read_split_file(path, ids, list(fractions))

    folds = iterative_stratification(stratify_labels(), list(fractions.values()), seed)
    id_array = np.asarray(ids, dtype=object)
    splits = {
        name: sorted(str(v) for v in id_array[folds == k])
        for k, name in enumerate(fractions)
    }
    content = {
        'format': _SPLIT_FORMAT,
        'dataset': dataset,
        'seed': seed,
        'fractions': dict(fractions),
        'splits': splits,
    }
    data = json.dumps(content, indent=1, sort_keys=False).encode() + b'\n'
    _try_atomic_write(path, data, 'split file')
    return splits


def _read_split_file(
    path: str, ids: Sequence[str], names: Sequence[str]
) -> dict[str, list[str]]:
    """Read and validate a split file.

    Args:
        path: The split file.
        ids: Every image id the file must cover.
        names: Split names the file must contain.

    Returns:
        Mapping from split name to its ids.

    Raises:
        ValueError: If the file is invalid (the message names it).
    """
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
        splits = content['splits']
        result = {name: [str(v) for v in splits[name]] for name in names}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f'Split file {path!r} is not a valid split file ({err!r}); delete it to '
            'create it again.'
        ) from err
    known = set(ids)
    seen: set[str] = set()
    for name, members in result.items():
        missing = [m for m in members if m not in known]
        if missing:
            raise ValueError(
                f'Split file {path!r} names {len(missing)} image(s) of split '
                f'{name!r} that do not exist in the dataset, e.g. {missing[0]!r}; '
                'delete it to create it again for this copy of the dataset.'
            )
        repeated = seen.intersection(members)
        if repeated or len(set(members)) != len(members):
            example = next(iter(repeated)) if repeated else members[0]
            raise ValueError(
                f'Split file {path!r} lists image {example!r} more than once.'
            )
        seen.update(members)
    uncovered = known - seen
    if uncovered:
        raise ValueError(
            f'Split file {path!r} does not assign {len(uncovered)} image(s) of the '
            f'dataset to a split, e.g. {min(uncovered)!r}; delete it to create '
            'it again.'
        )
    return result


# ------------------------------------------------------------------------ plotting


def _display_image(image: Tensor) -> NDArray[np.float64]:
    """Turn an image tensor [3, H, W] into an HWC array in [0, 1] for imshow.

    Args:
        image: Image in 0..255, 0..1 or normalised units.

    Returns:
        HWC float array in [0, 1].
    """
    array = image.detach().cpu().double().numpy().transpose(1, 2, 0)
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high > 1:
        array = array / 255.0
    elif low < 0:
        array = (array - low) / max(high - low, 1e-12)
    clipped: NDArray[np.float64] = np.clip(array, 0.0, 1.0)
    return clipped


def _label_names(label: Tensor, classes: Sequence[str]) -> list[str]:
    """Names of the classes set in a multi-hot vector.

    Args:
        label: Multi-hot [C].
        classes: Class names.

    Returns:
        The names of the present classes.
    """
    flags = label.detach().cpu().reshape(-1) > 0
    return [classes[int(i)] for i in np.flatnonzero(flags.numpy())]


def plot_multilabel_sample(
    sample: Mapping[str, Tensor],
    classes: Sequence[str],
    colormap: Sequence[tuple[int, int, int]] | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Plot an image, its mask in class colours, and its label names.

    Args:
        sample: A sample with ``'image'`` [3, H, W], ``'label'`` multi-hot [C], and
            optionally ``'mask'`` [H, W] and ``'prediction'`` (multi-hot [C], or a
            predicted mask [H, W]).
        classes: Class names.
        colormap: RGB colour of every class, used for masks.
        show_titles: Whether to show titles (label names) above the panels.
        suptitle: Optional title of the figure.

    Returns:
        The matplotlib Figure.
    """
    panels: list[tuple[str, NDArray[np.float64]]] = [
        ('Image', _display_image(sample['image']))
    ]
    colours = np.asarray(colormap if colormap is not None else [], dtype=np.float64)
    present: set[int] = set()

    def colour_mask(mask: Tensor) -> NDArray[np.float64]:
        ids = mask.detach().cpu().long().numpy()
        present.update(int(v) for v in np.unique(ids))
        if colours.size:
            palette = colours / 255.0
            return np.asarray(palette[np.clip(ids, 0, len(palette) - 1)])
        return np.asarray(plt.get_cmap('tab20')(ids % 20)[..., :3])

    if 'mask' in sample:
        panels.append(('Mask', colour_mask(sample['mask'])))
    prediction = sample.get('prediction')
    predicted_names: list[str] | None = None
    if prediction is not None:
        if prediction.dim() >= 2:
            panels.append(('Predicted mask', colour_mask(prediction)))
        else:
            predicted_names = _label_names(prediction, classes)

    fig, axes = plt.subplots(
        ncols=len(panels), figsize=(4 * len(panels), 4.6), squeeze=False
    )
    for ax, (title, array) in zip(axes[0], panels):
        ax.imshow(array, interpolation='nearest')
        ax.axis('off')
        if show_titles:
            ax.set_title(title)

    if show_titles:
        names = _label_names(sample['label'], classes)
        text = 'Labels: ' + (', '.join(names) or '(none)')
        if predicted_names is not None:
            text += '\nPredicted: ' + (', '.join(predicted_names) or '(none)')
        wrapped = '\n'.join(textwrap.fill(t, 80) for t in text.split('\n'))
        fig.text(0.5, 0.01, wrapped, ha='center', va='bottom', fontsize=9)
        if len(panels) > 1 and colours.size:
            handles = [
                Patch(color=colours[i] / 255.0, label=classes[i])
                for i in sorted(present)
                if 0 <= i < len(classes)
            ]
            if handles:
                axes[0][-1].legend(
                    handles=handles,
                    loc='upper left',
                    bbox_to_anchor=(1.0, 1.0),
                    fontsize=7,
                    frameon=False,
                )
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.08 if show_titles else 0, 1, 1))
    return fig


# -------------------------------------------------------------------- base dataset


class RetrievalDataset(NonGeoDataset):
    """Base class of the multi-label retrieval datasets.

    Subclasses set, in ``__init__``: ``root``, ``split``, ``transforms``,
    ``image_paths``, ``mask_paths`` (or None), ``ids``, ``labels`` and
    ``min_pixel_fraction``, and implement :meth:`_load_mask_array` if they have masks.

    Samples are ``{'image': float32 [3, H, W] in 0..255, 'label': long multi-hot
    [C], 'mask': long [H, W] (datasets with masks, unless ``load_masks`` is False),
    'index': long scalar}`` where ``'index'`` is the position in the split.
    """

    #: Class names, in label order.
    classes: ClassVar[tuple[str, ...]] = ()
    #: RGB colour of every class for plotting masks (None: no masks).
    colormap: ClassVar[tuple[tuple[int, int, int], ...] | None] = None
    #: Whether samples carry a ``'mask'``.
    has_masks: ClassVar[bool] = False
    #: Valid values of ``split``.
    splits: ClassVar[tuple[str, ...]] = ('train', 'val', 'test')

    root: PathLike
    split: str
    transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None
    image_paths: list[str]
    mask_paths: list[str] | None
    #: Stable identifiers of the split's images, in sample order.
    ids: list[str]
    #: Multi-hot labels [N, C] of the split, in sample order.
    labels: Tensor
    #: Pixel fraction a class needs to count as a label (0: any pixel).
    min_pixel_fraction: float
    #: Whether samples carry the ``'mask'`` (datasets with masks only).
    load_masks: bool = True

    def _check_split(self, split: str) -> None:
        """Validate the split name.

        Args:
            split: Requested split.

        Raises:
            ValueError: If it is not one of :attr:`splits`.
        """
        if split not in self.splits:
            raise ValueError(
                f'Invalid split {split!r} for {type(self).__name__}; expected one of '
                f'{self.splits}.'
            )

    def __len__(self) -> int:
        """Return the number of samples in the split.

        Returns:
            Length of the dataset.
        """
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return a sample.

        Args:
            index: Position in the split.

        Returns:
            The sample dictionary.

        Raises:
            IndexError: If ``index`` is out of range.
            ValueError: If the mask size differs from the image size or the mask
                holds an invalid value (the message names the files).
            OSError: If the image cannot be decoded (the message names it).
        """
        length = len(self.image_paths)
        if not -length <= index < length:
            raise IndexError(f'Index {index} out of range for {length} samples.')
        index = index % length
        image = load_rgb_image(self.image_paths[index])
        sample = {
            'image': image,
            'label': self.labels[index].clone(),
            'index': torch.tensor(index, dtype=torch.long),
        }
        if self.mask_paths is not None and self.load_masks:
            path = self.mask_paths[index]
            mask = self._load_mask_array(path)
            if mask.shape != tuple(image.shape[1:]):
                raise ValueError(
                    f'Mask {path!r} has size {mask.shape[0]}x{mask.shape[1]} but '
                    f'image {self.image_paths[index]!r} has size '
                    f'{image.shape[1]}x{image.shape[2]}.'
                )
            sample['mask'] = torch.from_numpy(mask)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _load_mask_array(self, path: str) -> NDArray[np.int64]:
        """Decode a mask file into class ids 0..C-1.

        Args:
            path: Mask file.

        Returns:
            int64 array [H, W].

        Raises:
            NotImplementedError: In datasets without masks.
        """
        raise NotImplementedError(f'{type(self).__name__} has no masks.')

    @property
    def label_frequencies(self) -> Tensor:
        """Fraction of the split's images that carry each label.

        Returns:
            float32 tensor [C].
        """
        if len(self.labels) == 0:
            return torch.zeros(len(self.classes), dtype=torch.float32)
        return self.labels.float().mean(dim=0)

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: image, mask in class colours (if any) and label names.

        Args:
            sample: A sample returned by :meth:`__getitem__`, optionally with a
                ``'prediction'`` (multi-hot predicted labels).
            show_titles: Whether to show titles and label names.
            suptitle: Optional figure title.

        Returns:
            A matplotlib Figure.
        """
        return plot_multilabel_sample(
            sample, self.classes, self.colormap, show_titles, suptitle
        )
