"""ML-AID retrieval datamodule."""

from __future__ import annotations

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
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int | None = None,
        sampler: str = 'random',
        sampler_m: int = 2,
        sampler_sigma: float = 0.5,
        seed: int = 0,
        predict_split: str = 'database',
        val_fraction: float = 0.1,
        split_seed: int = 0,
        split_dir: str | None = None,
        query_split: str = 'test',
        download: bool = False,
        checksum: bool = False,
    ) -> None:
        """Initialize a new MLAIDRetrievalDataModule instance.

        Args:
            root: Root directory of the dataset.
            batch_size: Size of each mini-batch.
            num_workers: Number of workers for parallel data loading.
            image_size: Side images are resized to on the device; None keeps the
                stored size.
            sampler: 'random' or 'label_aware'.
            sampler_m: Images per drawn label of the label-aware sampler.
            sampler_sigma: Label-frequency smoothing of the label-aware sampler.
            seed: Seed of the training order.
            predict_split: 'database' (train + val), 'test' or 'all'.
            val_fraction: Fraction of the training images held out for validation.
            split_seed: Seed of the stratified validation split.
            split_dir: Directory of the split files; None keeps them under
                ``root`` (see :class:`~torchgeo_macl.datasets.MLAID`).
            query_split: Queries of the test loader: 'test' (against train + val)
                or 'val' (against train; model selection without the test folder).
            download: ML-AID cannot be downloaded; kept for a uniform interface.
            checksum: If True, check the CRC-32 of the archive's members.
        """
        super().__init__(
            MLAID,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            sampler=sampler,
            sampler_m=sampler_m,
            sampler_sigma=sampler_sigma,
            seed=seed,
            predict_split=predict_split,
            query_split=query_split,
            root=root,
            val_fraction=val_fraction,
            split_seed=split_seed,
            split_dir=split_dir,
            download=download,
            checksum=checksum,
        )
