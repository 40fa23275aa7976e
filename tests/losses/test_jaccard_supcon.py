import pytest
import torch

from torchgeo_macl.losses import JaccardSupConLoss, MACLLoss


@pytest.mark.parametrize('threshold', [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize('v', [1, 2, 3])
def test_matches_slow_reference(
    threshold: float, v: int, jaccard_ref, batch_factory
) -> None:
    features, labels = batch_factory(9, v, 6, 4, p=0.45, seed=20 + v)
    got = JaccardSupConLoss(temperature=0.2, threshold=threshold)(features, labels)
    expected = jaccard_ref(features, labels, 0.2, threshold)
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_equals_macl_weighted_variant(batch_factory) -> None:
    features, labels = batch_factory(10, 2, 6, 5, p=0.4, seed=5)
    a = JaccardSupConLoss(temperature=0.1, threshold=0.25)(features, labels)
    b = MACLLoss(
        pair_weighting='mean', alpha=0, beta=1, gamma_j=0, gamma_rho=0, kappa=0.25
    )(features, labels)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_partial_overlap_weighs_less() -> None:
    # anchor 0 has positives 1 (J = 1) and 2 (J = 1/3); pull 2 away: weighting by
    # J lowers the loss compared with uniform SupCon weights
    labels = torch.tensor([[1, 1], [1, 1], [1, 0]])
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.2]], dtype=torch.float64)
    features = features[:, None, :]
    weighted = JaccardSupConLoss()(features, labels)
    uniform = MACLLoss(pair_weighting='mean', alpha=0, beta=0, gamma_j=0, gamma_rho=0)(
        features, labels
    )
    assert weighted < uniform


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match='threshold'):
        JaccardSupConLoss(threshold=1.5)
    with pytest.raises(ValueError, match='temperature'):
        JaccardSupConLoss(temperature=-1)
