"""Resizing and normalisation of retrieval batches, defined once for every caller."""

from __future__ import annotations

import kornia
from torch import Tensor

__all__ = ('normalize', 'resize')


def resize(
    image: Tensor, size: tuple[int, int], mask: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Resize images (bilinear, antialiased) and their masks (nearest).

    Args:
        image: Float images ``[B, C, H, W]``.
        size: Output (height, width).
        mask: Optional class-index masks ``[B, H, W]``.

    Returns:
        The resized images and, when given, the resized masks (long).
    """
    if tuple(image.shape[-2:]) != size:
        image = kornia.geometry.transform.resize(
            image, size, interpolation='bilinear', align_corners=False, antialias=True
        )
    if mask is not None and tuple(mask.shape[-2:]) != size:
        resized = kornia.geometry.transform.resize(
            mask[:, None].float(), size, interpolation='nearest'
        )
        mask = resized[:, 0].round().long()
    return image, mask


def normalize(image: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Normalise images band by band.

    Args:
        image: Images ``[B, C, H, W]`` in 0..255.
        mean: Per-band mean ``[C]`` (0..255 units).
        std: Per-band standard deviation ``[C]`` (0..255 units).

    Returns:
        ``(image - mean) / std``.
    """
    mean = mean.to(image.device, image.dtype)
    std = std.to(image.device, image.dtype)
    return kornia.enhance.normalize(image, mean, std)
