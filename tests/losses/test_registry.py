import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchgeo_macl.losses import (
    LOSSES,
    ContrastiveLossBase,
    NTXentLoss,
    get_loss,
    register_loss,
    registry,
)

NEW_LOSS = '''
    from torchgeo_macl.losses import (
        ContrastiveBatch,
        PairTerms,
        WeightedSupConLoss,
        register_loss,
    )


    @register_loss('own_views')
    class OwnViewsLoss(WeightedSupConLoss):
        """Only the other views of the anchor's image are positives."""

        def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
            return PairTerms(batch.own.to(batch.z.dtype), 1 / self.temperature)
'''


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    saved = dict(LOSSES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def _import_file(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[path.stem]


@pytest.mark.usefixtures('scratch_registry')
def test_a_new_loss_is_one_module(tmp_path: Path) -> None:
    path = tmp_path / 'own_views.py'
    path.write_text(textwrap.dedent(NEW_LOSS))
    _import_file(path)
    assert 'own_views' in LOSSES
    loss = get_loss('Own-Views', temperature=0.2)
    assert type(loss).__name__ == 'OwnViewsLoss'
    assert loss.temperature == 0.2
    # the other view as the only positive is SimCLR's loss for two views
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 2, 4, generator=gen, dtype=torch.float64)
    labels = torch.ones(6, 3)
    expected = NTXentLoss(temperature=0.2)(features, labels)
    torch.testing.assert_close(loss(features, labels), expected)


@pytest.mark.usefixtures('scratch_registry')
def test_register_returns_the_class() -> None:
    class ScratchLoss(NTXentLoss):
        pass

    assert register_loss('scratch')(ScratchLoss) is ScratchLoss
    assert LOSSES['scratch'] is ScratchLoss
    assert isinstance(get_loss('scratch'), ScratchLoss)


@pytest.mark.usefixtures('scratch_registry')
def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="'supcon' is taken by SupConLoss"):
        register_loss('supcon')(NTXentLoss)


@pytest.mark.parametrize('name', ['SupCon', 'sup-con', '_supcon', '2supcon', ''])
def test_malformed_names(name: str) -> None:
    with pytest.raises(ValueError, match='lower case with underscores'):
        register_loss(name)


def test_only_losses_register() -> None:
    with pytest.raises(TypeError, match='not a subclass of ContrastiveLossBase'):
        register_loss('linear')(torch.nn.Linear)  # type: ignore[type-var]


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        LOSSES['x'] = ContrastiveLossBase  # type: ignore[index]
