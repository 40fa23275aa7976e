import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchgeo_macl.samplers import LabelAwareBatch, LabelAwareBatchSampler


def _labels(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Long-tailed multi-hot labels with some unlabelled images."""
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.tensor([0.5, 0.3, 0.15, 0.08, 0.04, 0.02])
    return (torch.rand(n, len(freqs), generator=gen) < freqs).long()


@pytest.mark.parametrize(('batch_size', 'm'), [(16, 2), (24, 3), (17, 2), (10, 4)])
def test_batches_are_full_unique_and_carry_drawn_labels(
    batch_size: int, m: int
) -> None:
    labels = _labels()
    sampler = LabelAwareBatchSampler(labels, batch_size, m=m, sigma=0.5)
    carriers = labels.sum(0)
    batches = list(sampler.batches())
    assert len(batches) == len(sampler) == 600 // batch_size
    for batch in batches:
        assert isinstance(batch, LabelAwareBatch)
        assert len(batch.indices) == batch_size
        assert len(set(batch.indices)) == batch_size
        assert all(0 <= i < 600 for i in batch.indices)
        assert batch.labels
        in_batch = labels[batch.indices].sum(0)
        for label in batch.labels:
            assert in_batch[label] >= min(m, int(carriers[label]))
        for label in batch.partial_labels:
            assert in_batch[label] >= 1
    assert [b.indices for b in batches] == list(sampler)


@pytest.mark.parametrize('sigma', [0.0, 0.5, 1.0])
def test_label_draw_rates_follow_sigma(sigma: float) -> None:
    labels = _labels(n=3000, seed=1)
    sampler = LabelAwareBatchSampler(labels, batch_size=8, m=2, sigma=sigma, seed=3)
    freqs = labels.double().mean(0)
    expected = freqs ** (1 - sigma)
    expected /= expected.sum()
    torch.testing.assert_close(sampler.label_probabilities, expected)
    drawn = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler.batches():
            drawn += batch.labels + batch.partial_labels
    rates = torch.bincount(torch.tensor(drawn), minlength=6).double() / len(drawn)
    assert len(drawn) > 4000
    # about 3 standard deviations of a proportion estimated from 4000 draws
    torch.testing.assert_close(rates, expected, atol=0.025, rtol=0.0)
    if sigma == 1.0:
        assert torch.allclose(expected, torch.full_like(expected, 1 / 6))


def test_same_seed_same_batches_and_epochs_differ() -> None:
    labels = _labels()
    a = LabelAwareBatchSampler(labels, 16, seed=5)
    b = LabelAwareBatchSampler(labels, 16, seed=5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again repeats the epoch
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(LabelAwareBatchSampler(labels, 16, seed=6)) != first
    with pytest.raises(ValueError, match='epoch'):
        a.set_epoch(-1)


def test_ranks_split_the_global_stream() -> None:
    labels = _labels(n=700)
    world = 3
    single = list(LabelAwareBatchSampler(labels, 16, seed=2, num_replicas=1, rank=0))
    per_rank = [
        LabelAwareBatchSampler(labels, 16, seed=2, num_replicas=world, rank=r)
        for r in range(world)
    ]
    streams = [list(s) for s in per_rank]
    for s, stream in zip(per_rank, streams):
        assert len(s) == len(stream) == (700 // 16) // world
    interleaved = [streams[r][i] for i in range(len(streams[0])) for r in range(world)]
    assert interleaved == single[: len(interleaved)]
    as_sets = [{tuple(sorted(b)) for b in stream} for stream in streams]
    for r in range(world):
        for q in range(r + 1, world):
            assert not as_sets[r] & as_sets[q]
    for s in per_rank:
        s.set_epoch(4)
    assert [next(iter(s)) for s in per_rank] != [stream[0] for stream in streams]


def test_unlabelled_images_fill_only_when_needed() -> None:
    labels = torch.zeros(100, 3, dtype=torch.long)
    labels[:40, 0] = 1
    labels[40:60, 1] = 1
    sampler = LabelAwareBatchSampler(labels, 20, m=2)
    for indices in sampler:
        assert max(indices) < 60
    # 12 labelled images cannot fill a batch of 20: the rest are unlabelled
    few = torch.zeros(60, 3, dtype=torch.long)
    few[:12, 2] = 1
    for batch in LabelAwareBatchSampler(few, 20, m=2).batches():
        chosen = torch.tensor(batch.indices)
        assert int((chosen < 12).sum()) == 12
        assert len(set(batch.indices)) == 20


def test_labels_without_carriers_are_never_drawn() -> None:
    labels = _labels()
    labels[:, 3] = 0
    sampler = LabelAwareBatchSampler(labels, 16)
    assert sampler.label_probabilities[3] == 0
    assert all(3 not in b.labels + b.partial_labels for b in sampler.batches())


def test_rare_label_with_fewer_than_m_carriers() -> None:
    labels = _labels()
    labels[:, 5] = 0
    labels[7, 5] = 1  # a single carrier
    sampler = LabelAwareBatchSampler(labels, 16, m=3, sigma=1.0)
    seen = False
    for batch in sampler.batches():
        if 5 in batch.labels:
            seen = True
            assert 7 in batch.indices
    assert seen


def test_works_with_dataloader_and_numpy_labels() -> None:
    labels = _labels(n=200).numpy()
    dataset = TensorDataset(torch.arange(200))
    sampler = LabelAwareBatchSampler(labels, 32, m=4, sigma=0.0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    batches = [b[0] for b in loader]
    assert len(batches) == 6
    assert all(b.shape == (32,) for b in batches)
    assert sampler.num_replicas == 1
    assert sampler.rank == 0
    bools = LabelAwareBatchSampler(np.asarray(labels, dtype=bool), 32, m=4, sigma=0.0)
    assert list(bools) == list(sampler)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'labels': torch.ones(10)}, r'\[N, C\]'),
        ({'labels': torch.full((10, 2), 2)}, 'binary'),
        ({'labels': torch.zeros(10, 2)}, 'at least one positive'),
        ({'m': 0}, 'm must'),
        ({'batch_size': 1, 'm': 2}, 'batch_size'),
        ({'sigma': 1.5}, 'sigma'),
        ({'sigma': -0.1}, 'sigma'),
        ({'seed': -1}, 'seed'),
        ({'num_replicas': 0}, 'num_replicas'),
        ({'num_replicas': 2, 'rank': 2}, 'rank'),
        ({'batch_size': 64}, 'no batch'),
        ({'batch_size': 8, 'num_replicas': 8, 'rank': 0}, 'no batch'),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {'labels': _labels(n=50), 'batch_size': 8}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LabelAwareBatchSampler(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize('carriers', [40, 1000])
def test_carriers_are_drawn_uniformly(carriers: int) -> None:
    # 40 carriers: a permutation of the free ones; 1000 (more than 4 batches):
    # rejection sampling
    labels = torch.zeros(4000, 2, dtype=torch.long)
    labels[:carriers, 0] = 1
    labels[carriers:, 1] = 1
    sampler = LabelAwareBatchSampler(labels, 8, m=2, sigma=1.0, seed=5)
    counts = torch.zeros(4000)
    for epoch in range(8):
        sampler.set_epoch(epoch)
        for indices in sampler:
            counts[indices] += 1
    first = counts[:carriers]
    # each carrier of label 0 is picked about equally often (within 5 standard
    # deviations of a binomial count)
    mean = float(first.mean())
    assert mean > 10
    assert float((first - mean).abs().max()) < 5 * mean**0.5 + 1
