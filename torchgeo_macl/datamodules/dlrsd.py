"""DLRSD retrieval datamodule."""

from __future__ import annotations

from typing import Any

from ..datasets import DLRSD
from .base import MaskRetrievalDataModule

__all__ = ('DLRSDRetrievalDataModule',)


class DLRSDRetrievalDataModule(MaskRetrievalDataModule):
    """LightningDataModule of :class:`~torchgeo_macl.datasets.DLRSD` for retrieval.

    Uses the stratified split files of the dataset; test and predict loaders give
    queries (test) and the database (train + val). Normalisation uses the ImageNet
    mean and std (0..255 units): no per-channel statistics of DLRSD are published.
    """

    mask_dataset_class = DLRSD

    def __init__(
        self, root: str = 'data', label_source: str = 'mask', **kwargs: Any
    ) -> None:
        """Initialize a new DLRSDRetrievalDataModule instance.

        Args:
            root: Root directory of the dataset.
            label_source: 'mask' or 'csv'.
            **kwargs: Arguments of
                :class:`~torchgeo_macl.datamodules.MaskRetrievalDataModule`
                (``min_pixel_fraction``, ``split_seed``, ...) and loading options of
                :class:`~torchgeo_macl.datamodules.RetrievalDataModule`
                (``batch_size``, ``num_workers``, ``image_size``, ``sampler``, ...).
        """
        super().__init__(root=root, label_source=label_source, **kwargs)
