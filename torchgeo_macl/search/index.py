"""A faiss index of image embeddings with ids, labels and a model identifier."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any, Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from .._checks import check_positive_int as _positive_int
from .._io import sha256_file, sync_directory, write_new_file

__all__ = ('EmbeddingIndex',)

IndexKind = Literal['flat', 'ivf', 'hnsw', 'ivfpq']

_KINDS: tuple[str, ...] = ('flat', 'ivf', 'hnsw', 'ivfpq')
_FAISS_TYPES: dict[str, str] = {
    'flat': 'IndexFlat',
    'ivf': 'IndexIVFFlat',
    'hnsw': 'IndexHNSWFlat',
    'ivfpq': 'IndexIVFPQ',
}
_FORMAT = 'torchgeo_macl.EmbeddingIndex'
#: Format written by :meth:`EmbeddingIndex.save`.
_FORMAT_VERSION = 2
#: Formats read by :meth:`EmbeddingIndex.load`. Format 1 keeps the ids in the
#: sidecar and the data in ``<prefix>.faiss`` and ``<prefix>.labels.npy``.
_READABLE_VERSIONS = (1, 2)
#: Hex digits of the version token in the data file names of a save.
_TOKEN_DIGITS = 16
#: Reads of the sidecar by :meth:`EmbeddingIndex.load` when a save replaces the
#: files it names while they are being read.
_LOAD_ATTEMPTS = 5


def _prefix(path: str | os.PathLike[str]) -> str:
    """The path prefix of an index: ``path`` without a ``.faiss``/``.json`` suffix.

    Args:
        path: Path prefix, or the path of the sidecar or of a format 1 faiss file.

    Returns:
        The path prefix.

    Raises:
        ValueError: If the prefix has no file name (it ends with a path separator,
            or is ``.`` or ``..``).
    """
    given = os.fspath(path)
    prefix = given
    for suffix in ('.faiss', '.json'):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    if os.path.basename(prefix) in ('', os.curdir, os.pardir):
        raise ValueError(
            f'index path {given!r} names a directory, not a path prefix: give a '
            f'prefix with a file name, such as {os.path.join(prefix, "index")!r}'
        )
    return prefix


def _stale_files(directory: str, name: str, keep: Collection[str]) -> list[str]:
    """Files of earlier or interrupted saves to the path prefix ``directory/name``.

    These are the files of the naming scheme of :meth:`EmbeddingIndex.save` that
    ``keep`` does not list: ``<name>.<token>.faiss``, ``.ids.json``, ``.labels.npy``
    and ``.json.tmp``, the format 1 data files ``<name>.faiss`` and
    ``<name>.labels.npy``, and the format 1 temporary files
    ``.<name>.<suffix>.<random>.tmp``. A ``<name>.<token>.*`` file is left alone
    when ``<name>.<token>.json`` exists: it then belongs to the index with that
    path prefix.

    Args:
        directory: Directory of the index.
        name: File name part of the path prefix.
        keep: File names to keep.

    Returns:
        Paths of the stale files, sorted.
    """
    escaped = re.escape(name)
    versioned = re.compile(
        rf'{escaped}\.([0-9a-f]{{{_TOKEN_DIGITS}}})'
        r'\.(?:faiss|ids\.json|labels\.npy|json\.tmp)'
    )
    legacy = re.compile(
        rf'{escaped}\.(?:faiss|labels\.npy)'
        rf'|\.{escaped}\.(?:faiss|labels\.npy|json)\.[a-z0-9_]{{8}}\.tmp'
    )
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    present = set(entries)
    stale: list[str] = []
    for entry in sorted(entries):
        if entry in keep:
            continue
        match = versioned.fullmatch(entry)
        if match is not None:
            if f'{name}.{match.group(1)}.json' in present:
                continue
        elif legacy.fullmatch(entry) is None:
            continue
        path = os.path.join(directory, entry)
        if not os.path.isdir(path):
            stale.append(path)
    return stale


class EmbeddingIndex:
    """Nearest-neighbour search over L2-normalised embeddings with faiss.

    Similarity is the inner product of L2-normalised vectors, i.e. cosine
    similarity: embeddings and queries are normalised inside. Kinds:

    * ``'flat'``: exact search (``IndexFlatIP``);
    * ``'ivf'``: inverted lists of full vectors (``IndexIVFFlat``), searching
      ``nprobe`` of ``nlist`` lists;
    * ``'hnsw'``: graph search (``IndexHNSWFlat``), ``ef_search`` candidates;
    * ``'ivfpq'``: inverted lists of product-quantised codes (``IndexIVFPQ``),
      ``pq_m`` bytes per vector with ``pq_nbits=8``, plus 8 bytes for the id.

    ``'ivf'`` and ``'ivfpq'`` need training: call :meth:`train`, or the first
    :meth:`add` trains on its own batch when it holds enough vectors (at least
    ``nlist``, and ``2**pq_nbits`` for ``'ivfpq'``). Without ``nlist`` it is chosen
    at training time as ``round(4 * sqrt(n))``, at most ``n // 39``.

    Every item has a string id (unique) and optionally multi-hot labels. Searches
    return positions (insertion order, like :attr:`ids`).

    :meth:`save` writes, atomically, the sidecar ``<path>.json`` (format version,
    version token, kind, dimension, count, model id, search parameters, and the
    name and SHA-256 of each data file) and the data files of that save, ``<path>.<version>.faiss``
    (the faiss index), ``<path>.<version>.ids.json`` (the ids, a JSON list) and
    ``<path>.<version>.labels.npy`` (uint8 labels, when there are labels); no
    pickle. :meth:`load` checks them against each other.

    Args:
        dim: Embedding dimension.
        kind: ``'flat'``, ``'ivf'``, ``'hnsw'`` or ``'ivfpq'``.
        nlist: Inverted lists of ``'ivf'``/``'ivfpq'`` (default: chosen at training).
        nprobe: Lists searched by ``'ivf'``/``'ivfpq'``.
        pq_m: Sub-quantisers of ``'ivfpq'``, a divisor of ``dim`` (default: the
            largest divisor of ``dim`` not above ``dim // 8``).
        pq_nbits: Bits per sub-quantiser code of ``'ivfpq'``.
        hnsw_m: Neighbours per node of ``'hnsw'``.
        ef_construction: Candidates while building ``'hnsw'``.
        ef_search: Candidates while searching ``'hnsw'``.
        model_id: Identifier of the model that produced the embeddings (for
            example a checkpoint hash), checked by :meth:`load`.

    Raises:
        ValueError: For an unknown kind or a parameter out of range.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = 'flat',
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int | None = None,
        pq_nbits: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        model_id: str | None = None,
    ) -> None:
        """Create an empty index.

        Args:
            dim: Embedding dimension.
            kind: ``'flat'``, ``'ivf'``, ``'hnsw'`` or ``'ivfpq'``.
            nlist: Inverted lists of ``'ivf'``/``'ivfpq'`` (default: chosen at
                training).
            nprobe: Lists searched by ``'ivf'``/``'ivfpq'``.
            pq_m: Sub-quantisers of ``'ivfpq'``, a divisor of ``dim``.
            pq_nbits: Bits per sub-quantiser code of ``'ivfpq'``.
            hnsw_m: Neighbours per node of ``'hnsw'``.
            ef_construction: Candidates while building ``'hnsw'``.
            ef_search: Candidates while searching ``'hnsw'``.
            model_id: Identifier of the model that produced the embeddings.

        Raises:
            ValueError: For an unknown kind or a parameter out of range.
        """
        if kind not in _KINDS:
            raise ValueError(f'kind must be one of {_KINDS}, got {kind!r}')
        self._dim = _positive_int(dim, 'dim')
        self._kind: str = kind
        self._nlist = None if nlist is None else _positive_int(nlist, 'nlist')
        self._nprobe = _positive_int(nprobe, 'nprobe')
        self._pq_nbits = _positive_int(pq_nbits, 'pq_nbits')
        if pq_m is None:
            limit = max(1, self._dim // 8)
            pq_m = max(m for m in range(1, limit + 1) if self._dim % m == 0)
        self._pq_m = _positive_int(pq_m, 'pq_m')
        if kind == 'ivfpq' and self._dim % self._pq_m:
            raise ValueError(f'pq_m={self._pq_m} must divide dim={self._dim}')
        self._hnsw_m = _positive_int(hnsw_m, 'hnsw_m')
        self._ef_construction = _positive_int(ef_construction, 'ef_construction')
        self._ef_search = _positive_int(ef_search, 'ef_search')
        if model_id is not None and not isinstance(model_id, str):
            raise TypeError(f'model_id must be a string or None, got {model_id!r}')
        self._model_id = model_id
        self._ids: list[str] = []
        self._ids_view: tuple[str, ...] | None = None
        self._id_set: set[str] = set()
        self._labels: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
        self._num_labels: int | None = None
        self._index: Any = None
        if kind == 'flat':
            self._index = faiss.IndexFlatIP(self._dim)
        elif kind == 'hnsw':
            self._index = faiss.IndexHNSWFlat(
                self._dim, self._hnsw_m, faiss.METRIC_INNER_PRODUCT
            )
            self._index.hnsw.efConstruction = self._ef_construction
            self._apply_search_params()

    # ------------------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def kind(self) -> str:
        """``'flat'``, ``'ivf'``, ``'hnsw'`` or ``'ivfpq'``."""
        return self._kind

    @property
    def model_id(self) -> str | None:
        """Identifier of the model that produced the embeddings."""
        return self._model_id

    @property
    def nlist(self) -> int | None:
        """Inverted lists (``'ivf'``/``'ivfpq'``; None before training)."""
        if self._index is not None and self._kind in ('ivf', 'ivfpq'):
            return int(self._index.nlist)
        return self._nlist

    @property
    def nprobe(self) -> int:
        """Inverted lists searched per query (``'ivf'``/``'ivfpq'``)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _positive_int(value, 'nprobe')
        self._apply_search_params()

    @property
    def ef_search(self) -> int:
        """Candidates kept while searching (``'hnsw'``)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = _positive_int(value, 'ef_search')
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        """Give the faiss index the search settings of its kind."""
        if self._index is None:
            return
        if self._kind in ('ivf', 'ivfpq'):
            self._index.nprobe = self._nprobe
        elif self._kind == 'hnsw':
            self._index.hnsw.efSearch = self._ef_search

    @property
    def is_trained(self) -> bool:
        """Whether vectors can be added (always true for ``'flat'``/``'hnsw'``)."""
        return self._index is not None and bool(self._index.is_trained)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return 0 if self._index is None else int(self._index.ntotal)

    def __len__(self) -> int:
        """Number of indexed vectors.

        Returns:
            The number of indexed vectors.
        """
        return self.ntotal

    @property
    def ids(self) -> tuple[str, ...]:
        """Item ids in insertion order (positions of :meth:`search` index it)."""
        if self._ids_view is None or len(self._ids_view) != len(self._ids):
            self._ids_view = tuple(self._ids)
        return self._ids_view

    @property
    def labels(self) -> Tensor | None:
        """Multi-hot labels [N, C] (long) in insertion order, or None."""
        if self._num_labels is None:
            return None
        if not self._labels:
            return torch.zeros((0, self._num_labels), dtype=torch.long)
        return torch.from_numpy(np.concatenate(self._labels)).long()

    def __repr__(self) -> str:
        """Summary of the index.

        Returns:
            A one-line description.
        """
        return (
            f'EmbeddingIndex(kind={self._kind!r}, dim={self._dim}, '
            f'ntotal={self.ntotal}, model_id={self._model_id!r})'
        )

    # ------------------------------------------------------------------------------
    # Building
    # ------------------------------------------------------------------------------

    def _vectors(self, x: object, name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Validate, L2-normalise and convert to a C-contiguous float32 array."""
        if not isinstance(x, Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
        if x.ndim != 2:
            raise ValueError(
                f'{name} must have shape [N, {self._dim}], got {tuple(x.shape)}'
            )
        if x.shape[1] != self._dim:
            raise ValueError(
                f'{name} have dimension {x.shape[1]} but the index has dimension '
                f'{self._dim}'
            )
        if not x.is_floating_point():
            raise TypeError(f'{name} must be a floating point tensor, got {x.dtype}')
        x = x.detach().to('cpu', torch.float32)
        norms: Tensor = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        if not bool(torch.isfinite(norms).all()):
            raise ValueError(f'{name} contain NaN, infinite or too large values')
        array: np.ndarray[Any, np.dtype[np.float32]] = np.ascontiguousarray(
            (x / norms.clamp_min(1e-12)).numpy()
        )
        return array

    def _required_training_size(self, nlist: int) -> int:
        if self._kind == 'ivfpq':
            return max(nlist, 1 << self._pq_nbits)
        return nlist

    def train(self, embeddings: Tensor) -> None:
        """Train the coarse quantiser (and product quantiser) on sample embeddings.

        Does nothing for ``'flat'`` and ``'hnsw'``.

        Args:
            embeddings: Training sample [N, dim].

        Raises:
            ValueError: If the index is already trained, the sample is too small
                (fewer than ``nlist`` vectors, or ``2**pq_nbits`` for ``'ivfpq'``)
                or invalid.
        """
        x = self._vectors(embeddings, 'embeddings')
        if self._kind in ('flat', 'hnsw'):
            return
        if self._index is not None:
            raise ValueError(f'this {self._kind!r} index is already trained')
        n = x.shape[0]
        nlist = self._nlist
        if nlist is None:
            nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
        needed = self._required_training_size(nlist)
        if n < needed:
            raise ValueError(
                f'training a {self._kind!r} index with nlist={nlist} needs at least '
                f'{needed} vectors, got {n}'
            )
        quantizer = faiss.IndexFlatIP(self._dim)
        index: Any
        if self._kind == 'ivf':
            index = faiss.IndexIVFFlat(
                quantizer, self._dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
        else:
            index = faiss.IndexIVFPQ(
                quantizer,
                self._dim,
                nlist,
                self._pq_m,
                self._pq_nbits,
                faiss.METRIC_INNER_PRODUCT,
            )
        index.train(x)
        self._index = index
        self._apply_search_params()

    def add(
        self,
        embeddings: Tensor,
        ids: Sequence[str] | Tensor,
        labels: Tensor | None = None,
    ) -> None:
        """Add embeddings with their ids and, optionally, labels.

        An untrained ``'ivf'``/``'ivfpq'`` index is first trained on this batch.

        Args:
            embeddings: Embeddings [N, dim] (normalised inside).
            ids: One unique string id per embedding; an integer tensor [N] becomes
                the decimal strings of its values.
            labels: Multi-hot labels [N, C]; given for every batch or for none.

        Raises:
            ValueError: For shapes that do not match, duplicate ids, labels that are
                not multi-hot or not given consistently, or an untrained index and
                a batch too small to train it.
            TypeError: For ids or embeddings of the wrong type.
        """
        x = self._vectors(embeddings, 'embeddings')
        n = x.shape[0]
        if isinstance(ids, Tensor):
            if ids.ndim != 1 or ids.is_floating_point() or ids.is_complex():
                raise TypeError('a tensor of ids must be a 1-D integer tensor')
            new_ids = [str(i) for i in ids.tolist()]
        elif isinstance(ids, str):
            raise TypeError('ids must be a sequence of strings, not a single string')
        else:
            new_ids = list(ids)
            for item in new_ids:
                if not isinstance(item, str):
                    raise TypeError(f'ids must be strings, got {item!r}')
        if len(new_ids) != n:
            raise ValueError(f'got {len(new_ids)} ids for {n} embeddings')
        fresh = set(new_ids)
        if len(fresh) != n:
            twice = next(i for i, c in Counter(new_ids).items() if c > 1)
            raise ValueError(f'ids contain duplicates, for example {twice!r}')
        clash = fresh & self._id_set
        if clash:
            raise ValueError(f'ids already in the index: {sorted(clash)[:5]}')
        array = self._check_labels(labels, n)
        if self._index is None:
            self.train(embeddings)
        if n:
            self._index.add(x)
        self._ids.extend(new_ids)
        self._id_set |= fresh
        if array is not None:
            self._labels.append(array)
            self._num_labels = array.shape[1]

    def _check_labels(
        self, labels: Tensor | None, n: int
    ) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
        has_items = self.ntotal > 0
        if labels is None:
            if self._num_labels is not None:
                raise ValueError('this index has labels: pass labels with every batch')
            return None
        if has_items and self._num_labels is None:
            raise ValueError('this index was built without labels: pass none')
        if not isinstance(labels, Tensor) or labels.ndim != 2 or labels.shape[0] != n:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else labels
            raise ValueError(f'labels must have shape [{n}, C], got {shape}')
        if self._num_labels is not None and labels.shape[1] != self._num_labels:
            raise ValueError(
                f'labels have {labels.shape[1]} columns but the index has '
                f'{self._num_labels}'
            )
        if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError('labels must be multi-hot (only 0 and 1)')
        array: np.ndarray[Any, np.dtype[np.uint8]] = (
            labels.detach().cpu().to(torch.uint8).numpy().copy()
        )
        return array

    # ------------------------------------------------------------------------------
    # Searching
    # ------------------------------------------------------------------------------

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Find the ``k`` most similar items of each query.

        Args:
            queries: Query embeddings [Q, dim] (normalised inside).
            k: Results per query, at most :attr:`ntotal`.

        Returns:
            Cosine similarities [Q, k] (float32, best first) and positions [Q, k]
            (long, -1 where an approximate index found fewer than ``k`` items),
            on the device of ``queries``; position ``p`` is item ``ids[p]``.

        Raises:
            ValueError: For an empty index, ``k`` out of range, or queries of the
                wrong shape or with NaN.
        """
        k = _positive_int(k, 'k')
        if self.ntotal == 0:
            raise ValueError('the index is empty: add embeddings before searching')
        if k > self.ntotal:
            raise ValueError(f'k={k} is larger than the {self.ntotal} indexed items')
        x = self._vectors(queries, 'queries')
        scores, positions = self._index.search(x, k)
        device = queries.device
        return (
            torch.from_numpy(scores).to(device),
            torch.from_numpy(positions).to(device),
        )

    # ------------------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            'nlist': self.nlist,
            'nprobe': self._nprobe,
            'pq_m': self._pq_m,
            'pq_nbits': self._pq_nbits,
            'hnsw_m': self._hnsw_m,
            'ef_construction': self._ef_construction,
            'ef_search': self._ef_search,
        }

    def _labels_array(self) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
        if self._num_labels is None:
            return None
        if not self._labels:
            return np.zeros((0, self._num_labels), dtype=np.uint8)
        array: np.ndarray[Any, np.dtype[np.uint8]] = np.concatenate(self._labels)
        return array

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to the path prefix ``path``, atomically.

        A save writes its data files under names of their own,
        ``<path>.<version>.faiss``, ``<path>.<version>.ids.json`` and, when there are
        labels, ``<path>.<version>.labels.npy``, where ``<version>`` is a new random
        token, and flushes them to disk. It then replaces the sidecar
        ``<path>.json``, which names these files with their SHA-256, in one
        ``os.replace``: a reader sees either the complete earlier index or the
        complete new one, also after a save that was interrupted. Only then are the
        files of earlier saves to ``path`` removed, with the leftovers of
        interrupted ones (files of this naming scheme only, format 1 files
        included; other files are never touched). Files get the permissions that
        ``open`` gives under the process umask. Saves to one prefix must not run
        concurrently. A trailing ``.faiss`` or ``.json`` in ``path`` is dropped.

        Args:
            path: Path prefix; missing parent directories are created.

        Raises:
            ValueError: If an ``'ivf'``/``'ivfpq'`` index was never trained, or
                ``path`` ends with a path separator or names an existing directory.
            OSError: If a file cannot be written; the index saved earlier under
                ``path`` is then left as it was.
        """
        if self._index is None:
            raise ValueError(
                f'this {self._kind!r} index is not trained: nothing to save'
            )
        prefix = _prefix(path)
        if os.path.isdir(prefix):
            raise ValueError(
                f'index path prefix {prefix!r} is an existing directory: give a '
                f'prefix for the index files, such as '
                f'{os.path.join(prefix, "index")!r}'
            )
        directory = os.path.dirname(os.path.abspath(prefix))
        name = os.path.basename(prefix)
        os.makedirs(directory, exist_ok=True)
        token = secrets.token_hex(_TOKEN_DIGITS // 2)
        faiss_name = f'{name}.{token}.faiss'
        ids_name = f'{name}.{token}.ids.json'
        labels_name = f'{name}.{token}.labels.npy'
        json_path = os.path.join(directory, f'{name}.json')
        json_tmp = os.path.join(directory, f'{name}.{token}.json.tmp')
        written: list[str] = []
        committed = False
        try:
            faiss_path = os.path.join(directory, faiss_name)
            written.append(faiss_path)
            faiss.write_index(self._index, faiss_path)
            sidecar: dict[str, Any] = {
                'format': _FORMAT,
                'format_version': _FORMAT_VERSION,
                'version': token,
                'kind': self._kind,
                'dim': self._dim,
                'count': self.ntotal,
                'metric': 'inner_product_l2_normalised',
                'model_id': self._model_id,
                'params': self._params(),
                'faiss': {
                    'file': faiss_name,
                    'sha256': sha256_file(faiss_path, fsync=True),
                },
                'ids': None,
                'labels': None,
            }
            ids = json.dumps(self._ids, indent=0).encode('utf-8')
            written.append(os.path.join(directory, ids_name))
            write_new_file(written[-1], ids, fsync=True)
            sidecar['ids'] = {
                'file': ids_name,
                'sha256': hashlib.sha256(ids).hexdigest(),
            }
            labels = self._labels_array()
            if labels is not None:
                buffer = io.BytesIO()
                np.save(buffer, labels, allow_pickle=False)
                data = buffer.getvalue()
                written.append(os.path.join(directory, labels_name))
                write_new_file(written[-1], data, fsync=True)
                sidecar['labels'] = {
                    'file': labels_name,
                    'shape': list(labels.shape),
                    'dtype': 'uint8',
                    'sha256': hashlib.sha256(data).hexdigest(),
                }
            written.append(json_tmp)
            write_new_file(
                json_tmp,
                json.dumps(sidecar, allow_nan=False, indent=1).encode('utf-8'),
                fsync=True,
            )
            sync_directory(directory)  # the data files exist before the switch
            os.replace(json_tmp, json_path)
            committed = True
        finally:
            if not committed:
                for created in reversed(written):
                    with contextlib.suppress(OSError):
                        os.remove(created)
        sync_directory(directory)
        keep = (faiss_name, ids_name, labels_name)
        for stale in _stale_files(directory, name, keep):
            with contextlib.suppress(OSError):
                os.remove(stale)  # the next save tries again

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expected_model_id: str | None = None,
        *,
        verify_checksums: bool = True,
    ) -> EmbeddingIndex:
        """Read an index written by :meth:`save` and check its files.

        The sidecar ``<path>.json`` names the data files; when a save to ``path``
        replaces them while they are being read, the new index is read instead.
        Indexes of format 1, written by earlier versions (``<path>.faiss``,
        ``<path>.labels.npy`` and the ids in the sidecar), are read too; their ids
        are not covered by a checksum.

        Args:
            path: Path prefix given to :meth:`save`.
            expected_model_id: When given, the saved model id must equal it.
            verify_checksums: Compare the SHA-256 of the faiss, ids and labels files
                with the sidecar.

        Returns:
            The index.

        Raises:
            FileNotFoundError: If the sidecar or a file it names is missing.
            ValueError: If ``path`` ends with a path separator, a file is corrupt or
                does not match its SHA-256 in the sidecar, the sidecar does not
                match the faiss index, the ids or the labels, or the model id
                differs.
        """
        prefix = _prefix(path)
        json_path = prefix + '.json'
        attempt = 1
        while True:
            raw, meta = _read_sidecar(prefix, json_path)
            try:
                return cls._from_files(
                    prefix, json_path, meta, expected_model_id, verify_checksums
                )
            except FileNotFoundError:
                if attempt >= _LOAD_ATTEMPTS or not _sidecar_changed(json_path, raw):
                    raise
            attempt += 1

    @classmethod
    def _from_files(
        cls,
        prefix: str,
        json_path: str,
        meta: dict[str, Any],
        expected_model_id: str | None,
        verify_checksums: bool,
    ) -> EmbeddingIndex:
        """Read the files named by a checked sidecar."""
        directory = os.path.dirname(prefix)
        legacy = meta['format_version'] == 1

        def data_file(key: str, suffix: str) -> str:
            if legacy:
                return prefix + suffix
            return os.path.join(directory, meta[key]['file'])

        faiss_path = data_file('faiss', '.faiss')
        listed = '' if legacy else f' (listed in {json_path!r})'
        if not os.path.isfile(faiss_path):
            raise FileNotFoundError(
                f'faiss index file {faiss_path!r} not found{listed}'
            )
        if expected_model_id is not None and meta['model_id'] != expected_model_id:
            raise ValueError(
                f'index {faiss_path!r} was built with model {meta["model_id"]!r}, '
                f'expected {expected_model_id!r}'
            )
        if verify_checksums and sha256_file(faiss_path) != meta['faiss']['sha256']:
            raise ValueError(
                f'faiss index file {faiss_path!r} does not match its sidecar '
                f'{json_path!r} (SHA-256 differs): the file is corrupt or from '
                'another save'
            )
        try:
            index = faiss.read_index(faiss_path)
        except RuntimeError as err:
            if not os.path.isfile(faiss_path):
                raise FileNotFoundError(
                    f'faiss index file {faiss_path!r} not found{listed}'
                ) from err
            raise ValueError(
                f'cannot read faiss index file {faiss_path!r}: {err}'
            ) from err

        kind = meta['kind']
        expected_type = _FAISS_TYPES[kind]
        if type(index).__name__ not in (expected_type, expected_type + 'IP'):
            raise ValueError(
                f'faiss index file {faiss_path!r} holds a {type(index).__name__}, but '
                f'the sidecar says kind {kind!r}'
            )
        checks = [
            ('dimension', int(index.d), meta['dim']),
            ('count', int(index.ntotal), meta['count']),
        ]
        for what, actual, expected in checks:
            if actual != expected:
                raise ValueError(
                    f'faiss index file {faiss_path!r} has {what} {actual}, but its '
                    f'sidecar {json_path!r} says {expected}'
                )
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f'faiss index file {faiss_path!r} is not an inner-product index'
            )
        if legacy:
            ids: list[str] = list(meta['ids'])
        else:
            ids_path = data_file('ids', '')
            ids = _read_ids(ids_path, meta, json_path, verify_checksums)

        params = meta['params']
        self = cls(
            meta['dim'],
            kind,
            nlist=params.get('nlist'),
            nprobe=params.get('nprobe', 16),
            pq_m=params.get('pq_m'),
            pq_nbits=params.get('pq_nbits', 8),
            hnsw_m=params.get('hnsw_m', 32),
            ef_construction=params.get('ef_construction', 40),
            ef_search=params.get('ef_search', 64),
            model_id=meta['model_id'],
        )
        self._index = index
        self._apply_search_params()
        self._ids = ids
        self._id_set = set(ids)

        if meta['labels'] is not None:
            labels_path = data_file('labels', '.labels.npy')
            self._labels = [
                _read_labels(labels_path, meta, json_path, verify_checksums)
            ]
            self._num_labels = int(meta['labels']['shape'][1])
        return self


def _read_sidecar(prefix: str, json_path: str) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a sidecar and its checked content."""
    if not os.path.isfile(json_path):
        hint = ''
        if os.path.isdir(prefix):
            hint = (
                f' ({prefix!r} is a directory: give the path prefix of the index files)'
            )
        raise FileNotFoundError(f'index sidecar {json_path!r} not found{hint}')
    with open(json_path, 'rb') as f:
        raw = f.read()
    try:
        meta = json.loads(raw.decode('utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f'index sidecar {json_path!r} is not valid JSON: {err}'
        ) from err
    return raw, _check_sidecar(meta, json_path)


def _sidecar_changed(json_path: str, raw: bytes) -> bool:
    """Whether the sidecar no longer holds ``raw`` (a save replaced it)."""
    try:
        with open(json_path, 'rb') as f:
            return f.read() != raw
    except OSError:
        return False


def _check_sidecar(meta: object, json_path: str) -> dict[str, Any]:
    def bad(reason: str) -> ValueError:
        return ValueError(f'index sidecar {json_path!r} is invalid: {reason}')

    def check_file(entry: dict[str, Any], key: str) -> None:
        file = entry.get('file')
        if (
            not isinstance(file, str)
            or file in ('', os.curdir, os.pardir)
            or os.path.basename(file) != file
            or '/' in file
            or '\\' in file
        ):
            raise bad(f'{key}.file must name a file next to the sidecar, got {file!r}')

    if not isinstance(meta, dict):
        raise bad('not a JSON object')
    if meta.get('format') != _FORMAT:
        raise bad(f'format is {meta.get("format")!r}, expected {_FORMAT!r}')
    version = meta.get('format_version')
    if isinstance(version, bool) or version not in _READABLE_VERSIONS:
        readable = ' or '.join(str(v) for v in _READABLE_VERSIONS)
        raise bad(f'format_version {version!r} is not supported (expected {readable})')
    if meta.get('kind') not in _KINDS:
        raise bad(f'unknown kind {meta.get("kind")!r}')
    for key in ('dim', 'count'):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(f'{key} must be a non-negative integer, got {value!r}')
    model_id = meta.get('model_id')
    if model_id is not None and not isinstance(model_id, str):
        raise bad(f'model_id must be a string or null, got {model_id!r}')
    if not isinstance(meta.get('params'), dict):
        raise bad('params must be an object')
    faiss_meta = meta.get('faiss')
    if not isinstance(faiss_meta, dict) or not isinstance(
        faiss_meta.get('sha256'), str
    ):
        raise bad('faiss must be an object with a sha256')
    ids = meta.get('ids')
    if version == 1:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise bad('ids must be a list of strings')
        if len(ids) != meta['count']:
            raise bad(f'it lists {len(ids)} ids for count {meta["count"]}')
        if len(set(ids)) != len(ids):
            raise bad('ids contain duplicates')
    else:
        check_file(faiss_meta, 'faiss')
        if not isinstance(ids, dict) or not isinstance(ids.get('sha256'), str):
            raise bad('ids must be an object with a file and a sha256')
        check_file(ids, 'ids')
    labels = meta.get('labels')
    if labels is not None:
        shape = labels.get('shape') if isinstance(labels, dict) else None
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(s, int) for s in shape)
            or not isinstance(labels.get('sha256'), str)
        ):
            raise bad('labels must be null or an object with shape [N, C] and sha256')
        if shape[0] != meta['count']:
            raise bad(f'labels have {shape[0]} rows for count {meta["count"]}')
        if version != 1:
            check_file(labels, 'labels')
    return meta


