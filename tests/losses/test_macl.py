import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from torchgeo_macl.losses import MACLLoss, MulSupConLoss, SupConLoss

FREQS = [0.6, 0.3, 0.15, 0.05, 0.02]
OFF = {
    'pair_weighting': 'mean',
    'alpha': 0.0,
    'beta': 0.0,
    'gamma_j': 0.0,
    'gamma_rho': 0.0,
    'kappa': 0.0,
    'anchor_alpha': 0.0,
}
DEFAULTS = {
    'pair_weighting': 'balanced',
    'alpha': 1.0,
    'w_max': 10.0,
    'beta': 1.0,
    'tau0': 0.1,
    'gamma_j': 0.0,
    'gamma_rho': 0.3,
    'tau_min': 0.03,
    'tau_max': 0.5,
    'kappa': 0.0,
    'anchor_alpha': 0.0,
    'temperature_mode': 'pair',
}


def test_defaults_are_the_documented_ones() -> None:
    loss = MACLLoss()
    for name, value in DEFAULTS.items():
        assert getattr(loss, name) == value
    assert not loss.gather_distributed
    doc = MACLLoss.__doc__ or ''
    assert '2512.16294' in doc
    assert 'reconstruction' in doc
    assert "lightly's" in doc
    assert 'Model-Aware' in doc


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_all_off_equals_pml_supcon_one_hot(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    b, v, d, c = 16, 2, 8, 5
    features = torch.randn(b, v, d, generator=gen, dtype=dtype)
    classes = torch.randint(0, c, (b,), generator=gen)
    labels = torch.nn.functional.one_hot(classes, c)
    expected = pml_losses.SupConLoss(temperature=0.1)(
        features.reshape(b * v, d), classes.repeat_interleave(v)
    )
    got = MACLLoss(tau0=0.1, **OFF)(features, labels)
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected.to(got.dtype), atol=tol, rtol=tol)


