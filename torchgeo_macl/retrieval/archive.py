"""Embedding an archive with a trained task, indexing it and searching it."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_write_bytes
from .index import EmbeddingIndex

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule
    from matplotlib.figure import Figure

    from torchgeo_macl.tasks import RetrievalTask

#: Image file suffixes that :func:`list_images` picks up.
IMAGE_SUFFIXES = ('.tif', '.tiff', '.png', '.jpg', '.jpeg')

#: Version of the archive sidecar written by :func:`save_archive_info`.
ARCHIVE_FORMAT_VERSION = 1


def model_fingerprint(task: torch.nn.Module) -> str:
    """Identify a model by the SHA-256 of its weights.

    Args:
        task: The model.

    Returns:
        ``'sha256:<hex>'`` over parameter and buffer names, dtypes, shapes and values.
    """
    digest = hashlib.sha256()
    for name, value in sorted(task.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f'{name}|{tensor.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return f'sha256:{digest.hexdigest()}'


def load_task(checkpoint: str | os.PathLike[str]) -> RetrievalTask:
    """Load a :class:`~torchgeo_macl.tasks.RetrievalTask` checkpoint for inference.

    Args:
        checkpoint: Path of a Lightning checkpoint written while training the task.

    Returns:
        The task in eval mode on the CPU.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: If the file is not a RetrievalTask checkpoint.
    """
    from torchgeo_macl.tasks import RetrievalTask

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        task: RetrievalTask = RetrievalTask.load_from_checkpoint(
            path, map_location='cpu', weights_only=True
        )
    except (
        EOFError,
        KeyError,
        RuntimeError,
        TypeError,
        ValueError,
        pickle.UnpicklingError,
    ) as exc:
        raise ValueError(f'{path} is not a RetrievalTask checkpoint: {exc}') from exc
    task.eval()
    return task


def read_image(path: str | os.PathLike[str], bands: int | None = None) -> Tensor:
    """Read an image file as a float tensor in its stored range (0..255 for 8 bits).

    Args:
        path: A GeoTIFF/TIFF (read with rasterio, any number of bands) or a PNG/JPEG.
        bands: Expected number of bands; None accepts any.

    Returns:
        Float tensor ``[C, H, W]``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it cannot be decoded or has the wrong number of bands.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'image not found: {p}')
    try:
        if p.suffix.lower() in ('.tif', '.tiff'):
            import rasterio

            with rasterio.open(p) as src:
                array = src.read().astype(np.float32)
        else:
            from PIL import Image

            with Image.open(p) as img:
                array = np.asarray(img, dtype=np.float32)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    except Exception as exc:
        raise ValueError(f'cannot decode image {p}: {exc}') from exc
    if bands is not None and array.shape[0] != bands:
        raise ValueError(
            f'{p} has {array.shape[0]} bands but the model expects {bands} '
            '(in_channels of the checkpoint)'
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """List the image files under a folder, recursively, in sorted order.

    Args:
        folder: Folder to scan.

    Returns:
        The files whose suffix is in :data:`IMAGE_SUFFIXES`.

    Raises:
        FileNotFoundError: If the folder does not exist or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f'image folder not found: {root}')
    files = sorted(
        p for p in root.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(f'no {"/".join(IMAGE_SUFFIXES)} images under {root}')
    return files


@torch.no_grad()
def embed_images(
    task: RetrievalTask, images: Sequence[Tensor], batch_size: int = 64
) -> Tensor:
    """Embed raw images with a trained task, preprocessed as in training.

    Args:
        task: The trained task.
        images: Images ``[C, H, W]`` in 0..255 (resized to the training size when
            the task was trained with one; otherwise embedded at their own size).
        batch_size: Images per forward pass.

    Returns:
        L2-normalised embeddings ``[N, embed_dim]``.
    """
    device = next(task.parameters()).device
    out: list[Tensor] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        size = int(task.input_size)
        if size > 0:
            batch = torch.cat([task.preprocess(img[None].to(device)) for img in chunk])
        elif len({tuple(img.shape) for img in chunk}) > 1:
            # no training size to resize to: images of different sizes go one by one
            out.extend(
                task(task.preprocess(img[None].to(device))).cpu() for img in chunk
            )
            continue
        else:
            batch = task.preprocess(torch.stack(list(chunk)).to(device))
        out.append(task(batch).cpu())
    return torch.cat(out) if out else torch.empty(0, task.hparams['embed_dim'])


def embed_datamodule(
    task: RetrievalTask,
    datamodule: LightningDataModule,
    accelerator: str = 'auto',
    devices: int | str = 1,
    progress: bool = True,
) -> tuple[Tensor, list[str], Tensor | None]:
    """Embed a datamodule's predict split with Lightning's predict loop.

    Args:
        task: The trained task.
        datamodule: A retrieval datamodule (its ``predict_split`` chooses the images).
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        progress: Show a progress bar.

    Returns:
        Embeddings ``[N, D]`` in the predict loader's order, their ids
        (``datamodule.predict_ids``) and labels ``[N, C]`` when the batches have them.
    """
    from lightning.pytorch import Trainer

    trainer = Trainer(
        accelerator=accelerator,
        devices=devices,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    outputs: Any = trainer.predict(task, datamodule=datamodule)
    batches = (
        [o for group in outputs for o in group]
        if outputs and isinstance(outputs[0], list)
        else list(outputs or [])
    )
    embeddings = torch.cat([b['embedding'] for b in batches])
    order = torch.cat([b['index'] for b in batches]).argsort()
    embeddings = embeddings[order]
    labels = None
    if all('label' in b for b in batches):
        labels = torch.cat([b['label'] for b in batches])[order]
    ids = list(getattr(datamodule, 'predict_ids', []))
    if len(ids) != len(embeddings):
        ids = [str(i) for i in range(len(embeddings))]
    return embeddings, ids, labels


def datamodule_sources(datamodule: LightningDataModule) -> dict[str, str]:
    """Map the ids of a datamodule's predict split to their image files.

    Args:
        datamodule: A retrieval datamodule after ``setup('predict')``.

    Returns:
        Absolute image path of every id.
    """
    dataset = getattr(datamodule, 'predict_dataset', None)
    parts = getattr(dataset, 'datasets', [dataset])
    return {i: os.path.abspath(p) for d in parts for i, p in zip(d.ids, d.image_paths)}


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
            images.append(read_image(q, bands))
            known.append(given)
        elif q in position and q in info.sources:
            images.append(read_image(info.sources[q], bands))
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


def plot_search_grid(
    results: Sequence[tuple[str, Sequence[SearchHit]]],
    info: ArchiveInfo,
    columns: int = 8,
) -> Figure:
    """Draw each query with its top results; green frames share a label with it.

    Args:
        results: Output of :func:`search_archive`.
        info: The archive sidecar (where the result images are).
        columns: Results shown per query.

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt

    rows = len(results)
    fig, axes = plt.subplots(
        rows, columns + 1, figsize=(1.6 * (columns + 1), 1.8 * rows), squeeze=False
    )
    for r, (query, hits) in enumerate(results):
        path = query if os.path.isfile(query) else info.sources.get(query)
        _show(axes[r, 0], path, 'query', 'black')
        axes[r, 0].set_ylabel(
            Path(query).stem if os.path.isfile(query) else query, fontsize=6
        )
        for c in range(columns):
            ax = axes[r, c + 1]
            if c >= len(hits):
                ax.axis('off')
                continue
            hit = hits[c]
            color = 'grey' if hit.shared is None else ('green' if hit.shared else 'red')
            title = f'{hit.rank}: {hit.score:.2f}'
            if hit.shared is not None:
                title += f' ({len(hit.shared)} shared)'
            _show(ax, info.sources.get(hit.id), title, color)
    fig.tight_layout()
    return fig


def _show(ax: Any, path: str | None, title: str, color: str) -> None:
    if path is not None and os.path.isfile(path):
        image = read_image(path)[:3]
        image = image - image.amin()
        image = image / image.amax().clamp(min=1e-6)
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
