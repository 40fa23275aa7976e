from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchgeo_macl.losses import LOSSES, NTXentLoss, get_loss
from torchgeo_macl.losses.base import ContrastiveLossBase

FREQS = [0.5, 0.3, 0.2, 0.1]
#: Operators that copy a value from the device to the host.
READ_BACKS = {'aten._local_scalar_dense', 'aten.item', 'aten.nonzero'}


class _ReadBacks(TorchDispatchMode):
    """Records the operators of a block that read a tensor's value on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = str(func.overloadpacket)
        if name in READ_BACKS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 2, 5, generator=gen, requires_grad=True)
    labels = (torch.rand(6, len(FREQS), generator=gen) < 0.5).long()
    return features, labels


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_no_read_back_without_validation(name: str) -> None:
    features, labels = _inputs()
    loss = get_loss(name, label_frequencies=FREQS, validate_args=False)
    with _ReadBacks() as mode:
        loss(features, labels).backward()
    assert mode.seen == []
    with _ReadBacks() as mode:
        get_loss(name, label_frequencies=FREQS)(features, labels)
    assert mode.seen


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_validation_switch(name: str) -> None:
    features, labels = _inputs()
    checked = get_loss(name, label_frequencies=FREQS)
    unchecked = get_loss(name, label_frequencies=FREQS, validate_args=False)
    assert checked.validate_args
    assert not unchecked.validate_args
    torch.testing.assert_close(unchecked(features, labels), checked(features, labels))
    with pytest.raises(ValueError, match='binary'):
        checked(features, labels * 2)
    unchecked(features, labels * 2)
    # shapes are checked either way
    with pytest.raises(ValueError, match='4 entries'):
        unchecked(features, torch.ones(6, 5))


def test_uses_labels() -> None:
    assert not NTXentLoss.uses_labels
    assert all(cls.uses_labels for n, cls in LOSSES.items() if n != 'ntxent')


def test_base_has_no_loss() -> None:
    features, labels = _inputs()
    with pytest.raises(NotImplementedError):
        ContrastiveLossBase()(features, labels)


@pytest.mark.parametrize(
    ('name', 'module'),
    [
        ('ContrastiveLossBase', 'base'),
        ('check_label_frequencies', 'base'),
        ('check_temperature', 'base'),
        ('gather_with_grad', 'distributed'),
    ],
)
def test_moved_names_are_deprecated(name: str, module: str) -> None:
    from torchgeo_macl.losses import utils

    with pytest.deprecated_call(match=f'torchgeo_macl.losses.{module}'):
        obj = getattr(utils, name)
    from torchgeo_macl import losses

    assert obj is getattr(losses, name)
    with pytest.raises(AttributeError, match='no attribute'):
        _ = utils.no_such_name
