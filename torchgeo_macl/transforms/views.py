"""Two-view augmentation for contrastive training, made on the device with kornia."""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from ..datasets.masks import labels_from_pixel_counts


def labels_from_masks(
    mask: Tensor, num_classes: int, min_pixel_fraction: float = 0.0
) -> Tensor:
    """Derive multi-hot labels from a batch of class-index masks.

    Label ``c`` is present when its pixel fraction is at least ``min_pixel_fraction``
    (and, for ``min_pixel_fraction == 0``, when at least one pixel carries it).

    Args:
        mask: Long tensor ``[B, H, W]`` of class ids in ``0..num_classes-1``.
        num_classes: Number of classes C.
        min_pixel_fraction: Minimum fraction of the mask's pixels, in ``[0, 1]``.

    Returns:
        Long multi-hot tensor ``[B, C]``.

    Raises:
        ValueError: If the mask has the wrong rank or holds ids outside the range,
            or the fraction is outside ``[0, 1]``.
    """
    if mask.ndim != 3:
        raise ValueError(f'mask must be [B, H, W], got shape {tuple(mask.shape)}')
    b = mask.shape[0]
    flat = mask.reshape(b, -1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_classes):
        bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        raise ValueError(f'mask holds class id {bad}, outside 0..{num_classes - 1}')
    offsets = torch.arange(b, device=mask.device).unsqueeze(1) * num_classes
    counts = torch.bincount((flat + offsets).reshape(-1), minlength=b * num_classes)
    # the datasets' rule, so a view's labels agree with its image's at full extent
    labels = labels_from_pixel_counts(
        counts.reshape(b, num_classes).cpu(), min_pixel_fraction
    )
    return torch.from_numpy(labels).to(mask.device)


#: Luma weights of :func:`kornia.color.rgb_to_grayscale` (ITU-R BT.601).
_LUMA = (0.299, 0.587, 0.114)
#: RGB -> YIQ; its first row is the luma, so a rotation of (I, Q) keeps the luma.
_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


