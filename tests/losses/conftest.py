"""Slow reference implementations of the losses, written from their formulas.

They loop over anchors and pairs in plain Python (float64) and share no code with
the package, so they are independent oracles for the vectorised losses.
"""

import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F


def _sets(labels: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row).flatten().tolist()) for row in labels]


def _unit(features: torch.Tensor) -> list[list[float]]:
    b, v, d = features.shape
    z = F.normalize(features.double(), dim=-1).reshape(b * v, d)
    return z.tolist()


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def macl_reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    freqs: Sequence[float] | None,
    *,
    alpha: float,
    w_max: float,
    beta: float,
    tau0: float,
    gamma_j: float,
    gamma_rho: float,
    tau_min: float,
    tau_max: float,
    kappa: float,
    pair_weighting: str = 'mean',
    anchor_alpha: float = 0.0,
    temperature_mode: str = 'pair',
) -> float:
    """MACL as written in DESIGN.md section 5 and the MACLLoss docstring."""
    b, v, _ = features.shape
    z = _unit(features)
    sets = _sets(labels)
    c = labels.shape[1]
    f = [0.5] * c if freqs is None else [float(x) for x in freqs]
    log_f = [math.log(x) for x in f]
    geo_mean = math.exp(sum(log_f) / c)
    w = [min(max((geo_mean / x) ** alpha, 1 / w_max), w_max) for x in f]
    lo, hi = min(log_f), max(log_f)
    rarity = [(hi - x) / (hi - lo) if hi > lo else 0.0 for x in log_f]

    def jaccard(i: int, j: int) -> float:
        if i == j:
            return 1.0
        union = sets[i] | sets[j]
        return len(sets[i] & sets[j]) / len(union) if union else 0.0

    def clipped(exponent: float, k: int) -> float:
        return min(max((geo_mean / f[k]) ** exponent, 1 / w_max), w_max)

    def omega(i: int, j: int, carriers: dict[int, int]) -> float:
        shared = sets[i] & sets[j]
        if not shared:
            return 1.0
        if pair_weighting == 'balanced':
            return sum(w[k] / carriers[k] for k in shared)
        total = sum(w[k] for k in shared)
        return total / len(shared) if pair_weighting == 'mean' else total

    def mean_jaccard(i: int) -> float:
        return sum(jaccard(i, j) for j in range(b) if j != i) / max(b - 1, 1)

    losses, counts = [], []
    for a in range(b * v):
        i = a // v
        rho = max((rarity[k] for k in sets[i]), default=0.0)

        def tau(j: int, i: int = i, rho: float = rho) -> float:
            overlap = mean_jaccard(i) if temperature_mode == 'row' else jaccard(i, j)
            t = tau0 * (1 - gamma_j * overlap) * (1 - gamma_rho * rho)
            return min(max(t, tau_min), tau_max)

        others = [o for o in range(b * v) if o != a]
        log_den = math.log(
            sum(math.exp(_dot(z[a], z[o]) / tau(o // v)) for o in others)
        )
        positives = [
            p
            for p in others
            if p // v == i or (sets[i] & sets[p // v] and jaccard(i, p // v) >= kappa)
        ]
        if not positives:
            continue
        carriers = {k: sum(k in sets[p // v] for p in positives) for k in sets[i]}

        def weight(p: int, i: int = i, carriers: dict[int, int] = carriers) -> float:
            return omega(i, p // v, carriers) * jaccard(i, p // v) ** beta

        total = sum(weight(p) for p in positives)
        anchor = max((clipped(anchor_alpha, k) for k in sets[i]), default=1.0)
        losses.append(
            -anchor
            * sum(
                weight(p) / total * (_dot(z[a], z[p]) / tau(p // v) - log_den)
                for p in positives
            )
        )
        counts.append(anchor)
    return sum(losses) / sum(counts) if losses else 0.0


def _fixed_temperature_anchors(
    features: torch.Tensor, tau: float
) -> Iterator[tuple[int, list[int], Callable[[int], float]]]:
    """Every anchor view, its other views and its log-softmax at temperature tau."""
    b, v, _ = features.shape
    z = _unit(features)
    for a in range(b * v):
        others = [o for o in range(b * v) if o != a]
        log_den = math.log(sum(math.exp(_dot(z[a], z[o]) / tau) for o in others))

        def log_prob(p: int, a: int = a, log_den: float = log_den) -> float:
            return _dot(z[a], z[p]) / tau - log_den

        yield a, others, log_prob


def mulsupcon_reference(
    features: torch.Tensor, labels: torch.Tensor, tau: float
) -> float:
    """MulSupCon: mean over (view, label) anchors of -mean_p log softmax."""
    v = features.shape[1]
    sets = _sets(labels)
    losses = []
    for a, others, log_prob in _fixed_temperature_anchors(features, tau):
        for label in sorted(sets[a // v]):
            positives = [p for p in others if label in sets[p // v]]
            if not positives:
                continue
            losses.append(-sum(log_prob(p) for p in positives) / len(positives))
    return sum(losses) / len(losses) if losses else 0.0


def jaccard_supcon_reference(
    features: torch.Tensor, labels: torch.Tensor, tau: float, threshold: float
) -> float:
    """Jaccard-weighted SupCon: positives J >= threshold (J > 0), weights J."""
    v = features.shape[1]
    sets = _sets(labels)
    losses = []
    for a, others, log_prob in _fixed_temperature_anchors(features, tau):
        i = a // v
        weights = {}
        for p in others:
            j = p // v
            if j == i:
                weights[p] = 1.0
                continue
            union = sets[i] | sets[j]
            jac = len(sets[i] & sets[j]) / len(union) if union else 0.0
            if jac > 0 and jac >= threshold:
                weights[p] = jac
        if not weights:
            continue
        total = sum(weights.values())
        losses.append(-sum(wp / total * log_prob(p) for p, wp in weights.items()))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.fixture
def macl_ref() -> Callable[..., float]:
    return macl_reference


@pytest.fixture
def mulsupcon_ref() -> Callable[..., float]:
    return mulsupcon_reference


@pytest.fixture
def jaccard_ref() -> Callable[..., float]:
    return jaccard_supcon_reference


def random_batch(
    b: int, v: int, d: int, c: int, p: float = 0.35, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 features [b, v, d] and multi-hot labels [b, c] (some rows empty)."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, v, d, generator=gen, dtype=torch.float64)
    labels = (torch.rand(b, c, generator=gen) < p).long()
    return features, labels


@pytest.fixture
def batch_factory() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return random_batch
