"""ML-AID retrieval datamodule."""

from __future__ import annotations

from typing import Any

from ..datasets import MLAID
from .base import RetrievalDataModule

__all__ = ('MLAIDRetrievalDataModule',)


class MLAIDRetrievalDataModule(RetrievalDataModule):
    """LightningDataModule of :class:`~torchgeo_macl.datasets.MLAID` for retrieval.

    Uses the official train/test folders and a stratified val split from the
    training images; test and predict loaders give queries (test) and the database
    (train + val). Normalisation uses the ImageNet mean and std (0..255 units): no
    per-channel statistics of ML-AID are published.
    """

    def __init__(
        self,
        root: str = 'data',
        val_fraction: float = 0.1,
        split_seed: int = 0,
        split_dir: str | None = None,
        download: bool = False,
        checksum: bool = False,
        **kwargs: Any,
    ) -> None:
        """Initialize a new MLAIDRetrievalDataModule instance.

        Args:
            root: Root directory of the dataset.
            val_fraction: Fraction of the training images held out for validation.
            split_seed: Seed of the stratified validation split.
            split_dir: Directory of the split files; None keeps them under
                ``root`` (see :class:`~torchgeo_macl.datasets.MLAID`).
            download: ML-AID cannot be downloaded; kept for a uniform interface.
            checksum: If True, check the CRC-32 of the archive's members.
            **kwargs: Loading options of
                :class:`~torchgeo_macl.datamodules.RetrievalDataModule`
                (``batch_size``, ``num_workers``, ``image_size``, ``sampler``, ...).
        """
        super().__init__(
            MLAID,
            root=root,
            val_fraction=val_fraction,
            split_seed=split_seed,
            split_dir=split_dir,
            download=download,
            checksum=checksum,
            **kwargs,
        )
