"""Archive-scale search: embedding an archive, a faiss index, searching it."""

from .archive import (
    ArchiveInfo,
    SearchHit,
    load_archive_info,
    save_archive_info,
    search_archive,
)
from .embed import (
    IMAGE_SUFFIXES,
    datamodule_sources,
    embed_datamodule,
    embed_images,
    list_images,
    load_task,
    model_fingerprint,
    read_image,
)
from .index import EmbeddingIndex
from .plot import plot_search_grid

__all__ = (
    'IMAGE_SUFFIXES',
    'ArchiveInfo',
    'EmbeddingIndex',
    'SearchHit',
    'datamodule_sources',
    'embed_datamodule',
    'embed_images',
    'list_images',
    'load_archive_info',
    'load_task',
    'model_fingerprint',
    'plot_search_grid',
    'read_image',
    'save_archive_info',
    'search_archive',
)
