import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from torchgeo_macl.losses import SupConLoss


def _pml_pairs(labels: torch.Tensor, v: int) -> tuple[torch.Tensor, ...]:
    y = labels.repeat_interleave(v, 0).float()
    image = torch.arange(labels.shape[0]).repeat_interleave(v)
    positive = (y @ y.T > 0) | (image[:, None] == image[None, :])
    positive.fill_diagonal_(False)
    negative = ~positive
    negative.fill_diagonal_(False)
    return (*positive.nonzero(as_tuple=True), *negative.nonzero(as_tuple=True))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('temperature', [0.1, 0.5])
def test_one_hot_equals_pml(dtype: torch.dtype, temperature: float) -> None:
    gen = torch.Generator().manual_seed(3)
    b, v, d, c = 24, 2, 16, 6
    features = torch.randn(b, v, d, generator=gen, dtype=dtype, requires_grad=True)
    classes = torch.randint(0, c, (b,), generator=gen)
    labels = torch.nn.functional.one_hot(classes, c)
    expected = pml_losses.SupConLoss(temperature=temperature)(
        features.reshape(b * v, d), classes.repeat_interleave(v)
    )
    (expected_grad,) = torch.autograd.grad(expected, features)
    got = SupConLoss(temperature=temperature)(features, labels)
    (grad,) = torch.autograd.grad(got, features)
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(grad, expected_grad, atol=tol, rtol=tol)


@pytest.mark.parametrize('v', [2, 3])
def test_multi_label_equals_pml_with_pairs(v: int, batch_factory) -> None:
    features, labels = batch_factory(16, v, 8, 5, p=0.3, seed=4)
    # every image needs a label so that no anchor is left without positives in
    # pml's average over non-zero losses
    labels[labels.sum(1) == 0, 0] = 1
    expected = pml_losses.SupConLoss(temperature=0.1)(
        features.reshape(-1, 8), indices_tuple=_pml_pairs(labels, v)
    )
    got = SupConLoss()(features, labels)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_default_temperature() -> None:
    assert SupConLoss().temperature == 0.1
    with pytest.raises(ValueError, match='temperature'):
        SupConLoss(temperature=0)


def test_own_views_are_positives_without_shared_labels() -> None:
    # no two images share a label: only the other view is positive (SimCLR-like)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(5, 2, 4, generator=gen, dtype=torch.float64)
    labels = torch.eye(5, dtype=torch.long)
    expected = pml_losses.NTXentLoss(temperature=0.1)(
        features.reshape(10, 4), torch.arange(5).repeat_interleave(2)
    )
    torch.testing.assert_close(SupConLoss()(features, labels), expected)
