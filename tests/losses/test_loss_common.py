import pytest
import torch
from torch import nn

from torchgeo_macl.losses import (
    LOSSES,
    ContrastiveLossBase,
    JaccardSupConLoss,
    MACLLoss,
    MulSupConLoss,
    NTXentLoss,
    SupConLoss,
    check_label_frequencies,
    gather_with_grad,
    get_loss,
)

FREQS = [0.5, 0.3, 0.2, 0.1]
NAMES = ['macl', 'supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent']


def make(name: str, **kwargs: object) -> ContrastiveLossBase:
    return get_loss(name, label_frequencies=FREQS, **kwargs)


def test_registry() -> None:
    assert sorted(LOSSES) == sorted(NAMES)
    expected = {
        'macl': MACLLoss,
        'supcon': SupConLoss,
        'jaccard_supcon': JaccardSupConLoss,
        'mulsupcon': MulSupConLoss,
        'ntxent': NTXentLoss,
    }
    for name, cls in expected.items():
        assert LOSSES[name] is cls
        assert isinstance(get_loss(name), cls)
        assert isinstance(get_loss(name), nn.Module)
    assert isinstance(get_loss('Jaccard-SupCon'), JaccardSupConLoss)
    assert get_loss('supcon', temperature=0.3).temperature == 0.3
    with pytest.raises(ValueError, match='Unknown loss'):
        get_loss('bce')
    with pytest.raises(TypeError):
        get_loss('supcon', alpha=1.0)


@pytest.mark.parametrize('name', NAMES)
def test_permutation_invariance(name: str, batch_factory) -> None:
    features, labels = batch_factory(10, 2, 6, 4, p=0.4, seed=7)
    loss = make(name)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    view_perm = torch.tensor([1, 0])
    a = loss(features, labels)
    b = loss(features[perm][:, view_perm], labels[perm])
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def _edge_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    rand = torch.randn(6, 2, 5, generator=gen)
    return {
        'only_own_views': (rand, torch.eye(6, 4, dtype=torch.long)),
        'no_positive_at_all': (rand[:, :1], torch.eye(6, 4, dtype=torch.long)),
        'unlabelled_image': (rand, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]] * 3)),
        'all_unlabelled': (rand, torch.zeros(6, 4, dtype=torch.long)),
        'identical_embeddings': (torch.ones(6, 2, 5), torch.tensor([[1, 1, 0, 0]] * 6)),
        'zero_embeddings': (torch.zeros(6, 2, 5), torch.tensor([[1, 0, 0, 1]] * 6)),
        'one_image_one_view': (rand[:1, :1], torch.tensor([[1, 0, 1, 0]])),
        'one_image_two_views': (rand[:1], torch.tensor([[0, 1, 0, 0]])),
        'huge_features': (rand * 1e30, torch.tensor([[1, 0, 0, 1]] * 6)),
        'tiny_features': (rand * 1e-30, torch.tensor([[1, 0, 0, 1]] * 6)),
    }


@pytest.mark.parametrize('case', list(_edge_cases()))
@pytest.mark.parametrize('name', NAMES)
def test_edge_cases_are_finite(name: str, case: str) -> None:
    features, labels = _edge_cases()[case]
    features = features.clone().requires_grad_(True)
    loss = make(name)(features, labels)
    loss.backward()
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    assert features.grad is not None
    assert torch.isfinite(features.grad).all()


