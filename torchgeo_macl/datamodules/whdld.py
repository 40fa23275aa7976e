"""WHDLD retrieval datamodule."""

from __future__ import annotations

from typing import Any

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
        min_pixel_fraction: float = 0.0,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        load_masks: bool = True,
        download: bool = False,
        checksum: bool = False,
        **kwargs: Any,
    ) -> None:
        """Initialize a new WHDLDRetrievalDataModule instance.

        Args:
            root: Root directory of the dataset.
            min_pixel_fraction: Pixel fraction a class needs to count as a label.
            split_seed: Seed of the stratified split.
            split_fractions: Train, val and test fractions.
            load_masks: Whether batches carry the masks.
            download: WHDLD cannot be downloaded; kept for a uniform interface.
            checksum: If True, check the CRC-32 of the archive's members.
            **kwargs: Loading options of
                :class:`~torchgeo_macl.datamodules.RetrievalDataModule`
                (``batch_size``, ``num_workers``, ``image_size``, ``sampler``, ...).
        """
        super().__init__(
            WHDLD,
            root=root,
            min_pixel_fraction=min_pixel_fraction,
            split_seed=split_seed,
            split_fractions=tuple(split_fractions),
            load_masks=load_masks,
            download=download,
            checksum=checksum,
            **kwargs,
        )
