"""Lightning datamodules of the multi-label retrieval datasets."""

from .base import (
    EpochRandomSampler,
    IndexedConcatDataset,
    MaskRetrievalDataModule,
    QueryDatabaseDataset,
    RetrievalDataModule,
    retrieval_collate,
)
from .dlrsd import DLRSDRetrievalDataModule
from .mlaid import MLAIDRetrievalDataModule
from .spec import RetrievalDataSpec
from .torchgeo_adapter import TorchGeoRetrievalDataModule, TorchGeoRetrievalSplit
from .whdld import WHDLDRetrievalDataModule

__all__ = (
    'DLRSDRetrievalDataModule',
    'EpochRandomSampler',
    'IndexedConcatDataset',
    'MLAIDRetrievalDataModule',
    'MaskRetrievalDataModule',
    'QueryDatabaseDataset',
    'RetrievalDataModule',
    'RetrievalDataSpec',
    'TorchGeoRetrievalDataModule',
    'TorchGeoRetrievalSplit',
    'WHDLDRetrievalDataModule',
    'retrieval_collate',
)