class NormalizedColorJitter(nn.Module):
    """Colour jitter of normalised images, as affine colour maps per image.

    Brightness, contrast and saturation are the operations of
    :class:`kornia.augmentation.ColorJitter` (scaling, blending with the mean luma,
    blending with the luma), and hue is a rotation of the chrominance about the grey
    axis (YIQ), which keeps the luma. Each is an affine map of the image in ``[0, 1]``;
    their composition (in a random order per call, as kornia) is expressed in the
    normalised coordinates the image arrives in and applied with one matrix product,
    then clamped to the values that ``[0, 1]`` normalises to.

    Images of other than 3 bands (multispectral) have no colour: each band gets a
    brightness and a contrast factor of its own (contrast blends a band with its own
    mean), and no band is mixed into another; saturation and hue apply to 3-band
    images only.
    """

    def __init__(self, strength: float, p: float = 0.8) -> None:
        """Initialise the jitter.

        Args:
            strength: Range ``s`` of the brightness, contrast and saturation factors
                (drawn from ``[max(0, 1 - s), 1 + s]``); the hue turn is drawn from
                ``[-h, h]`` with ``h = min(s / 4, 0.5)``.
            p: Probability of jittering an image.

        Raises:
            ValueError: If ``strength`` is negative or ``p`` is outside ``[0, 1]``.
        """
        super().__init__()
        if strength < 0 or not 0.0 <= p <= 1.0:
            raise ValueError(f'need strength >= 0 and p in [0, 1], got {strength}, {p}')
        self.strength = float(strength)
        self.hue = min(strength / 4, 0.5)
        self.p = float(p)
        self.mean: Tensor
        self.std: Tensor
        self.value_min: Tensor
        self.value_span: Tensor
        self.register_buffer('mean', torch.zeros(1), persistent=False)
        self.register_buffer('std', torch.full((1,), 255.0), persistent=False)
        self.register_buffer('value_min', torch.zeros(1), persistent=False)
        self.register_buffer('value_span', torch.full((1,), 255.0), persistent=False)

    def set_normalization(
        self,
        mean: Tensor,
        std: Tensor,
        value_min: Tensor | None = None,
        value_max: Tensor | None = None,
    ) -> None:
        """Set the normalisation of the incoming images and their valid range.

        Args:
            mean: Per-band (or scalar) mean ``[C]``, in the units of the images.
            std: Per-band (or scalar) standard deviation ``[C]``, same units.
            value_min: Per-band (or scalar) lowest valid value (default 0).
            value_max: Per-band (or scalar) highest valid value (default 255).
        """
        device = self.mean.device
        self.mean = mean.to(device, torch.float32).flatten()
        self.std = std.to(device, torch.float32).flatten()
        low = torch.zeros(1) if value_min is None else value_min
        high = torch.full((1,), 255.0) if value_max is None else value_max
        self.value_min = low.to(device, torch.float32).flatten()
        self.value_span = (high.to(device, torch.float32).flatten()) - self.value_min

    def _unit_map(self, c: int) -> tuple[Tensor, Tensor]:
        """Map ``u = scale x + shift`` of normalised values ``x`` onto ``[0, 1]``."""
        scale = (self.std / self.value_span).expand(c)
        shift = ((self.mean - self.value_min) / self.value_span).expand(c)
        return scale, shift

    def _factors(self, b: int, c: int, device: torch.device) -> Tensor:
        """Draw brightness, contrast, saturation and hue (turns) per image.

        Args:
            b: Number of images.
            c: Number of bands: 3-band images draw one factor of each kind, other
                images a brightness and a contrast factor per band.
            device: Device of the factors.

        Returns:
            Factors ``[B, 4, C]``.
        """
        s = self.strength
        lo = max(0.0, 1.0 - s)
        if c == 3:
            scale = torch.rand(b, 3, device=device) * (1.0 + s - lo) + lo
            hue = (torch.rand(b, 1, device=device) * 2.0 - 1.0) * self.hue
            return torch.cat([scale, hue], dim=1)[..., None].expand(b, 4, c)
        per_band = torch.rand(b, 2, c, device=device) * (1.0 + s - lo) + lo
        unused = torch.stack(
            [torch.ones(b, c, device=device), torch.zeros(b, c, device=device)], 1
        )
        return torch.cat([per_band, unused], dim=1)

    def colour_maps(
        self, channel_means: Tensor, factors: Tensor, order: list[int]
    ) -> tuple[Tensor, Tensor]:
        """Affine colour maps of the jitter, in normalised coordinates.

        Args:
            channel_means: Mean of every band of every image ``[B, C]``, normalised.
            factors: Brightness, contrast and saturation factors and hue turns,
                ``[B, 4]`` (one per image) or ``[B, 4, C]`` (per band; saturation
                and hue use band 0's).
            order: Order of the operations (0 brightness, 1 contrast,
                2 saturation, 3 hue).

        Returns:
            ``(M, t)`` with ``M`` ``[B, C, C]`` and ``t`` ``[B, C]``: a jittered
            image is ``M x + t`` before clamping.
        """
        b, c = channel_means.shape
        device = channel_means.device
        if factors.ndim == 2:
            factors = factors[..., None].expand(b, 4, c)
        # the normalisation maps an image u in [0, 1] to x = (u - shift) / scale
        scale, shift = self._unit_map(c)
        eye = torch.eye(c, device=device).expand(b, c, c)
        rgb = c == 3
        luma = torch.tensor(_LUMA, device=device)  # saturation and contrast of RGB
        # the maps are composed on [0, 1] values: u' = m u + t
        m = eye.clone()
        t = torch.zeros(b, c, device=device)
        u_first = channel_means * scale + shift
        u_mean = u_first
        for step in order:
            f = factors[:, step]  # [B, C]
            if step == 0:
                m, t = f[:, :, None] * m, f * t
            elif step == 1:
                # colour: blend with the mean luma; other bands: with their own mean
                grey = (u_mean @ luma)[:, None] if rgb else u_mean
                m = f[:, :, None] * m
                t = f * t + (1 - f) * grey
            elif step == 2 and rgb:
                g = f[:, :1, None]
                blend = g * eye + (1 - g) * luma
                m, t = blend @ m, (blend @ t[..., None])[..., 0]
            elif step == 3 and rgb:
                rotation = _hue_rotation(f[:, 0] * 2 * math.pi)
                m, t = rotation @ m, (rotation @ t[..., None])[..., 0]
            else:
                continue
            u_mean = (m @ u_first[..., None])[..., 0] + t
        # x' = (m (scale x + shift) + t - shift) / scale
        m_x = m * scale[None, None, :] / scale[None, :, None]
        t_x = ((m @ shift[:, None])[..., 0] + t - shift) / scale
        return m_x, t_x

    def forward(self, image: Tensor) -> Tensor:
        """Jitter every image with probability ``p``.

        Args:
            image: Normalised images ``[B, C, H, W]``.

        Returns:
            The jittered images, normalised like the input.
        """
        b, c = image.shape[:2]
        if self.strength == 0 or b == 0:
            return image
        device = image.device
        factors = self._factors(b, c, device)
        order = torch.randperm(4).tolist()
        means = image.detach().float().mean(dim=(2, 3))
        m, t = self.colour_maps(means, factors, order)
        jittered = torch.einsum('bij,bjhw->bihw', m.to(image.dtype), image)
        jittered = jittered + t.to(image.dtype)[..., None, None]
        scale, shift = self._unit_map(c)
        low = (-shift / scale).to(image.dtype)[None, :, None, None]
        high = ((1 - shift) / scale).to(image.dtype)[None, :, None, None]
        jittered = torch.maximum(torch.minimum(jittered, high), low)
        chosen = torch.rand(b, device=device) < self.p
        return torch.where(chosen[:, None, None, None], jittered, image)


def _hue_rotation(angle: Tensor) -> Tensor:
    """RGB matrices ``[B, 3, 3]`` that rotate the hue by ``angle`` (radians)."""
    yiq = torch.tensor(_YIQ, device=angle.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rotation = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos, -sin], -1),
            torch.stack([zero, sin, cos], -1),
        ],
        dim=-2,
    )
    to_rgb: Tensor = torch.linalg.inv(yiq)
    return to_rgb @ rotation @ yiq


