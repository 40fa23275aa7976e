import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ('old', 'new', 'names'),
    [
        ('torchgeo_macl.retrieval', 'torchgeo_macl.search', ('EmbeddingIndex',)),
        (
            'torchgeo_macl.retrieval.archive',
            'torchgeo_macl.search',
            ('ArchiveInfo', 'load_task', 'search_archive', 'plot_search_grid'),
        ),
        (
            'torchgeo_macl.metrics.retrieval',
            'torchgeo_macl.metrics',
            ('RetrievalMetrics',),
        ),
    ],
)
def test_old_module_paths_warn_and_alias(
    old: str, new: str, names: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if (
            name == old
            or name.startswith(old + '.')
            or name == 'torchgeo_macl.retrieval'
        ):
            monkeypatch.delitem(sys.modules, name)
    with pytest.warns(DeprecationWarning, match='is deprecated'):
        module = importlib.import_module(old)
    current = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(current, name)
