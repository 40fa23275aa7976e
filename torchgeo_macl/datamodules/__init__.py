"""Lightning datamodules of the multi-label retrieval datasets."""

from .base import (
    EpochRandomSampler,
    IndexedConcatDataset,
    MaskRetrievalDataModule,
    RetrievalDataModule,
    retrieval_collate,
)
from .dlrsd import DLRSDRetrievalDataModule
from .mlaid import MLAIDRetrievalDataModule
from .spec import RetrievalDataSpec
from .whdld import WHDLDRetrievalDataModule

__all__ = (
    'DLRSDRetrievalDataModule',
    'EpochRandomSampler',
    'IndexedConcatDataset',
    'MLAIDRetrievalDataModule',
    'MaskRetrievalDataModule',
    'RetrievalDataModule',
    'RetrievalDataSpec',
    'WHDLDRetrievalDataModule',
    'retrieval_collate',
)
