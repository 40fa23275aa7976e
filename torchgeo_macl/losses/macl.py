"""Multi-label adaptive contrastive loss (MACL)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ContrastiveBatch, LabelFrequencies
from .registry import register_loss
from .utils import label_overlap
from .weighted_supcon import PairTerms, WeightedSupConLoss

__all__ = ('MACLLoss',)

#: Ways of turning label weights into pair weights.
PAIR_WEIGHTINGS = ('mean', 'sum', 'balanced')
#: Ways of applying the overlap term of the dynamic temperature.
TEMPERATURE_MODES = ('pair', 'row')


@register_loss('macl')
class MACLLoss(WeightedSupConLoss):
    r"""Multi-label adaptive contrastive loss (MACL).

    MACL (Amir & Aptoula, "Multi-Label Adaptive Contrastive Learning", arXiv
    2512.16294; v2 titled "MARC: Multi-Label Adaptive Retrieval Contrastive Loss")
    extends supervised contrastive learning to multi-label data with
    frequency-sensitive pair reweighting, positives graded by label overlap and a
    dynamic temperature. The authors published a description but no code: **the
    formulation below is this project's reconstruction from that description**, not
    the authors' implementation. This is also *not* lightly's ``MACLLoss``
    (Model-Aware Contrastive Learning), an unrelated self-supervised loss.

    Notation: ``N = B * V`` anchors (``V`` views of ``B`` images), ``z`` normalised,
    :math:`s_{ia} = z_i \cdot z_a`, multi-hot labels ``y``, :math:`O = y y^\top`
    (shared labels), :math:`J_{ij} = O_{ij} / |y_i \cup y_j|` (Jaccard; 0 when both
    label sets are empty), ``f_c`` = fraction of *training* images carrying label
    ``c`` (:meth:`set_label_frequencies`; not the batch's).

    * **Positives** :math:`P(i)`: the other views of the anchor's image, and every
      view ``j`` of another image with :math:`O_{ij} > 0` and :math:`J_{ij} \ge \kappa`.
    * **Pair reweighting by label rarity** (``alpha``, ``w_max``,
      ``pair_weighting``): label weights :math:`w_c = \mathrm{clip}((\bar f /
      f_c)^\alpha, 1/w_{max}, w_{max})` with :math:`\bar f` the geometric mean of
      ``f``. With ``pair_weighting='balanced'`` (the default) every label ``c`` of the
      anchor gets a share of the anchor's target proportional to :math:`w_c`, split
      evenly between the :math:`n_{ic}` positive views that carry it:
      :math:`\omega_{ij} = \sum_{c \in y_i \cap y_j} w_c / n_{ic}`. A rare label
      therefore keeps its share however few images carry it, instead of being
      outvoted by the frequent labels the anchor shares with most of the batch.
      ``'mean'`` weighs a pair by the mean weight of the labels it shares,
      :math:`\omega_{ij} = ((y \odot w) y^\top)_{ij} / O_{ij}`; ``'sum'`` by the
      summed weight of its shared labels (the weight of the shared co-occurrence),
      :math:`\omega_{ij} = ((y \odot w) y^\top)_{ij}`.
    * **Graded overlap** (``beta``): :math:`g_{ij} = J_{ij}^\beta` (``beta = 1`` is
      the weighted variant).
    * **Dynamic temperature** (``tau0``, ``gamma_j``, ``gamma_rho``, ``tau_min``,
      ``tau_max``, ``temperature_mode``): anchor rarity :math:`\rho_i = \max_{c \in
      y_i} r_c` with :math:`r_c = (\log f_{max} - \log f_c) / (\log f_{max} - \log
      f_{min})`, the log inverse frequency rescaled to ``[0, 1]`` over the classes
      (0 for the most frequent label, 1 for the rarest, 0 for an image with no
      labels, all 0 when every frequency is equal).
      :math:`\tau_{ij} = \mathrm{clamp}(\tau_0 (1 - \gamma_J J_{ij}) (1 -
      \gamma_\rho \rho_i), \tau_{min}, \tau_{max})` for every pair, positive or not:
      more shared labels and rarer anchors get sharper similarities. With
      ``temperature_mode='row'`` the overlap term uses the anchor's mean Jaccard
      index with the other images of the batch, :math:`\bar J_i`, so the
      temperature is uniform within an anchor's row.
    * **Anchor weighting** (``anchor_alpha``): the loss of anchor ``i`` is weighted by
      :math:`a_i = \max_{c \in y_i} \mathrm{clip}((\bar f / f_c)^{\alpha_a},
      1/w_{max}, w_{max})` (1 without labels) in the mean over anchors.
    * **Own views** always are positives with :math:`J = 1` (identical label sets,
      also for an image without labels), so :math:`g = 1`; their pair weight follows
      the same rule (1 for an image without labels), and :math:`\tau =
      \mathrm{clamp}(\tau_0 (1 - \gamma_J) (1 - \gamma_\rho\rho_i))`.

    .. math::

        \ell_i = -\sum_{p \in P(i)} \pi_{ip} \log
            \frac{\exp(s_{ip}/\tau_{ip})}{\sum_{a \ne i} \exp(s_{ia}/\tau_{ia})},
        \qquad \pi_{ip} = \frac{\omega_{ip} g_{ip}}{\sum_{q \in P(i)} \omega_{iq} g_{iq}}

    and the loss is the :math:`a`-weighted mean of :math:`\ell_i` over the anchors
    that have a positive (zero when none has). Each component has its switch:
    ``pair_weighting='mean'`` with ``alpha=0`` (no reweighting), ``beta=0``
    (ungraded), ``gamma_j=gamma_rho=0`` (fixed temperature ``tau0``), ``kappa=0``
    (any shared label is positive), ``anchor_alpha=0`` (anchors alike). With all of
    them off the loss equals :class:`~torchgeo_macl.losses.SupConLoss` at
    temperature ``tau0``. With ``pair_weighting='balanced'``, ``alpha=0`` and the
    rest off it is MulSupCon's per-label target averaged per image (equal to
    :class:`~torchgeo_macl.losses.MulSupConLoss` when every image has as many
    labels).

    All label quantities are ``B x B`` (and ``B x C``) matrix products (no
    ``N x N x C`` tensor); the extra memory over SupCon is ``O(B^2)``. The defaults
    (balanced pair weighting with ``alpha=1``, ``beta=1``, ``gamma_rho=0.3``,
    ``gamma_j=0``, no anchor weighting) were chosen on validation images of ML-AID
    carved from its training folder (README, "Experiments and results"), where
    each reading of the paper's description was compared. The overlap term of the
    dynamic temperature is off by default: with per-pair temperatures in the
    denominator the sharper high-overlap pairs dominate the softmax and push
    similar images apart.

    Call it as ``loss(features [B, V, D], labels [B, C])``; see
    :mod:`torchgeo_macl.losses.base` for normalisation, precision and the
    distributed semantics.
    """

    def __init__(
        self,
        *,
        label_frequencies: LabelFrequencies | None = None,
        alpha: float = 1.0,
        w_max: float = 10.0,
        beta: float = 1.0,
        tau0: float = 0.1,
        gamma_j: float = 0.0,
        gamma_rho: float = 0.3,
        tau_min: float = 0.03,
        tau_max: float = 0.5,
        kappa: float = 0.0,
        pair_weighting: str = 'balanced',
        anchor_alpha: float = 0.0,
        temperature_mode: str = 'pair',
        gather_distributed: bool = False,
        validate_args: bool = True,
    ) -> None:
        """Initialise the loss.

        Args:
            label_frequencies: Fraction of training images carrying each label
                (length ``C``, each in ``(0, 1]``). Needed when ``alpha > 0`` or
                ``gamma_rho > 0``; may be given later with
                :meth:`set_label_frequencies`.
            alpha: Exponent of the label-rarity weights (>= 0; 0 weighs every
                label alike). Default 1.
            w_max: Label weights are clipped to ``[1 / w_max, w_max]`` (>= 1).
                Default 10.
            beta: Exponent of the graded overlap ``J ** beta`` (>= 0; 0 disables
                grading, 1 is the weighted variant). Default 1.
            tau0: Base temperature (> 0); the temperature of every pair when the
                dynamic temperature is off. Default 0.1.
            gamma_j: Strength of the overlap term of the dynamic temperature, in
                ``[0, 1]`` (0 disables it). Default 0.
            gamma_rho: Strength of the anchor-rarity term of the dynamic
                temperature, in ``[0, 1]`` (0 disables it). Default 0.3.
            tau_min: Lower clamp of the pair temperature (> 0). Default 0.03.
            tau_max: Upper clamp of the pair temperature. Default 0.5.
            kappa: Smallest Jaccard index of a positive pair of different images,
                in ``[0, 1]`` (0: any shared label). Default 0.
            pair_weighting: How the label weights make the pair weight
                ``omega``: ``'mean'`` over the shared labels, ``'sum'`` over
                the shared labels (the weight of the shared co-occurrence), or
                ``'balanced'`` (each label of the anchor gets a target share
                proportional to its weight, split between the positives that
                carry it). Default ``'balanced'``.
            anchor_alpha: Exponent of the anchor weights (>= 0; 0 weighs every
                anchor alike): the loss of an anchor is weighted by the largest
                label weight of its image computed with this exponent.
            temperature_mode: ``'pair'``: the overlap term of the dynamic
                temperature uses the Jaccard index of each pair; ``'row'``: it uses
                the anchor's mean Jaccard index with the other images of the
                batch, so that the temperature is uniform within an anchor's row.
            gather_distributed: Compute the loss on the batch gathered from every
                rank (see :mod:`torchgeo_macl.losses.base`).
            validate_args: Check the values of the inputs on every call (see
                :class:`~torchgeo_macl.losses.ContrastiveLossBase`).

        Raises:
            ValueError: If a parameter is out of range, ``tau0`` is not within
                ``[tau_min, tau_max]``, or ``label_frequencies`` is invalid.
        """
        values = {
            'alpha': alpha,
            'w_max': w_max,
            'beta': beta,
            'tau0': tau0,
            'gamma_j': gamma_j,
            'gamma_rho': gamma_rho,
            'tau_min': tau_min,
            'tau_max': tau_max,
            'kappa': kappa,
        }
        checks = {
            'every parameter must be finite': all(
                math.isfinite(x) for x in values.values()
            ),
            'alpha must be >= 0': alpha >= 0,
            'w_max must be >= 1': w_max >= 1,
            'beta must be >= 0': beta >= 0,
            'gamma_j must lie in [0, 1]': 0 <= gamma_j <= 1,
            'gamma_rho must lie in [0, 1]': 0 <= gamma_rho <= 1,
            'kappa must lie in [0, 1]': 0 <= kappa <= 1,
            'temperatures must satisfy 0 < tau_min <= tau0 <= tau_max': (
                0 < tau_min <= tau0 <= tau_max
            ),
        }
        checks['anchor_alpha must be finite and >= 0'] = (
            math.isfinite(anchor_alpha) and anchor_alpha >= 0
        )
        checks[f'pair_weighting must be one of {PAIR_WEIGHTINGS}'] = (
            pair_weighting in PAIR_WEIGHTINGS
        )
        checks[f'temperature_mode must be one of {TEMPERATURE_MODES}'] = (
            temperature_mode in TEMPERATURE_MODES
        )
        for message, ok in checks.items():
            if not ok:
                shown = ', '.join(
                    f'{k}={v!r}'
                    for k, v in {
                        **values,
                        'pair_weighting': pair_weighting,
                        'anchor_alpha': anchor_alpha,
                        'temperature_mode': temperature_mode,
                    }.items()
                )
                raise ValueError(f'MACLLoss: {message}; got {shown}')
        super().__init__(
            tau0,
            label_frequencies=label_frequencies,
            gather_distributed=gather_distributed,
            validate_args=validate_args,
        )
        self.alpha = float(alpha)
        self.w_max = float(w_max)
        self.beta = float(beta)
        self.gamma_j = float(gamma_j)
        self.gamma_rho = float(gamma_rho)
        self.tau_min = float(tau_min)
        self.tau_max = float(tau_max)
        self.kappa = float(kappa)
        self.pair_weighting = pair_weighting
        self.anchor_alpha = float(anchor_alpha)
        self.temperature_mode = temperature_mode

    @property
    def tau0(self) -> float:
        """Base temperature: the temperature of every pair without the dynamic one."""
        return self.temperature

    def _frequencies(self) -> Tensor:
        if self.label_frequencies is None:
            raise ValueError(
                'MACLLoss needs the label frequencies of the training split when '
                f'alpha, anchor_alpha or gamma_rho > 0 (alpha={self.alpha}, '
                f'anchor_alpha={self.anchor_alpha}, gamma_rho={self.gamma_rho}): pass label_frequencies=... to the '
                'constructor or call set_label_frequencies(...) before the first '
                'forward pass'
            )
        return self.label_frequencies

    def label_weights(self) -> Tensor:
        r"""Per-label pair weights :math:`w_c` (all ones when ``alpha = 0``).

        Returns:
            Float64 tensor ``[C]``.

        Raises:
            ValueError: If the label frequencies are unknown.
        """
        return self._label_weights(self.alpha)

    def _label_weights(self, exponent: float) -> Tensor:
        log_f = self._frequencies().log()
        w = (exponent * (log_f.mean() - log_f)).exp()
        return w.clamp(1 / self.w_max, self.w_max)

    def anchor_weights(self, labels: Tensor) -> Tensor:
        """Weight of every image as an anchor (all ones when ``anchor_alpha = 0``).

        Args:
            labels: Multi-hot labels ``[B, C]`` (0/1, floating point).

        Returns:
            ``[B]``: the largest label weight of each image computed with the
            exponent ``anchor_alpha`` (1 for an image without labels).

        Raises:
            ValueError: If the label frequencies are needed and unknown.
        """
        if self.anchor_alpha == 0:
            return torch.ones_like(labels[:, 0])
        w = self._label_weights(self.anchor_alpha).to(labels.device, labels.dtype)
        return torch.where(labels.sum(1) > 0, (labels * w).amax(dim=1), 1.0)

    def label_rarity(self) -> Tensor:
        r"""Per-label rarity :math:`r_c \in [0, 1]` used by the dynamic temperature.

        Returns:
            Float64 tensor ``[C]``: 0 for the most frequent label, 1 for the rarest.

        Raises:
            ValueError: If the label frequencies are unknown.
        """
        log_f = self._frequencies().log()
        spread = log_f.max() - log_f.min()
        # equal frequencies: the numerator is 0 everywhere; no branch on a device value
        return (log_f.max() - log_f) / torch.where(spread > 0, spread, 1.0)

    def _balanced(
        self, y: Tensor, y_all: Tensor, positive: Tensor, own: Tensor, views: int
    ) -> Tensor:
        """Pair weights that give each label of the anchor its own target share.

        Label ``c`` of anchor image ``i`` gets the share ``w_c`` (1 when
        ``alpha = 0``), split evenly between the ``n_ic`` positive views that carry
        ``c``: ``omega_ij = sum_{c in y_i & y_j} w_c / n_ic``. An image without
        labels keeps weight 1 on its own other views.

        Args:
            y: Local labels ``[B, C]``.
            y_all: Global labels ``[Bg, C]``.
            positive: Positive image pairs as 0/1 ``[B, Bg]``.
            own: Own-image mask ``[B, Bg]``.
            views: Views per image.

        Returns:
            ``[B, Bg]`` (only entries of positive pairs are meaningful).
        """
        # positive views carrying each label, the anchor itself left out
        carriers = views * (positive @ y_all) - y
        share = y
        if self.alpha > 0:
            share = share * self.label_weights().to(y.device, y.dtype)
        share = torch.where(carriers > 0, share / carriers.clamp_min(1), 0.0)
        omega = share @ y_all.T
        return torch.where(own & (y.sum(1) == 0)[:, None], 1.0, omega)

    def _image_pair_terms(
        self, y: Tensor, y_all: Tensor, own: Tensor, views: int = 2
    ) -> tuple[Tensor, Tensor | float]:
        """Positive weights and inverse temperatures of the image pairs.

        Args:
            y: Local labels ``[B, C]`` (0/1, floating point).
            y_all: Global labels ``[Bg, C]``.
            own: Own-image mask ``[B, Bg]``.
            views: Views per image (used by ``pair_weighting='balanced'``).

        Returns:
            ``omega * g`` on positive pairs and 0 elsewhere ``[B, Bg]``, and the
            inverse pair temperature (``[B, Bg]``, or a float when the dynamic
            temperature is off).
        """
        dtype, device = y.dtype, y.device
        overlap, jaccard = label_overlap(y, y_all, own)
        positive = own | (overlap > 0)
        if self.kappa > 0:
            positive = positive & ((jaccard >= self.kappa) | own)
        weights = positive.to(dtype)
        if self.pair_weighting == 'balanced':
            weights = weights * self._balanced(y, y_all, weights, own, views)
        elif self.alpha > 0 or self.pair_weighting == 'sum':
            w = self.label_weights().to(device, dtype) if self.alpha > 0 else 1.0
            shared = (y * w) @ y_all.T
            if self.pair_weighting == 'mean':
                shared = shared / overlap.clamp_min(1)
            weights = weights * torch.where(overlap > 0, shared, 1.0)
        if self.beta > 0:
            weights = weights * jaccard.pow(self.beta)
        if self.gamma_j == 0 and self.gamma_rho == 0:
            return weights, 1 / self.tau0
        tau = torch.full_like(jaccard, self.tau0)
        if self.gamma_j > 0:
            if self.temperature_mode == 'row':
                others = (~own).sum(1).clamp_min(1)
                mean_j = jaccard.masked_fill(own, 0.0).sum(1) / others
                tau = tau * (1 - self.gamma_j * mean_j)[:, None]
            else:
                tau = tau * (1 - self.gamma_j * jaccard)
        if self.gamma_rho > 0:
            r = self.label_rarity().to(device, dtype)
            rho = (y * r).amax(dim=1)
            tau = tau * (1 - self.gamma_rho * rho)[:, None]
        return weights, 1 / tau.clamp(self.tau_min, self.tau_max)

    def pair_terms(self, labels: Tensor, views: int = 2) -> tuple[Tensor, Tensor]:
        r"""Positive weights and temperatures of every pair of images of a batch.

        Useful to inspect what the loss does with a batch of labels.

        Args:
            labels: Multi-hot labels ``[B, C]``.
            views: Views per image (the balanced pair weights depend on it).

        Returns:
            ``weights`` ``[B, B]``: :math:`\omega_{ij} g_{ij}` where ``j`` is a
            positive of ``i`` (the diagonal is the weight of an image's own other
            views), 0 elsewhere; and ``tau`` ``[B, B]``: the pair temperatures
            :math:`\tau_{ij}` (the diagonal is the own-view temperature). Float64.

        Raises:
            ValueError: If ``labels`` is not a binary ``[B, C]`` tensor, its width
                disagrees with the label frequencies, or the frequencies are
                needed and unknown.
        """
        labels = torch.as_tensor(labels)
        features = torch.zeros(labels.shape[0], 1, 1, dtype=torch.float64)
        self._check(features, labels, values=True)
        y = labels.detach().to('cpu', torch.float64)
        own = torch.eye(y.shape[0], dtype=torch.bool)
        weights, inv_temp = self._image_pair_terms(y, y, own, views)
        return weights, (1 / torch.as_tensor(inv_temp, dtype=torch.float64)).expand_as(
            weights
        )

    def _pair_terms(self, batch: ContrastiveBatch) -> PairTerms:
        weights, inv_temp = self._image_pair_terms(
            batch.y, batch.y_all, batch.own, batch.views
        )
        anchors = self.anchor_weights(batch.y) if self.anchor_alpha > 0 else None
        return PairTerms(weights, inv_temp, anchors)