@pytest.mark.parametrize('v', [1, 2, 3])
def test_all_off_equals_supcon_multi_label(v: int, batch_factory) -> None:
    features, labels = batch_factory(12, v, 6, 5, seed=v)
    features.requires_grad_(True)
    a = MACLLoss(tau0=0.2, tau_min=0.01, **OFF)(features, labels)
    (grad_a,) = torch.autograd.grad(a, features)
    b = SupConLoss(temperature=0.2)(features, labels)
    (grad_b,) = torch.autograd.grad(b, features)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_a, grad_b, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    'params',
    [
        {},
        {'alpha': 1.0, 'w_max': 3.0},
        {'beta': 2.0, 'kappa': 0.4},
        {'gamma_j': 1.0, 'gamma_rho': 1.0, 'tau_min': 0.05},
        {'alpha': 0.0, 'gamma_rho': 0.0, 'beta': 0.5},
        {'pair_weighting': 'mean', 'alpha': 0.5},
        {'pair_weighting': 'balanced', 'alpha': 0.0, 'beta': 0.0},
        {'pair_weighting': 'sum', 'alpha': 1.0, 'kappa': 0.3},
        {'pair_weighting': 'sum', 'alpha': 0.0},
        {'anchor_alpha': 1.0, 'w_max': 4.0},
        {'temperature_mode': 'row', 'gamma_j': 0.6},
        {
            'pair_weighting': 'balanced',
            'anchor_alpha': 0.5,
            'temperature_mode': 'row',
            'gamma_j': 0.3,
        },
    ],
)
@pytest.mark.parametrize('v', [1, 2, 3])
def test_matches_slow_reference(
    params: dict[str, float | str], v: int, macl_ref, batch_factory
) -> None:
    kwargs = {**DEFAULTS, **params}
    features, labels = batch_factory(7, v, 5, len(FREQS), p=0.4, seed=10 + v)
    got = MACLLoss(label_frequencies=FREQS, **kwargs)(features, labels)
    expected = macl_ref(features, labels, FREQS, **kwargs)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_float32_close_to_float64(batch_factory) -> None:
    features, labels = batch_factory(20, 2, 16, len(FREQS))
    loss = MACLLoss(label_frequencies=FREQS)
    ref = loss(features, labels)
    got = loss(features.float(), labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def _features(far: int) -> torch.Tensor:
    """One view of 4 images; image ``far`` (1 or 2) is dissimilar to image 0."""
    e = torch.eye(4, dtype=torch.float64)
    near, away = e[0] + 0.3 * e[1], -0.5 * e[0] + e[2]
    rows = [e[0], away if far == 1 else near, away if far == 2 else near, e[3]]
    return torch.stack(rows)[:, None, :]


def _assert_image_1_weighs_more(
    weighted: MACLLoss, plain: MACLLoss, labels: torch.Tensor
) -> None:
    """More weight on positive 1 than on positive 2 of anchor 0 than ``plain`` gives.

    The loss grows when image 1 is the far positive, and shrinks when it is the
    near one.
    """
    far_1 = _features(far=1)
    far_2 = _features(far=2)
    assert weighted(far_1, labels) > plain(far_1, labels)
    assert weighted(far_2, labels) < plain(far_2, labels)


def test_rare_shared_label_weighs_more() -> None:
    # image 0: {common, rare}; image 1 shares the rare label, image 2 the common one
    labels = torch.tensor(
        [[1, 0, 0, 1, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]
    )
    base = {**OFF}
    plain = MACLLoss(label_frequencies=FREQS, **base)
    weighted = MACLLoss(label_frequencies=FREQS, **{**base, 'alpha': 1.0})
    w_plain, _ = plain.pair_terms(labels)
    w_rare, _ = weighted.pair_terms(labels)
    assert w_plain[0, 1] == w_plain[0, 2] == 1
    assert w_rare[0, 1] > w_rare[0, 2]
    assert w_rare[0, 3] == 0
    # more weight on the rare-label positive
    _assert_image_1_weighs_more(weighted, plain, labels)


def test_larger_overlap_weighs_more_with_beta() -> None:
    # image 1 shares 1 of 3 labels with image 0, image 2 shares 1 of 5; images 1
    # and 2 share nothing, so only anchor 0 has two positives
    labels = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    )
    plain = MACLLoss(**OFF)
    graded = MACLLoss(**{**OFF, 'beta': 1.0})
    weights, _ = graded.pair_terms(labels)
    assert weights[0, 1] == pytest.approx(1 / 3)
    assert weights[0, 2] == pytest.approx(1 / 5)
    assert weights[0, 0] == 1
    _assert_image_1_weighs_more(graded, plain, labels)


def test_larger_overlap_gives_smaller_temperature() -> None:
    labels = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    )
    loss = MACLLoss(**{**OFF, 'gamma_j': 0.5})
    _, tau = loss.pair_terms(labels)
    assert tau[0, 0] < tau[0, 1] < tau[0, 2] < tau[0, 3]
    assert tau[0, 3] == pytest.approx(0.1)
    assert tau[0, 1] == pytest.approx(0.1 * (1 - 0.5 * 2 / 3))
    assert tau[0, 0] == pytest.approx(0.05)  # own views: J = 1


def test_rarer_anchor_gets_smaller_temperature() -> None:
    labels = torch.tensor(
        [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    )
    loss = MACLLoss(label_frequencies=FREQS, **{**OFF, 'gamma_rho': 0.5})
    _, tau = loss.pair_terms(labels)
    rows = tau[:, 3]  # temperature of each anchor against an unrelated image
    assert rows[0] == pytest.approx(0.1)  # most frequent label: rho = 0
    assert rows[0] > rows[1] > rows[2]
    assert rows[2] == pytest.approx(0.05)  # rarest label: rho = 1
    assert rows[3] == pytest.approx(0.1)  # no labels: rho = 0


def test_kappa_drops_weak_positives() -> None:
    labels = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [0, 0, 0, 0, 0]]
    )
    loss = MACLLoss(**{**OFF, 'kappa': 0.5})
    weights, _ = loss.pair_terms(labels)
    assert weights[0, 1] == 1  # J = 2/3
    assert weights[0, 2] == 0  # J = 1/4
    assert weights[3, 3] == 1  # own views of an unlabelled image stay positive
    features = _features(far=1)
    assert loss(features, labels) != MACLLoss(**OFF)(features, labels)


