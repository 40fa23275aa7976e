"""A faiss index of image embeddings with ids, labels and a model identifier."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, SupportsIndex

import faiss
import numpy as np
import torch
from torch import Tensor

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
_FORMAT_VERSION = 1


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f'{name} must be a positive integer, got {value!r}')
    result = operator.index(value)
    if result < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return result


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _temporary_file(target: str) -> Iterator[str]:
    """A temporary path next to ``target``, removed unless it was moved away."""
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f'.{os.path.basename(target)}.', suffix='.tmp'
    )
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _prefix(path: str | os.PathLike[str]) -> str:
    prefix = os.fspath(path)
    for suffix in ('.faiss', '.json'):
        if prefix.endswith(suffix):
            return prefix[: -len(suffix)]
    return prefix


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
    return positions (insertion order, like :attr:`ids`), which :meth:`ids_for`
    maps to ids.

    :meth:`save` writes ``<path>.faiss`` (the faiss index), ``<path>.json`` (format
    version, kind, dimension, count, model id, search parameters, ids, SHA-256 of
    the other files) and ``<path>.labels.npy`` (uint8 labels, when there are
    labels); no pickle. :meth:`load` checks them against each other.

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
            self._index.hnsw.efSearch = self._ef_search

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
        if self._index is not None and self._kind in ('ivf', 'ivfpq'):
            self._index.nprobe = self._nprobe

    @property
    def ef_search(self) -> int:
        """Candidates kept while searching (``'hnsw'``)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = _positive_int(value, 'ef_search')
        if self._kind == 'hnsw':
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
        index.nprobe = self._nprobe
        self._index = index

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
            raise ValueError('ids contain duplicates')
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
            on the device of ``queries``. :meth:`ids_for` maps positions to ids.

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

    def ids_for(self, positions: Tensor) -> list[list[str | None]]:
        """Map positions from :meth:`search` to item ids.

        Args:
            positions: Positions [Q, k]; -1 maps to None.

        Returns:
            Ids, one list per query.

        Raises:
            ValueError: For positions out of range or not 2-D.
        """
        if positions.ndim != 2:
            raise ValueError(
                f'positions must have shape [Q, k], got {tuple(positions.shape)}'
            )
        rows = positions.tolist()
        n = len(self._ids)
        out: list[list[str | None]] = []
        for row in rows:
            mapped: list[str | None] = []
            for p in row:
                if p == -1:
                    mapped.append(None)
                elif 0 <= p < n:
                    mapped.append(self._ids[p])
                else:
                    raise ValueError(f'position {p} is out of range for {n} items')
            out.append(mapped)
        return out

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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``<path>.faiss``, ``<path>.json`` and ``<path>.labels.npy``.

        Each file is written to a temporary file and renamed into place; the JSON
        sidecar, which holds the SHA-256 of the other files, is renamed last. A
        trailing ``.faiss`` or ``.json`` in ``path`` is dropped.

        Args:
            path: Path prefix; missing parent directories are created.

        Raises:
            ValueError: If an ``'ivf'``/``'ivfpq'`` index was never trained.
        """
        if self._index is None:
            raise ValueError(
                f'this {self._kind!r} index is not trained: nothing to save'
            )
        prefix = _prefix(path)
        directory = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(directory, exist_ok=True)
        faiss_path = prefix + '.faiss'
        json_path = prefix + '.json'
        labels_path = prefix + '.labels.npy'
        labels = self.labels
        with (
            _temporary_file(faiss_path) as faiss_tmp,
            _temporary_file(labels_path) as labels_tmp,
            _temporary_file(json_path) as json_tmp,
        ):
            faiss.write_index(self._index, faiss_tmp)
            sidecar: dict[str, Any] = {
                'format': _FORMAT,
                'format_version': _FORMAT_VERSION,
                'kind': self._kind,
                'dim': self._dim,
                'count': self.ntotal,
                'metric': 'inner_product_l2_normalised',
                'model_id': self._model_id,
                'params': self._params(),
                'faiss': {
                    'file': os.path.basename(faiss_path),
                    'sha256': _sha256(faiss_tmp),
                },
                'labels': None,
                'ids': self._ids,
            }
            if labels is not None:
                with open(labels_tmp, 'wb') as f:
                    np.save(f, labels.numpy().astype(np.uint8), allow_pickle=False)
                sidecar['labels'] = {
                    'file': os.path.basename(labels_path),
                    'shape': list(labels.shape),
                    'dtype': 'uint8',
                    'sha256': _sha256(labels_tmp),
                }
            with open(json_tmp, 'w', encoding='utf-8') as f:
                json.dump(sidecar, f, allow_nan=False)
            os.replace(faiss_tmp, faiss_path)
            if labels is not None:
                os.replace(labels_tmp, labels_path)
            os.replace(json_tmp, json_path)
        if labels is None and os.path.exists(labels_path):
            os.remove(labels_path)  # stale labels of an earlier save

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expected_model_id: str | None = None,
        *,
        verify_checksums: bool = True,
    ) -> EmbeddingIndex:
        """Read an index written by :meth:`save` and check its files.

        Args:
            path: Path prefix given to :meth:`save`.
            expected_model_id: When given, the saved model id must equal it.
            verify_checksums: Compare the SHA-256 of the files with the sidecar.

        Returns:
            The index.

        Raises:
            FileNotFoundError: If the sidecar, the faiss file or the labels file is
                missing.
            ValueError: If a file is corrupt, the sidecar does not match the faiss
                index or the labels, or the model id differs.
        """
        prefix = _prefix(path)
        json_path = prefix + '.json'
        faiss_path = prefix + '.faiss'
        if not os.path.isfile(json_path):
            raise FileNotFoundError(f'index sidecar {json_path!r} not found')
        if not os.path.isfile(faiss_path):
            raise FileNotFoundError(f'faiss index file {faiss_path!r} not found')
        try:
            with open(json_path, encoding='utf-8') as f:
                meta = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f'index sidecar {json_path!r} is not valid JSON: {err}'
            ) from err
        meta = _check_sidecar(meta, json_path)

        if expected_model_id is not None and meta['model_id'] != expected_model_id:
            raise ValueError(
                f'index {faiss_path!r} was built with model {meta["model_id"]!r}, '
                f'expected {expected_model_id!r}'
            )
        if verify_checksums and _sha256(faiss_path) != meta['faiss']['sha256']:
            raise ValueError(
                f'faiss index file {faiss_path!r} does not match its sidecar '
                f'{json_path!r} (SHA-256 differs): the file is corrupt or from '
                'another save'
            )
        try:
            index = faiss.read_index(faiss_path)
        except RuntimeError as err:
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
        self.nprobe = self._nprobe
        self.ef_search = self._ef_search
        self._ids = list(meta['ids'])
        self._id_set = set(self._ids)

        if meta['labels'] is not None:
            self._labels = [_read_labels(prefix, meta, json_path, verify_checksums)]
            self._num_labels = int(meta['labels']['shape'][1])
        return self

    # ------------------------------------------------------------------------------
    # Merging
    # ------------------------------------------------------------------------------

    @classmethod
    def merge(cls, indexes: Sequence[EmbeddingIndex]) -> EmbeddingIndex:
        """Concatenate indexes built from parts of an archive.

        Items keep the order of ``indexes``. The inputs are left unchanged. For
        ``'ivf'``/``'ivfpq'`` the parts must share one trained quantiser (train one
        index, save it empty, and fill a loaded copy per part).

        Args:
            indexes: Indexes of the same kind, dimension, parameters, model id and
                label width, with disjoint ids.

        Returns:
            A new index holding every item.

        Raises:
            ValueError: If the indexes are incompatible or share ids.
        """
        parts = list(indexes)
        if not parts:
            raise ValueError('merge needs at least one index')
        first = parts[0]
        for other in parts[1:]:
            for what, get in _MERGE_CHECKS.items():
                if get(other) != get(first):
                    raise ValueError(
                        f'cannot merge indexes with different {what}: '
                        f'{get(first)!r} and {get(other)!r}'
                    )
        if first._index is None:
            raise ValueError('cannot merge untrained indexes')
        seen: set[str] = set()
        for part in parts:
            clash = seen & part._id_set
            if clash:
                raise ValueError(f'indexes share ids: {sorted(clash)[:5]}')
            seen |= part._id_set
        if first._kind in ('ivf', 'ivfpq'):
            centroids = _centroids(first._index)
            for other in parts[1:]:
                if not np.array_equal(_centroids(other._index), centroids):
                    raise ValueError(
                        'cannot merge IVF indexes trained separately: they must share '
                        'one trained quantiser'
                    )

        merged = cls(
            first._dim,
            first._kind,  # type: ignore[arg-type]
            nlist=first.nlist,
            nprobe=first._nprobe,
            pq_m=first._pq_m,
            pq_nbits=first._pq_nbits,
            hnsw_m=first._hnsw_m,
            ef_construction=first._ef_construction,
            ef_search=first._ef_search,
            model_id=first._model_id,
        )
        if first._kind == 'hnsw':
            for part in parts:
                if part.ntotal:
                    merged._index.add(part._index.reconstruct_n(0, part.ntotal))
        else:
            # Flat indexes number their vectors implicitly; IVF lists store ids.
            sequential = first._kind == 'flat'
            index = faiss.clone_index(first._index)
            offset = first.ntotal
            for other in parts[1:]:
                index.merge_from(
                    faiss.clone_index(other._index), 0 if sequential else offset
                )
                offset += other.ntotal
            merged._index = index
        merged.nprobe = first._nprobe
        for part in parts:
            merged._ids.extend(part._ids)
            merged._labels.extend(part._labels)
        merged._id_set = seen
        merged._num_labels = first._num_labels
        return merged


_MERGE_CHECKS: dict[str, Callable[[EmbeddingIndex], object]] = {
    'kind': lambda i: i.kind,
    'dim': lambda i: i.dim,
    'model_id': lambda i: i.model_id,
    'nlist': lambda i: i.nlist,
    'pq_m': lambda i: i._pq_m if i.kind == 'ivfpq' else None,
    'pq_nbits': lambda i: i._pq_nbits if i.kind == 'ivfpq' else None,
    'hnsw_m': lambda i: i._hnsw_m if i.kind == 'hnsw' else None,
    'label width': lambda i: i._num_labels,
}


def _centroids(index: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    quantizer = faiss.downcast_index(index.quantizer)
    array: np.ndarray[Any, np.dtype[np.float32]] = quantizer.reconstruct_n(
        0, quantizer.ntotal
    )
    return array


def _check_sidecar(meta: object, json_path: str) -> dict[str, Any]:
    def bad(reason: str) -> ValueError:
        return ValueError(f'index sidecar {json_path!r} is invalid: {reason}')

    if not isinstance(meta, dict):
        raise bad('not a JSON object')
    if meta.get('format') != _FORMAT:
        raise bad(f'format is {meta.get("format")!r}, expected {_FORMAT!r}')
    if meta.get('format_version') != _FORMAT_VERSION:
        raise bad(
            f'format_version {meta.get("format_version")!r} is not supported '
            f'(expected {_FORMAT_VERSION})'
        )
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
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad('ids must be a list of strings')
    if len(ids) != meta['count']:
        raise bad(f'it lists {len(ids)} ids for count {meta["count"]}')
    if len(set(ids)) != len(ids):
        raise bad('ids contain duplicates')
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
    return meta


def _read_labels(
    prefix: str, meta: dict[str, Any], json_path: str, verify: bool
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    labels_path = prefix + '.labels.npy'
    if not os.path.isfile(labels_path):
        raise FileNotFoundError(
            f'labels file {labels_path!r} not found (listed in {json_path!r})'
        )
    if verify and _sha256(labels_path) != meta['labels']['sha256']:
        raise ValueError(
            f'labels file {labels_path!r} does not match its sidecar {json_path!r} '
            '(SHA-256 differs)'
        )
    try:
        array = np.load(labels_path, allow_pickle=False)
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
