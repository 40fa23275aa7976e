"""Deprecated alias of :mod:`torchgeo_macl.search` (removed in the next release)."""

from ..search import *
from ..search import __all__ as _search_names
from ..search.archive import ARCHIVE_FORMAT_VERSION

__all__ = ('ARCHIVE_FORMAT_VERSION', *_search_names)  # noqa: PLE0604