@pytest.mark.parametrize('name', NAMES)
def test_no_positive_gives_zero(name: str) -> None:
    features = torch.randn(5, 1, 3, requires_grad=True)
    loss = make(name)(features, torch.eye(5, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0
    assert features.grad is not None


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('name', NAMES)
def test_low_precision_and_autocast(
    name: str, dtype: torch.dtype, batch_factory
) -> None:
    features, labels = batch_factory(8, 2, 6, 4, p=0.4)
    layer = nn.Linear(6, 6).double()
    loss_fn = make(name)
    reference = loss_fn(layer(features), labels)
    with torch.autocast('cpu', dtype=dtype):
        out = layer.float()(features.float())
        assert out.dtype == dtype
        loss = loss_fn(out, labels)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None
    )
    torch.testing.assert_close(loss.double(), reference.detach(), atol=0.1, rtol=0.05)
    low = features.to(dtype).requires_grad_(True)
    value = loss_fn(low, labels)
    value.backward()
    assert value.dtype == torch.float32
    assert low.grad is not None
    assert low.grad.dtype == dtype
    assert torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize('name', NAMES)
def test_bad_inputs(name: str) -> None:
    loss = make(name)
    features = torch.randn(3, 2, 5)
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match='4 entries'):
        loss(features, torch.ones(3, 5))
    with pytest.raises(ValueError, match='binary'):
        loss(features, labels * 2)
    with pytest.raises(ValueError, match='binary'):
        loss(features, labels.float().fill_(float('nan')))
    with pytest.raises(ValueError, match='NaN'):
        loss(features.clone().fill_(float('nan')), labels)
    with pytest.raises(ValueError, match='NaN or infinite'):
        loss(torch.full((3, 2, 5), float('inf')), labels)
    with pytest.raises(ValueError, match=r'\[B, V, D\]'):
        loss(features[:, 0], labels)
    with pytest.raises(ValueError, match=r'\[B, C\]'):
        loss(features, labels[:, 0])
    with pytest.raises(ValueError, match=r'\[B, C\]'):
        loss(features, labels[None])
    with pytest.raises(ValueError, match='3 images but labels hold 2'):
        loss(features, labels[:2])
    with pytest.raises(TypeError, match='floating point'):
        loss(features.long(), labels)
    with pytest.raises(ValueError, match='empty'):
        loss(features[:0], labels[:0])
    with pytest.raises(TypeError, match='tensors'):
        loss(features.numpy(), labels)  # type: ignore[arg-type]


@pytest.mark.parametrize('name', NAMES)
def test_label_dtypes_agree(name: str, batch_factory) -> None:
    features, labels = batch_factory(6, 2, 4, 4, p=0.5, seed=3)
    loss = make(name)
    ref = loss(features, labels)
    for converted in (labels.bool(), labels.float(), labels.to(torch.uint8)):
        torch.testing.assert_close(loss(features, converted), ref)


def test_set_label_frequencies() -> None:
    loss = SupConLoss()
    assert loss.num_classes is None
    loss.set_label_frequencies(torch.tensor([0.5, 0.25]))
    assert loss.num_classes == 2
    assert loss.label_frequencies is not None
    assert loss.label_frequencies.dtype == torch.float64
    assert 'label_frequencies' not in loss.state_dict()
    for bad, match in [
        ([0.5, 0.0], r'\(0, 1\].*\[1\]'),
        ([1.5], r'\(0, 1\]'),
        ([float('nan'), 0.2], r'\(0, 1\]'),
        ([], 'non-empty'),
        ([[0.5]], '1-D'),
    ]:
        with pytest.raises(ValueError, match=match):
            check_label_frequencies(bad)
        with pytest.raises(ValueError, match=match):
            MACLLoss(label_frequencies=bad)


@pytest.mark.parametrize('name', NAMES)
def test_scale_invariance(name: str, batch_factory) -> None:
    features, labels = batch_factory(6, 2, 4, 4, p=0.5, seed=8)
    loss = make(name)
    ref = loss(features, labels)
    for scale in (1e-30, 1e30):
        got = loss(features.float() * scale, labels).double()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    gathered, offset = gather_with_grad(x)
    assert gathered is x
    assert offset == 0
    features, labels = torch.randn(4, 2, 3), torch.eye(4, dtype=torch.long)
    for name in NAMES:
        a = make(name, gather_distributed=True)(features, labels)
        b = make(name)(features, labels)
        assert a == b


@pytest.mark.parametrize('name', ['supcon', 'jaccard_supcon', 'mulsupcon', 'ntxent'])
@pytest.mark.parametrize('value', [0.0, -0.1, float('inf'), float('nan')])
def test_temperature_must_be_finite_and_positive(name: str, value: float) -> None:
    with pytest.raises(
        ValueError, match=f'temperature must be finite and > 0, got {value}'
    ):
        make(name, temperature=value)
    assert make(name, temperature=0.3).temperature == 0.3  # type: ignore[attr-defined]
