"""Deprecated alias of :mod:`torchgeo_macl.search` (removed in the next release)."""

from ..search import (
    IMAGE_SUFFIXES,
    ArchiveInfo,
    EmbeddingIndex,
    SearchHit,
    datamodule_sources,
    embed_datamodule,
    embed_images,
    list_images,
    load_archive_info,
    load_task,
    model_fingerprint,
    plot_search_grid,
    read_image,
    save_archive_info,
    search_archive,
)
from ..search.archive import ARCHIVE_FORMAT_VERSION

__all__ = (
    'ARCHIVE_FORMAT_VERSION',
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
