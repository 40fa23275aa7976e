"""Embedding images and archives with a trained task."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule

    from torchgeo_macl.tasks import RetrievalTask

#: Image file suffixes that :func:`list_images` picks up.
IMAGE_SUFFIXES = ('.tif', '.tiff', '.png', '.jpg', '.jpeg')

#: Accelerators that :func:`inference_device` knows, as Lightning names them.
ACCELERATORS = ('auto', 'cpu', 'gpu', 'cuda', 'mps')


def inference_device(accelerator: str = 'auto') -> torch.device:
    """The device an accelerator name stands for, as Lightning's Trainer reads it.

    Args:
        accelerator: ``'cpu'``; ``'cuda'`` or ``'mps'``; ``'gpu'`` (CUDA, else MPS);
            or ``'auto'`` (CUDA, else MPS, else the CPU).

    Returns:
        The device.

    Raises:
        ValueError: If the name is unknown, or names a device this machine lacks
            (never a silent fall back to the CPU).
    """
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f'unknown accelerator {accelerator!r}: use {", ".join(ACCELERATORS)}'
        )
    if accelerator == 'cpu':
        return torch.device('cpu')
    if cuda and accelerator != 'mps':
        return torch.device('cuda')
    if mps and accelerator != 'cuda':
        return torch.device('mps')
    if accelerator == 'auto':
        return torch.device('cpu')
    raise ValueError(
        f'accelerator {accelerator!r} is not available on this machine (torch sees '
        'no CUDA or MPS device); use cpu or auto'
    )


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


def read_image(
    path: str | os.PathLike[str], bands: int | None = None, *, eight_bit: bool = False
) -> Tensor:
    """Read an image file as a float tensor in its stored range (0..255 for 8 bits).

    Args:
        path: A GeoTIFF/TIFF (read with rasterio, any number of bands) or a PNG/JPEG.
        bands: Expected number of bands; None accepts any.
        eight_bit: Refuse images whose pixels are not 8-bit. The models are
            trained on images in 0..255; images to embed are read with True.

    Returns:
        Float tensor ``[C, H, W]``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it cannot be decoded, has the wrong number of bands, or,
            with ``eight_bit``, its pixels are not 8-bit (uint16, float32, ...;
            the message names the file and the pixel type).
    """
    from torchgeo_macl.datasets.base import eight_bit_error

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f'image not found: {p}')
    error: ValueError | None = None
    try:
        if p.suffix.lower() in ('.tif', '.tiff'):
            import rasterio

            with rasterio.open(p) as src:
                wide = sorted({d for d in src.dtypes if d != 'uint8'})
                if wide and eight_bit:
                    error = ValueError(
                        f'{p} has {"/".join(wide)} pixels; only 8-bit (uint8) '
                        'images are read, in 0..255 as in training'
                    )
                else:
                    array = src.read().astype(np.float32)
        else:
            from PIL import Image

            with Image.open(p) as img:
                error = eight_bit_error(img.mode, p) if eight_bit else None
                if error is None:
                    array = np.asarray(img, dtype=np.float32)
                    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    except Exception as exc:
        raise ValueError(f'cannot decode image {p}: {exc}') from exc
    if error is not None:
        raise error
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


def folder_ids(
    folder: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]]
) -> list[str]:
    """The ids of images in a folder: their paths under it without the suffix.

    Args:
        folder: The folder (as given to :func:`list_images`).
        files: Image files under it.

    Returns:
        The id of every file, such as ``'sub/a'`` for ``FOLDER/sub/a.png``.

    Raises:
        ValueError: If files share an id (``a.png`` and ``a.jpg``); the message
            names the ids and their files.
    """
    root = Path(folder)
    ids = [str(Path(f).relative_to(root).with_suffix('')) for f in files]
    by_id: dict[str, list[str]] = {}
    for id_, f in zip(ids, files):
        by_id.setdefault(id_, []).append(os.fspath(f))
    clashes = {i: paths for i, paths in by_id.items() if len(paths) > 1}
    if clashes:
        listed = '; '.join(
            f'{i!r}: {", ".join(sorted(paths))}' for i, paths in sorted(clashes.items())
        )
        raise ValueError(
            f'images under {root} share an id (the path without its suffix), '
            f'rename or remove one of each: {listed}'
        )
    return ids


def embed_images(
    task: RetrievalTask, images: Sequence[Tensor], batch_size: int = 64
) -> Tensor:
    """Embed raw images with :meth:`RetrievalTask.embed`, a batch at a time.

    Args:
        task: The trained task.
        images: Images ``[C, H, W]`` in 0..255 (resized to the training size when
            the task was trained with one; otherwise embedded at their own size).
        batch_size: Images per forward pass.

    Returns:
        L2-normalised embeddings ``[N, embed_dim]`` on the CPU.
    """
    device = next(task.parameters()).device
    out = torch.empty(len(images), int(task.hparams['embed_dim']))
    for start in range(0, len(images), batch_size):
        # images of one size are stacked into one batch
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in range(start, min(start + batch_size, len(images))):
            by_shape.setdefault(tuple(images[i].shape), []).append(i)
        for positions in by_shape.values():
            batch = torch.stack([images[i] for i in positions]).to(device)
            out[positions] = task.embed(batch).cpu()
    return out


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


def datamodule_sources(datamodule: LightningDataModule | None) -> dict[str, str]:
    """Map the ids of a datamodule's predict split to their image files.

    Args:
        datamodule: A retrieval datamodule after ``setup('predict')``, or None.

    Returns:
        Absolute image path of every id; empty when the predict dataset does not
        list ``ids`` and ``image_paths``.
    """
    dataset = getattr(datamodule, 'predict_dataset', None)
    parts = getattr(dataset, 'datasets', [dataset])
    if dataset is None or not all(
        hasattr(d, 'ids') and hasattr(d, 'image_paths') for d in parts
    ):
        return {}
    return {i: os.path.abspath(p) for d in parts for i, p in zip(d.ids, d.image_paths)}
