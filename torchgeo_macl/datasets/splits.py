"""Seeded multi-label-stratified splits, stored in split files.

Archives without an official split are split once by :func:`iterative_stratification`
and the result is written to a JSON split file that every later run reads, so all
runs on a machine see the same split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._io import try_atomic_write
from .utils import PathLike

__all__ = (
    'check_split_fractions',
    'iterative_stratification',
    'load_or_create_split',
    'split_file_name',
)

_SPLIT_FORMAT = 1


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
    try_atomic_write(path, data, 'split file')
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
