import pytest
import torch

from torchgeo_macl.losses import MulSupConLoss, SupConLoss


@pytest.mark.parametrize('v', [1, 2, 3])
@pytest.mark.parametrize('p', [0.2, 0.5])
def test_matches_slow_reference(v: int, p: float, mulsupcon_ref, batch_factory) -> None:
    features, labels = batch_factory(9, v, 6, 5, p=p, seed=30 + v)
    got = MulSupConLoss(temperature=0.15)(features, labels)
    expected = mulsupcon_ref(features, labels, 0.15)
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_one_hot_equals_supcon(batch_factory) -> None:
    # one label per image: one anchor per view, positives = images of that label
    features, _ = batch_factory(12, 2, 6, 4, seed=1)
    labels = torch.nn.functional.one_hot(torch.arange(12) % 4, 4)
    torch.testing.assert_close(
        MulSupConLoss()(features, labels), SupConLoss()(features, labels)
    )


def test_unlabelled_images_make_no_anchor(mulsupcon_ref) -> None:
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 0]])
    got = MulSupConLoss()(features, labels)
    assert got.item() == pytest.approx(mulsupcon_ref(features, labels, 0.1), rel=1e-10)
    # changing the unlabelled images changes only the denominators
    shifted = features.clone()
    shifted[2:] = -shifted[2:]
    assert MulSupConLoss()(shifted, labels) != got


def test_default_temperature() -> None:
    assert MulSupConLoss().temperature == 0.1
    with pytest.raises(ValueError, match='temperature'):
        MulSupConLoss(temperature=0.0)
