"""The archive sidecar of an index, and searching an indexed archive."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from .._io import atomic_write_bytes
from .embed import embed_images, model_fingerprint, read_image
from .index import EmbeddingIndex

if TYPE_CHECKING:
    from torchgeo_macl.tasks import RetrievalTask

#: Version of the archive sidecar written by :func:`save_archive_info`.
ARCHIVE_FORMAT_VERSION = 1


@dataclass
class ArchiveInfo:
    """What an index needs besides the vectors to answer searches.

    Attributes:
        checkpoint: Checkpoint the embeddings came from.
        model_id: Fingerprint of that checkpoint's weights.
        classes: Label names (empty when unknown).
        sources: Image file of each id, where known.
    """

    checkpoint: str
    model_id: str
    classes: list[str]
    sources: dict[str, str]


def _info_path(index_path: str | os.PathLike[str]) -> Path:
    return Path(f'{os.fspath(index_path)}.archive.json')


def save_archive_info(index_path: str | os.PathLike[str], info: ArchiveInfo) -> None:
    """Write the archive sidecar next to an index, atomically.

    Args:
        index_path: Path prefix of the index.
        info: What to write.
    """
    target = _info_path(index_path)
    payload = {'format_version': ARCHIVE_FORMAT_VERSION, **info.__dict__}
    text = json.dumps(payload, indent=1, sort_keys=True)
    atomic_write_bytes(target, text.encode('utf-8'))


def load_archive_info(index_path: str | os.PathLike[str]) -> ArchiveInfo:
    """Read the archive sidecar of an index.

    Args:
        index_path: Path prefix of the index.

    Returns:
        The sidecar.

    Raises:
        FileNotFoundError: If it is missing.
        ValueError: If it is not a valid sidecar.
    """
    path = _info_path(index_path)
    if not path.is_file():
        raise FileNotFoundError(f'archive sidecar not found: {path}')
    try:
        data = json.loads(path.read_text())
        if data.get('format_version') != ARCHIVE_FORMAT_VERSION:
            raise ValueError(
                f'unsupported format_version {data.get("format_version")!r}'
            )
        return ArchiveInfo(
            checkpoint=str(data['checkpoint']),
            model_id=str(data['model_id']),
            classes=[str(c) for c in data['classes']],
            sources={str(k): str(v) for k, v in data['sources'].items()},
        )
    except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f'invalid archive sidecar {path}: {exc}') from exc


@dataclass
class SearchHit:
    """One search result.

    Attributes:
        rank: 1-based rank.
        id: Archive id of the result.
        score: Cosine similarity to the query.
        labels: Label names of the result (empty when unknown).
        shared: Label names shared with the query (None when the query's labels are
            unknown).
    """

    rank: int
    id: str
    score: float
    labels: list[str]
    shared: list[str] | None


def search_archive(
    index: EmbeddingIndex,
    info: ArchiveInfo,
    task: RetrievalTask,
    queries: Sequence[str],
    k: int = 10,
    query_labels: Sequence[Tensor | None] | None = None,
) -> list[tuple[str, list[SearchHit]]]:
    """Search an indexed archive with image files or ids of the archive.

    Args:
        index: The index.
        info: Its archive sidecar.
        task: The model that produced the index.
        queries: Image file paths or ids stored in the index.
        k: Results per query.
        query_labels: Known multi-hot labels of the queries (None entries for
            unknown ones); labels of archive ids are taken from the index.

    Returns:
        For every query, the query and its hits (the query itself excluded when it
        is an id of the archive).

    Raises:
        ValueError: If ``k`` is not positive, the model does not match the index,
            or a query is an image with the wrong number of bands.
        FileNotFoundError: If a query is neither an existing file nor an archive id.
    """
    if k < 1:
        raise ValueError(f'k must be a positive number of results, got {k}')
    fingerprint = model_fingerprint(task)
    if index.model_id is not None and index.model_id != fingerprint:
        raise ValueError(
            f'the checkpoint does not match the index: the index was built with model '
            f'{index.model_id}, the checkpoint is {fingerprint} (index built from '
            f'{info.checkpoint})'
        )
    position = {id_: i for i, id_ in enumerate(index.ids)}
    bands = int(task.hparams['in_channels'])
    if query_labels is not None and len(query_labels) != len(queries):
        raise ValueError(
            f'{len(query_labels)} query labels given for {len(queries)} queries'
        )
    images: list[Tensor] = []
    known: list[Tensor | None] = []
    all_labels = index.labels
    for qi, q in enumerate(queries):
        given = None if query_labels is None else query_labels[qi]
        if os.path.isfile(q):
            images.append(read_image(q, bands, eight_bit=task.eight_bit_input))
            known.append(given)
        elif q in position and q in info.sources:
            images.append(
                read_image(info.sources[q], bands, eight_bit=task.eight_bit_input)
            )
            stored = None if all_labels is None else all_labels[position[q]]
            known.append(given if given is not None else stored)
        else:
            raise FileNotFoundError(
                f'query {q!r} is neither an image file nor an id of the index'
            )
    embeddings = embed_images(task, images)
    extra = sum(q in position for q in queries)
    scores, found = index.search(embeddings, min(k + (1 if extra else 0), len(index)))
    results = []
    for qi, q in enumerate(queries):
        hits: list[SearchHit] = []
        for s, pos in zip(scores[qi].tolist(), found[qi].tolist()):
            if pos < 0 or len(hits) == k:
                continue
            id_ = index.ids[pos]
            if id_ == q:
                continue
            names = []
            shared = None
            if all_labels is not None:
                row = all_labels[pos]
                names = _names(row, info.classes)
                ql = known[qi]
                if ql is not None:
                    shared = _names(row * ql, info.classes)
            hits.append(SearchHit(len(hits) + 1, id_, float(s), names, shared))
        results.append((q, hits))
    return results


def _names(row: Tensor, classes: Sequence[str]) -> list[str]:
    idx = row.nonzero().flatten().tolist()
    return [classes[i] if i < len(classes) else str(i) for i in idx]