class ContrastiveViews(nn.Module):
    """Random views of a normalised batch, with different parameters per image and view.

    Geometric augmentations (random resized crop, flips, rotations by multiples of
    90°) are applied to the mask too, with nearest-neighbour resampling, so labels can
    be recomputed from each view's mask. Photometric augmentations act on the
    normalised image as it is: colour jitter is expressed in normalised coordinates
    (:class:`NormalizedColorJitter`, which needs the batch's ``mean`` / ``std``, see
    :meth:`set_normalization`), and Gaussian blur commutes with the normalisation.
    Colour jitter's saturation and hue only apply to 3-band images.
    """

    def __init__(
        self,
        size: int | None = None,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        color_jitter: float = 0.4,
        blur: float = 0.0,
    ) -> None:
        """Initialise the augmentation.

        Args:
            size: Side of the square output views; None keeps the input height.
            crop_scale: Range of the crop area as a fraction of the image.
            hflip: Random horizontal flips.
            vflip: Random vertical flips.
            rot90: Random rotations by 0, 90, 180 or 270 degrees.
            color_jitter: Strength of brightness/contrast/saturation (hue: a quarter of
                it) jitter applied with probability 0.8; 0 disables it.
            blur: Probability of a Gaussian blur; 0 disables it.

        Raises:
            ValueError: If a setting is out of range.
        """
        super().__init__()
        lo, hi = crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f'crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}'
            )
        if color_jitter < 0 or not 0.0 <= blur <= 1.0:
            raise ValueError(
                f'color_jitter must be >= 0 and blur in [0, 1], got {color_jitter}, {blur}'
            )
        if size is not None and size < 1:
            raise ValueError(f'size must be positive, got {size}')
        self.size = size
        self.crop_scale = (float(lo), float(hi))
        self.hflip = hflip
        self.vflip = vflip
        self.rot90 = rot90
        self.color_jitter = float(color_jitter)
        self.blur = float(blur)
        self.jitter = NormalizedColorJitter(color_jitter, p=0.8)
        self.gaussian_blur = K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=blur)
        self._geometric: dict[tuple[int, bool], K.AugmentationSequential] = {}

    def set_normalization(
        self,
        mean: Tensor | float,
        std: Tensor | float,
        value_min: Tensor | Sequence[float] | float | None = None,
        value_max: Tensor | Sequence[float] | float | None = None,
    ) -> None:
        """Set the normalisation the incoming batches carry, and their valid range.

        Args:
            mean: Per-band (or scalar) mean, in the units of the stored images.
            std: Per-band (or scalar) standard deviation, same units.
            value_min: Per-band (or scalar) lowest valid value of the stored images
                (default 0).
            value_max: Per-band (or scalar) highest valid value (default 255).
        """
        self.jitter.set_normalization(
            torch.as_tensor(mean),
            torch.as_tensor(std),
            None if value_min is None else torch.as_tensor(value_min).float(),
            None if value_max is None else torch.as_tensor(value_max).float(),
        )

    def _geometric_aug(self, size: int, with_mask: bool) -> K.AugmentationSequential:
        key = (size, with_mask)
        if key not in self._geometric:
            augs: list[K.AugmentationBase2D] = [
                K.RandomResizedCrop((size, size), scale=self.crop_scale)
            ]
            if self.hflip:
                augs.append(K.RandomHorizontalFlip())
            if self.vflip:
                augs.append(K.RandomVerticalFlip())
            if self.rot90:
                augs.append(K.RandomRotation90(times=(0, 3), p=1.0))
            keys = ['input', 'mask'] if with_mask else ['input']
            self._geometric[key] = K.AugmentationSequential(*augs, data_keys=keys)
        return self._geometric[key]

    def forward(
        self, image: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Make one random view of every image (call twice for two views).

        Args:
            image: Normalised images ``[B, C, H, W]``.
            mask: Optional class-index masks ``[B, H, W]`` transformed with the images.

        Returns:
            The view images ``[B, C, S, S]`` (normalised like the input) and, when a
            mask was given, the view masks ``[B, S, S]`` (long).

        Raises:
            ValueError: If image and mask shapes disagree.
        """
        if image.ndim != 4:
            raise ValueError(
                f'image must be [B, C, H, W], got shape {tuple(image.shape)}'
            )
        if mask is not None and mask.shape != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f'mask shape {tuple(mask.shape)} does not match image shape '
                f'{tuple(image.shape)}'
            )
        size = self.size or image.shape[-2]
        geometric = self._geometric_aug(size, mask is not None)
        if mask is not None:
            view, view_mask = geometric(image, mask.unsqueeze(1).float())
            out_mask: Tensor | None = view_mask.squeeze(1).round().long()
        else:
            view = geometric(image)
            out_mask = None
        view = self.jitter(view)
        if self.blur > 0:
            view = self.gaussian_blur(view)
        return view, out_mask