def test_tau_is_clamped() -> None:
    labels = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    loss = MACLLoss(**{**OFF, 'gamma_j': 1.0, 'tau_min': 0.04})
    _, tau = loss.pair_terms(labels)
    assert torch.all(tau == 0.04)


def test_missing_frequencies_raise() -> None:
    features = torch.randn(4, 2, 3)
    labels = torch.eye(4, dtype=torch.long)
    with pytest.raises(ValueError, match='set_label_frequencies'):
        MACLLoss()(features, labels)
    with pytest.raises(ValueError, match='label_frequencies='):
        MACLLoss(alpha=0.0)(features, labels)
    # frequency-free components work without them
    MACLLoss(alpha=0.0, gamma_rho=0.0)(features, labels)
    loss = MACLLoss()
    loss.set_label_frequencies([0.5, 0.4, 0.3, 0.2])
    assert torch.isfinite(loss(features, labels))
    with pytest.raises(ValueError, match='4 entries'):
        loss(torch.randn(4, 2, 3), torch.ones(4, 5))


@pytest.mark.parametrize(
    'kwargs',
    [
        {'alpha': -0.1},
        {'w_max': 0.5},
        {'beta': -1.0},
        {'gamma_j': 1.5},
        {'gamma_rho': -0.2},
        {'kappa': 2.0},
        {'tau0': 0.0},
        {'tau0': 0.01},
        {'tau0': 0.9},
        {'alpha': float('nan')},
        {'anchor_alpha': -1.0},
        {'anchor_alpha': float('inf')},
        {'pair_weighting': 'median'},
        {'temperature_mode': 'anchor'},
    ],
)
def test_bad_parameters(kwargs: dict[str, float | str]) -> None:
    with pytest.raises(ValueError, match='MACLLoss'):
        MACLLoss(**kwargs)


