"""Multi-label retrieval datasets: DLRSD, ML-AID, WHDLD and a synthetic archive."""

from .dlrsd import DLRSD
from .mlaid import MLAID
from .synthetic import make_synthetic_dlrsd
from .utils import (
    RetrievalDataset,
    iterative_stratification,
    labels_from_pixel_counts,
    load_or_create_split,
)
from .whdld import WHDLD

__all__ = (
    'DLRSD',
    'MLAID',
    'WHDLD',
    'RetrievalDataset',
    'iterative_stratification',
    'labels_from_pixel_counts',
    'load_or_create_split',
    'make_synthetic_dlrsd',
)
