"""WHDLD retrieval datamodule."""

from __future__ import annotations

from ..datasets import WHDLD
from .base import RetrievalDataModule

__all__ = ('WHDLDRetrievalDataModule',)


class WHDLDRetrievalDataModule(RetrievalDataModule):
    """LightningDataModule of :class:`~torchgeo_macl.datasets.WHDLD` for retrieval.

    Uses the stratified split files of the dataset; test and predict loaders give
    queries (test) and the database (train + val). Normalisation uses the ImageNet
    mean and std (0..255 units): no per-channel statistics of WHDLD are published.
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
        query_split: str = 'test',
        min_pixel_fraction: float = 0.0,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        load_masks: bool = True,
        download: bool = False,
        checksum: bool = False,
    ) -> None:
        """Initialize a new WHDLDRetrievalDataModule instance.

        Args:
            root: Root directory of the dataset.
            batch_size: Size of each mini-batch.
            num_workers: Number of workers for parallel data loading.
            image_size: Side images and masks are resized to on the device; None
                keeps the stored size.
            sampler: 'random' or 'label_aware'.
            sampler_m: Images per drawn label of the label-aware sampler.
            sampler_sigma: Label-frequency smoothing of the label-aware sampler.
            seed: Seed of the training order.
            predict_split: 'database' (train + val), 'test' or 'all'.
            query_split: Queries of the test loader: 'test' (against train + val)
                or 'val' (against train).
            min_pixel_fraction: Pixel fraction a class needs to count as a label.
            split_seed: Seed of the stratified split.
            split_fractions: Train, val and test fractions.
            load_masks: Whether batches carry the masks.
            download: WHDLD cannot be downloaded; kept for a uniform interface.
            checksum: If True, check the CRC-32 of the archive's members.
        """
        super().__init__(
            WHDLD,
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
            min_pixel_fraction=min_pixel_fraction,
            split_seed=split_seed,
            split_fractions=tuple(split_fractions),
            load_masks=load_masks,
            download=download,
            checksum=checksum,
        )