def test_label_weights_and_rarity() -> None:
    loss = MACLLoss(label_frequencies=[0.5, 0.5, 0.005], alpha=1.0, w_max=10.0)
    w = loss.label_weights()
    geo = (0.5 * 0.5 * 0.005) ** (1 / 3)
    torch.testing.assert_close(
        w, torch.tensor([geo / 0.5, geo / 0.5, 10.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        loss.label_rarity(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    )
    flat = MACLLoss(label_frequencies=[0.2, 0.2])
    assert torch.all(flat.label_rarity() == 0)
    assert torch.all(flat.label_weights() == 1)


def test_balanced_gives_each_label_of_the_anchor_its_share() -> None:
    # anchor 0 = {0, 3}: label 0 is carried by images 1, 2, 3, label 3 by image 4
    labels = torch.tensor(
        [
            [1, 0, 0, 1, 0],
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 1, 0, 0, 0],
        ]
    )
    loss = MACLLoss(**{**OFF, 'pair_weighting': 'balanced'})
    weights, _ = loss.pair_terms(labels, views=1)
    # one view per image: the lone carrier of label 3 gets half of the target,
    # the three carriers of label 0 share the other half
    assert weights[0, 4] == pytest.approx(1.0)
    assert weights[0, 1] == weights[0, 2] == weights[0, 3] == pytest.approx(1 / 3)
    assert weights[0, 5] == 0
    # with SupCon's uniform weights the lone carrier would get a quarter
    plain, _ = MACLLoss(**OFF).pair_terms(labels, views=1)
    assert plain[0, 4] / plain[0, 1:5].sum() == pytest.approx(1 / 4)
    assert weights[0, 4] / weights[0, 1:5].sum() == pytest.approx(1 / 2)


def test_balanced_weights_rare_labels_by_alpha() -> None:
    labels = torch.tensor([[1, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 1, 0]])
    off = {**OFF, 'pair_weighting': 'balanced'}
    even, _ = MACLLoss(label_frequencies=FREQS, **off).pair_terms(labels, views=1)
    rare, _ = MACLLoss(label_frequencies=FREQS, **{**off, 'alpha': 1.0}).pair_terms(
        labels, views=1
    )
    assert even[0, 1] == even[0, 2]
    # label 3 (frequency 0.05) outweighs label 0 (0.6) by the ratio of frequencies
    assert rare[0, 2] / rare[0, 1] == pytest.approx(0.6 / 0.05)


def test_sum_weighs_the_shared_co_occurrence() -> None:
    labels = torch.tensor([[1, 0, 0, 1, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 0]])
    loss = MACLLoss(label_frequencies=FREQS, **{**OFF, 'pair_weighting': 'sum'})
    weights, _ = loss.pair_terms(labels)
    # alpha = 0: every label weighs 1 and the pair weight is the shared count
    assert weights[0, 1] == 2
    assert weights[0, 2] == 1
    loss = MACLLoss(
        label_frequencies=FREQS, **{**OFF, 'pair_weighting': 'sum', 'alpha': 1.0}
    )
    weights, _ = loss.pair_terms(labels)
    w = loss.label_weights()
    assert weights[0, 1] == pytest.approx(float(w[0] + w[3]))
    assert weights[0, 2] == pytest.approx(float(w[0]))


def test_rare_anchor_counts_more(batch_factory) -> None:
    features, _ = batch_factory(3, 2, 4, len(FREQS), seed=3)
    labels = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 1]])
    loss = MACLLoss(label_frequencies=FREQS, **{**OFF, 'anchor_alpha': 1.0})
    a = loss.anchor_weights(labels.double())
    w = MACLLoss(label_frequencies=FREQS, alpha=1.0).label_weights()
    torch.testing.assert_close(a, torch.stack([w[0], w[4], w[4]]))
    assert torch.all(MACLLoss(**OFF).anchor_weights(labels.double()) == 1)
    # equal anchor weights leave the loss unchanged (they cancel in the mean)
    same = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    torch.testing.assert_close(loss(features, same), MACLLoss(**OFF)(features, same))
    assert loss(features, labels) != MACLLoss(**OFF)(features, labels)


def test_row_temperature_is_uniform_within_a_row() -> None:
    labels = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    )
    loss = MACLLoss(**{**OFF, 'gamma_j': 0.5, 'temperature_mode': 'row'})
    _, tau = loss.pair_terms(labels)
    assert torch.all(tau == tau[:, :1])
    mean_j = (2 / 3 + 1 / 4 + 0) / 3
    assert tau[0, 0] == pytest.approx(0.1 * (1 - 0.5 * mean_j))
    assert tau[3, 0] == pytest.approx(0.1)  # shares nothing with the batch


@pytest.mark.parametrize('v', [1, 2])
def test_balanced_without_rarity_is_mulsupcon_for_equal_label_counts(
    v: int, batch_factory
) -> None:
    # MulSupCon averages one anchor per (image, label); the balanced target splits
    # an image anchor's target evenly between its labels, so the two agree when
    # every image has the same number of labels
    features, _ = batch_factory(10, v, 6, 5, seed=20 + v)
    gen = torch.Generator().manual_seed(v)
    labels = torch.zeros(10, 5, dtype=torch.long)
    for row in labels:
        row[torch.randperm(5, generator=gen)[:2]] = 1
    balanced = {**OFF, 'pair_weighting': 'balanced', 'tau0': 0.2, 'tau_min': 0.01}
    got = MACLLoss(**balanced)(features, labels)
    expected = MulSupConLoss(temperature=0.2)(features, labels)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_tau0_is_the_base_temperature() -> None:
    loss = MACLLoss(tau0=0.2)
    assert loss.tau0 == loss.temperature == 0.2
    with pytest.raises(ValueError, match='MACLLoss: temperatures'):
        MACLLoss(tau0=0.0)
