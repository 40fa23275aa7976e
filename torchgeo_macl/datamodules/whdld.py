"""WHDLD retrieval datamodule."""

from __future__ import annotations

from ..datasets import WHDLD
from .base import MaskRetrievalDataModule

__all__ = ('WHDLDRetrievalDataModule',)


class WHDLDRetrievalDataModule(MaskRetrievalDataModule):
    """LightningDataModule of :class:`~torchgeo_macl.datasets.WHDLD` for retrieval.

    Uses the stratified split files of the dataset; test and predict loaders give
    queries (test) and the database (train + val). Normalisation uses the ImageNet
    mean and std (0..255 units): no per-channel statistics of WHDLD are published.
    WHDLD cannot be downloaded: ``download`` has no effect.
    """

    mask_dataset_class = WHDLD