def _read_listed(
    path: str, what: str, sha256: str, json_path: str, verify: bool
) -> bytes:
    """Read a data file named by a sidecar, checking its SHA-256 when asked.

    Args:
        path: The data file.
        what: Its role in messages (``'ids'``, ``'labels'``).
        sha256: The digest the sidecar records.
        json_path: The sidecar, for messages.
        verify: Compare the digest.

    Returns:
        The file's bytes.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If the digest differs.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'{what} file {path!r} not found (listed in {json_path!r})'
        ) from err
    if verify and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f'{what} file {path!r} does not match its sidecar {json_path!r} '
            '(SHA-256 differs): the file was edited or is from another save'
        )
    return data


def _read_ids(
    ids_path: str, meta: dict[str, Any], json_path: str, verify: bool
) -> list[str]:
    data = _read_listed(ids_path, 'ids', meta['ids']['sha256'], json_path, verify)
    try:
        loaded = json.loads(data.decode('utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot read ids file {ids_path!r}: {err}') from err
    if not isinstance(loaded, list) or not all(isinstance(i, str) for i in loaded):
        raise ValueError(f'ids file {ids_path!r} must hold a JSON list of strings')
    ids: list[str] = loaded
    if len(ids) != meta['count']:
        raise ValueError(
            f'ids file {ids_path!r} lists {len(ids)} ids, but its sidecar '
            f'{json_path!r} says count {meta["count"]}'
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f'ids file {ids_path!r} lists duplicate ids')
    return ids


def _read_labels(
    labels_path: str, meta: dict[str, Any], json_path: str, verify: bool
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    data = _read_listed(
        labels_path, 'labels', meta['labels']['sha256'], json_path, verify
    )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f'cannot read labels file {labels_path!r}: {err}') from err
    expected = tuple(meta['labels']['shape'])
    if array.shape != expected or array.dtype != np.uint8:
        raise ValueError(
            f'labels file {labels_path!r} holds {array.dtype} {array.shape}, but its '
            f'sidecar says uint8 {expected}'
        )
    labels: np.ndarray[Any, np.dtype[np.uint8]] = array
    return labels
