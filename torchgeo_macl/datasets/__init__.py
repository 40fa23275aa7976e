"""Multi-label retrieval datasets: DLRSD, ML-AID, WHDLD and a synthetic archive."""

from .base import MaskRetrievalDataset, RetrievalDataset
from .dlrsd import DLRSD
from .masks import labels_from_pixel_counts
from .mlaid import MLAID
from .splits import iterative_stratification, load_or_create_split
from .synthetic import make_synthetic_dlrsd
from .whdld import WHDLD

__all__ = (
    'DLRSD',
    'MLAID',
    'WHDLD',
    'MaskRetrievalDataset',
    'RetrievalDataset',
    'iterative_stratification',
    'labels_from_pixel_counts',
    'load_or_create_split',
    'make_synthetic_dlrsd',
)
