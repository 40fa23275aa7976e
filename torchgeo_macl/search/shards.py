"""Embedding shards: the files one predict process writes, and merging them.

A shard holds the embeddings of the samples one process (rank) embedded. Rank ``r``
of ``W`` processes writes, in one folder:

* ``shard-<r>-of-<W>.embeddings.npy``: float32 ``[N, D]`` embeddings;
* ``shard-<r>-of-<W>.index.npy``: int64 ``[N]`` positions in the predict dataset;
* ``shard-<r>-of-<W>.ids.npy``: unicode ``[N]`` sample ids;
* ``shard-<r>-of-<W>.labels.npy``: uint8 ``[N, C]`` multi-hot labels, when the
  batches have labels;
* ``shard-<r>-of-<W>.sources.npy``: unicode ``[N]`` image files, when known;
* ``shard-<r>-of-<W>.parquet``: the same as one table, with the columns ``index``,
  ``id``, ``embedding`` (fixed-size lists of float32), and ``label`` (fixed-size
  lists of uint8) and ``source`` when present;
* ``shard-<r>-of-<W>.json``: the manifest: format version, rank, world size,
  count, embedding dimension, model fingerprint, checkpoint, class names and the
  files above.

``<r>`` and ``<W>`` have five digits. Every file is written atomically and the
manifest last, so a shard whose manifest exists is complete. The ``.npy`` files
are read back without pickle; the Parquet file is for other tools (pandas,
DuckDB, Spark, ...).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_text

__all__ = (
    'SHARD_FORMAT_VERSION',
    'Embeddings',
    'list_shards',
    'read_shards',
    'shard_stem',
    'write_shard',
)

#: Version of the shard layout written by :func:`write_shard`.
SHARD_FORMAT_VERSION = 1

_MANIFEST = re.compile(r'^shard-(\d{5})-of-(\d{5})\.json$')


@dataclass
class Embeddings:
    """Embeddings of a predict dataset, with what an index needs besides them.

    Attributes:
        embeddings: float32 ``[N, D]``, in the order of :attr:`indexes`.
        indexes: Positions of the samples in the predict dataset, ``[N]``.
        ids: Sample ids.
        model_id: Fingerprint of the model that computed the embeddings.
        labels: Multi-hot labels ``[N, C]``, or None.
        sources: Image file of each id, where known.
        classes: Label names (empty when unknown).
        checkpoint: Checkpoint the model was loaded from ('' when unknown).
    """

    embeddings: Tensor
    indexes: Tensor
    ids: list[str]
    model_id: str
    labels: Tensor | None = None
    sources: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    checkpoint: str = ''


def shard_stem(rank: int, world_size: int) -> str:
    """Name shared by the files of one shard.

    Args:
        rank: Global rank of the process.
        world_size: Number of processes.

    Returns:
        ``shard-<rank>-of-<world_size>``, five digits each.
    """
    return f'shard-{rank:05d}-of-{world_size:05d}'


def _npy(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _parquet(part: Embeddings, sources: list[str] | None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = part.embeddings.numpy()
    columns: dict[str, Any] = {
        'index': pa.array(part.indexes.numpy(), pa.int64()),
        'id': pa.array(part.ids, pa.string()),
        'embedding': pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]
        ),
    }
    if part.labels is not None:
        labels = part.labels.numpy()
        columns['label'] = pa.FixedSizeListArray.from_arrays(
            pa.array(labels.reshape(-1), pa.uint8()), labels.shape[1]
        )
    if sources is not None:
        columns['source'] = pa.array(sources, pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def write_shard(
    directory: str | os.PathLike[str], part: Embeddings, rank: int, world_size: int
) -> Path:
    """Write the shard of one rank (see the module documentation).

    Args:
        directory: Output folder, created when missing.
        part: The rank's embeddings; ``sources`` may name the images of other
            ranks too (only this shard's ids are written).
        rank: Global rank of the process.
        world_size: Number of processes.

    Returns:
        The manifest's path.

    Raises:
        ValueError: If the lengths of the embeddings, indexes, ids and labels differ.
    """
    count = len(part.embeddings)
    lengths = {len(part.indexes), len(part.ids)}
    if part.labels is not None:
        lengths.add(len(part.labels))
    if lengths != {count} or part.embeddings.ndim != 2:
        raise ValueError(
            f'a shard needs [N, D] embeddings and N indexes, ids and labels; got '
            f'{tuple(part.embeddings.shape)} embeddings, {len(part.indexes)} '
            f'indexes, {len(part.ids)} ids'
        )
    folder = Path(directory)
    stem = shard_stem(rank, world_size)
    part = Embeddings(
        embeddings=part.embeddings.detach().cpu().float(),
        indexes=part.indexes.detach().cpu().long(),
        ids=[str(i) for i in part.ids],
        model_id=part.model_id,
        labels=None if part.labels is None else part.labels.detach().cpu().byte(),
        sources=part.sources,
        classes=part.classes,
        checkpoint=part.checkpoint,
    )
    sources = (
        [part.sources[i] for i in part.ids]
        if part.sources and all(i in part.sources for i in part.ids)
        else None
    )
    arrays: dict[str, np.ndarray[Any, Any]] = {
        'embeddings': part.embeddings.numpy(),
        'index': part.indexes.numpy(),
        'ids': np.asarray(part.ids, dtype=np.str_),
    }
    if part.labels is not None:
        arrays['labels'] = part.labels.numpy()
    if sources is not None:
        arrays['sources'] = np.asarray(sources, dtype=np.str_)
    files: dict[str, str] = {}
    for key, array in arrays.items():
        files[key] = f'{stem}.{key}.npy'
        atomic_write_bytes(folder / files[key], _npy(array))
    files['parquet'] = f'{stem}.parquet'
    atomic_write_bytes(folder / files['parquet'], _parquet(part, sources))
    manifest = {
        'format_version': SHARD_FORMAT_VERSION,
        'rank': rank,
        'world_size': world_size,
        'count': count,
        'dim': int(part.embeddings.shape[1]),
        'model_id': part.model_id,
        'checkpoint': part.checkpoint,
        'classes': list(part.classes),
        'files': files,
    }
    path = folder / f'{stem}.json'
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f'{path}: not a shard manifest: {exc}') from exc
    if not isinstance(meta, dict) or meta.get('format_version') != (
        SHARD_FORMAT_VERSION
    ):
        version = meta.get('format_version') if isinstance(meta, dict) else None
        raise ValueError(
            f'{path}: shard format version {version!r}, expected {SHARD_FORMAT_VERSION}'
        )
    keys = {'rank', 'world_size', 'count', 'dim', 'model_id', 'classes', 'files'}
    missing = sorted(keys - meta.keys())
    if missing or not isinstance(meta['files'], dict):
        raise ValueError(f'{path}: shard manifest without {", ".join(missing)}')
    return meta


def _load(folder: Path, meta: dict[str, Any], key: str, manifest: Path) -> Any:
    name = meta['files'].get(key)
    if name is None:
        return None
    path = folder / str(name)
    if Path(name).name != name:
        raise ValueError(f'{manifest}: file name {name!r} is not in the shard folder')
    if not path.is_file():
        raise FileNotFoundError(f'{path}: file of shard {manifest.name} is missing')
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f'{path}: cannot read shard array: {exc}') from exc
    if len(array) != meta['count']:
        raise ValueError(
            f'{path}: {len(array)} rows but {manifest.name} says {meta["count"]}'
        )
    return array


def read_shards(
    directory: str | os.PathLike[str], model_id: str | None = None
) -> Embeddings:
    """Merge the shards of a folder into the embeddings of the whole predict dataset.

    The rows are sorted by dataset index; an index written twice (a sampler that
    pads the last ranks) is kept once.

    Args:
        directory: Folder written by :class:`~torchgeo_macl.search.EmbeddingWriter`.
        model_id: Fingerprint the shards must have (None: any, the same in all).

    Returns:
        The merged embeddings.

    Raises:
        FileNotFoundError: If the folder or a file of a shard is missing, or the
            folder holds no shard.
        ValueError: If a manifest cannot be read, a rank is missing, or the shards
            disagree with each other or with ``model_id``.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f'embedding folder not found: {folder}')
    manifests = list_shards(folder)
    if not manifests:
        raise FileNotFoundError(
            f'no embedding shards (shard-*-of-*.json) in {folder}; write them with '
            '`torchgeo-macl export`'
        )
    metas = [(path, _read_manifest(path)) for path in manifests]
    first_path, first = metas[0]
    expected = model_id if model_id is not None else first['model_id']
    for path, meta in metas:
        if meta['model_id'] != expected:
            origin = 'the checkpoint' if model_id is not None else first_path.name
            raise ValueError(
                f'{path} holds embeddings of model {meta["model_id"]} but '
                f'{origin} is {expected}'
            )
        for key in ('world_size', 'dim', 'classes'):
            if meta[key] != first[key]:
                raise ValueError(
                    f'{path}: {key} {meta[key]!r} differs from {first[key]!r} in '
                    f'{first_path.name}'
                )
    world_size = int(first['world_size'])
    ranks = {int(meta['rank']) for _, meta in metas}
    missing = sorted(set(range(world_size)) - ranks)
    if missing:
        names = ', '.join(f'{shard_stem(r, world_size)}.json' for r in missing)
        raise FileNotFoundError(f'{folder}: shards missing: {names}')
    parts: dict[str, list[Any]] = {
        k: [] for k in ('embeddings', 'index', 'ids', 'labels', 'sources')
    }
    for path, meta in metas:
        for key, values in parts.items():
            values.append(_load(folder, meta, key, path))
        for key in ('embeddings', 'index', 'ids'):
            if parts[key][-1] is None:
                raise ValueError(f'{path}: shard manifest names no {key} file')
        if parts['embeddings'][-1].shape[1:] != (first['dim'],):
            raise ValueError(
                f'{path}: embeddings of shape {parts["embeddings"][-1].shape}, '
                f'expected [{meta["count"]}, {first["dim"]}]'
            )
    has_labels = [labels is not None for labels in parts['labels']]
    if any(has_labels) and not all(has_labels):
        without = manifests[has_labels.index(False)]
        raise ValueError(f'{without}: shard without labels among shards with labels')
    indexes = np.concatenate(parts['index']).astype(np.int64)
    # stable sort: the first copy of an index written twice is kept
    order = np.argsort(indexes, kind='stable')
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = indexes[order][1:] != indexes[order][:-1]
    order = order[keep]
    ids_all = np.concatenate(parts['ids'])
    ids = [str(i) for i in ids_all[order]]
    sources: dict[str, str] = {}
    if all(s is not None for s in parts['sources']):
        sources = {
            str(i): str(s)
            for i, s in zip(ids_all[order], np.concatenate(parts['sources'])[order])
        }
    labels = None
    if all(has_labels):
        labels = torch.from_numpy(np.concatenate(parts['labels'])[order])
    embeddings = np.concatenate(parts['embeddings']).astype(np.float32)[order]
    return Embeddings(
        embeddings=torch.from_numpy(np.ascontiguousarray(embeddings)),
        indexes=torch.from_numpy(indexes[order]),
        ids=ids,
        model_id=str(first['model_id']),
        labels=labels,
        sources=sources,
        classes=[str(c) for c in first['classes']],
        checkpoint=str(first.get('checkpoint') or ''),
    )


def list_shards(directory: str | os.PathLike[str]) -> Sequence[Path]:
    """List the shard manifests of a folder.

    Args:
        directory: The folder (need not exist).

    Returns:
        The manifests, sorted by name.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _MANIFEST.match(p.name))
