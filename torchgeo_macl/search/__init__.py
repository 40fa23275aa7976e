"""Archive-scale search: embedding an archive, a faiss index, searching it."""

from .archive import (
    ArchiveInfo,
    SearchHit,
    load_archive_info,
    save_archive_info,
    search_archive,
)
from .embed import (
    ACCELERATORS,
    IMAGE_SUFFIXES,
    datamodule_sources,
    embed_datamodule,
    embed_images,
    folder_ids,
    inference_device,
    list_images,
    load_task,
    model_fingerprint,
    read_image,
)
from .index import EmbeddingIndex
from .plot import plot_search_grid
from .shards import Embeddings, read_shards, write_shard
from .writer import EmbeddingWriter

__all__ = (
    'ACCELERATORS',
    'IMAGE_SUFFIXES',
    'ArchiveInfo',
    'EmbeddingIndex',
    'EmbeddingWriter',
    'Embeddings',
    'SearchHit',
    'datamodule_sources',
    'embed_datamodule',
    'embed_images',
    'folder_ids',
    'inference_device',
    'list_images',
    'load_archive_info',
    'load_task',
    'model_fingerprint',
    'plot_search_grid',
    'read_image',
    'read_shards',
    'save_archive_info',
    'search_archive',
    'write_shard',
)
