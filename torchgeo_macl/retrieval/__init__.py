"""Archive-scale retrieval with faiss."""

from .index import EmbeddingIndex

__all__ = ('EmbeddingIndex',)
