"""Two-view augmentation for contrastive training, made on the device with kornia."""

from __future__ import annotations

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


class ContrastiveViews(nn.Module):
    """Random views of a normalised batch, with different parameters per image and view.

    Geometric augmentations (random resized crop, flips, rotations by multiples of
    90°) are applied to the mask too, with nearest-neighbour resampling, so labels can
    be recomputed from each view's mask. Photometric augmentations (colour jitter,
    Gaussian blur) act on the un-normalised image in ``[0, 1]``: the batch is
    denormalised with ``mean`` / ``std`` (0..255 units, as the datamodules use), jittered
    and normalised again. Colour jitter's saturation and hue only apply to 3-band images.
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
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer('mean', torch.zeros(1, 1, 1, 1), persistent=False)
        self.register_buffer('std', torch.full((1, 1, 1, 1), 255.0), persistent=False)
        self._geometric: dict[tuple[int, bool], K.AugmentationSequential] = {}
        self._photometric: dict[int, nn.Sequential] = {}

    def set_normalization(self, mean: Tensor | float, std: Tensor | float) -> None:
        """Set the normalisation the incoming batches carry.

        Args:
            mean: Per-band (or scalar) mean, in 0..255 units.
            std: Per-band (or scalar) standard deviation, in 0..255 units.
        """
        device = self.mean.device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(
            1, -1, 1, 1
        )
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).reshape(
            1, -1, 1, 1
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

    def _photometric_aug(self, bands: int) -> nn.Sequential:
        if bands not in self._photometric:
            augs: list[nn.Module] = []
            s = self.color_jitter
            if s > 0:
                if bands == 3:
                    augs.append(K.ColorJitter(s, s, s, min(s / 4, 0.5), p=0.8))
                else:
                    augs.append(K.ColorJitter(s, s, 0.0, 0.0, p=0.8))
            if self.blur > 0:
                augs.append(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=self.blur))
            self._photometric[bands] = nn.Sequential(*augs)
        return self._photometric[bands]

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
        photometric = self._photometric_aug(image.shape[1])
        if len(photometric) > 0:
            mean = self.mean.to(view.dtype)
            std = self.std.to(view.dtype)
            unit = ((view * std + mean) / 255.0).clamp(0.0, 1.0)
            unit = photometric(unit)
            view = (unit * 255.0 - mean) / std
        return view, out_mask
