"""A Lightning prediction writer that writes embedding shards, one per process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from .embed import datamodule_sources, model_fingerprint
from .shards import Embeddings, write_shard

__all__ = ('EmbeddingWriter',)


class EmbeddingWriter(BasePredictionWriter):
    """Write the embeddings of ``trainer.predict`` as one shard per process.

    The task's ``predict_step`` returns ``'embedding'`` and, when the batch has
    them, ``'index'`` (position in the predict dataset) and ``'label'``; batches
    without ``'index'`` are placed by the predict sampler's indexes. Each process
    keeps its batches on the CPU and writes its shard (see
    :mod:`torchgeo_macl.search.shards`) at the end of the predict epoch, so
    ``trainer.predict(..., return_predictions=False)`` holds no predictions on
    the device. Ids are the datamodule's ``predict_ids`` at those positions (the
    positions as text when it has none), the class names its ``classes``.
    :func:`~torchgeo_macl.search.shards.read_shards` merges the shards.

    Without ``output_dir``, the shards go into the ``predictions`` folder of the
    trainer's log directory (``trainer.log_dir``, e.g.
    ``lightning_logs/version_0/predictions``; ``default_root_dir/predictions``
    without a logger), chosen in :meth:`setup` and logged. This is the writer
    ``torchgeo-macl predict`` adds to a run that has no prediction writer.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str] | None = None,
        model_id: str | None = None,
        checkpoint: str = '',
    ) -> None:
        """Initialise a new EmbeddingWriter.

        Args:
            output_dir: Folder of the shards, created when missing; None: the
                ``predictions`` folder of the trainer's log directory.
            model_id: Fingerprint written into the manifests; None computes
                :func:`~torchgeo_macl.search.model_fingerprint` of the task when
                predicting starts (after its ``setup``, which may set its
                preprocessing buffers from the datamodule: give the fingerprint of
                the checkpoint as loaded to identify that).
            checkpoint: Checkpoint the task was loaded from, written into the
                manifests; empty: the trainer's ``ckpt_path``, if any.
        """
        super().__init__('batch')
        self._in_log_dir = output_dir is None
        #: Folder of the shards (set by :meth:`setup` when ``output_dir`` is None).
        self.output_dir = '' if output_dir is None else os.fspath(output_dir)
        self.model_id = model_id
        self.checkpoint = checkpoint
        self._checkpoint = checkpoint
        self._embeddings: list[Tensor] = []
        self._indexes: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._model_id = model_id or ''
        #: Manifest of the last shard written by this process, and its row count.
        self.manifest: str = ''
        self.count = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Choose the folder of the shards when ``output_dir`` was not given.

        Args:
            trainer: The trainer.
            pl_module: The task.
            stage: The Lightning stage.
        """
        if not self._in_log_dir or stage != 'predict':
            return
        # every process is set up here, so all ranks get rank 0's log directory
        log_dir = trainer.log_dir or trainer.default_root_dir
        self.output_dir = os.path.join(log_dir, 'predictions')
        rank_zero_info(
            f'EmbeddingWriter: writing the embeddings into {self.output_dir} (one '
            f'shard per process; `torchgeo-macl index --embeddings {self.output_dir}`'
            ' indexes them)'
        )

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Identify the task and forget the batches of an earlier predict run.

        Args:
            trainer: The trainer.
            pl_module: The task.
        """
        self._model_id = self.model_id or model_fingerprint(pl_module)
        ckpt_path = trainer.ckpt_path
        self._checkpoint = self.checkpoint or (
            os.path.abspath(ckpt_path) if ckpt_path else ''
        )
        self._embeddings, self._indexes, self._labels = [], [], []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep a batch's embeddings, positions and labels on the CPU.

        Args:
            trainer: The trainer.
            pl_module: The task.
            prediction: The output of ``predict_step``.
            batch_indices: Positions of the batch's samples given by the sampler.
            batch: The batch.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Raises:
            ValueError: If predict has several dataloaders, or a batch has neither
                ``'index'`` nor sampler indexes.
        """
        if dataloader_idx != 0:
            raise ValueError('EmbeddingWriter writes the shards of one dataloader')
        embedding = prediction['embedding']
        index = prediction.get('index')
        if index is None:
            if batch_indices is None:
                raise ValueError(
                    'predict batches need an "index" entry or sampler indexes to '
                    'place their embeddings'
                )
            index = torch.as_tensor(list(batch_indices))
        self._embeddings.append(embedding.detach().float().cpu())
        self._indexes.append(index.detach().long().reshape(-1).cpu())
        if 'label' in prediction:
            self._labels.append(prediction['label'].detach().cpu())

    def on_predict_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> None:
        """Write this process's shard.

        Args:
            trainer: The trainer.
            pl_module: The task.
        """
        datamodule = getattr(trainer, 'datamodule', None)
        dim = int(getattr(pl_module, 'hparams', {}).get('embed_dim', 0))
        embeddings = (
            torch.cat(self._embeddings) if self._embeddings else torch.empty(0, dim)
        )
        indexes = (
            torch.cat(self._indexes)
            if self._indexes
            else torch.empty(0, dtype=torch.long)
        )
        labels = None
        if self._labels and len(self._labels) == len(self._embeddings):
            labels = torch.cat(self._labels)
        known = list(getattr(datamodule, 'predict_ids', None) or [])
        if known and (len(indexes) == 0 or int(indexes.max()) < len(known)):
            ids = [known[i] for i in indexes.tolist()]
        else:
            ids = [str(i) for i in indexes.tolist()]
        part = Embeddings(
            embeddings=embeddings,
            indexes=indexes,
            ids=ids,
            model_id=self._model_id,
            labels=labels,
            sources=datamodule_sources(datamodule),
            classes=[str(c) for c in getattr(datamodule, 'classes', [])],
            checkpoint=self._checkpoint,
        )
        path = write_shard(
            self.output_dir, part, trainer.global_rank, trainer.world_size
        )
        self.manifest, self.count = str(path), len(ids)
        self._embeddings, self._indexes, self._labels = [], [], []
