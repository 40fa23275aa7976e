import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from torchgeo_macl.losses import NTXentLoss


@pytest.mark.parametrize('v', [2, 3])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_equals_pml(v: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(v)
    b, d = 10, 8
    features = torch.randn(b, v, d, generator=gen, dtype=dtype, requires_grad=True)
    labels = (torch.rand(b, 4, generator=gen) < 0.5).long()
    expected = pml_losses.NTXentLoss(temperature=0.2)(
        features.reshape(b * v, d), torch.arange(b).repeat_interleave(v)
    )
    (expected_grad,) = torch.autograd.grad(expected, features)
    got = NTXentLoss(temperature=0.2)(features, labels)
    (grad,) = torch.autograd.grad(got, features)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(grad, expected_grad, atol=tol, rtol=tol)


def test_labels_are_ignored() -> None:
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 2, 4, generator=gen)
    a = NTXentLoss()(features, torch.zeros(6, 3, dtype=torch.long))
    b = NTXentLoss()(features, torch.ones(6, 3, dtype=torch.long))
    assert a == b


def test_single_view_has_no_positive() -> None:
    features = torch.randn(4, 1, 3, requires_grad=True)
    loss = NTXentLoss()(features, torch.ones(4, 2))
    loss.backward()
    assert loss.item() == 0
    assert features.grad is not None
    assert torch.all(features.grad == 0)


def test_default_temperature() -> None:
    assert NTXentLoss().temperature == 0.1
    with pytest.raises(ValueError, match='temperature'):
        NTXentLoss(temperature=-0.1)
