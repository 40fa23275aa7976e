"""What a retrieval task needs to know about its data."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ('RetrievalDataSpec',)


@dataclass(frozen=True)
class RetrievalDataSpec:
    """Description of the batches a datamodule delivers to a retrieval task.

    Returned by :meth:`~torchgeo_macl.datamodules.RetrievalDataModule.retrieval_spec`;
    :class:`~torchgeo_macl.tasks.RetrievalTask` reads it once in ``setup``.

    Attributes:
        num_classes: Number of labels C.
        mean: Per-band mean the batch images are normalised with, in the units of
            the stored images (0..255 for 8-bit archives).
        std: Per-band standard deviation the batch images are normalised with, in
            the same units.
        image_size: Side the batch images are resized to; None when they keep the
            stored size.
        min_pixel_fraction: Pixel fraction a class needs in a mask to count as a
            label (0: any pixel).
        has_masks: Whether batches carry a ``'mask'``.
        label_frequencies: Fraction of the training images carrying each label
            (float32 ``[C]``); None when the stage does not need it.
        value_min: Per-band (or one) lowest valid value of the stored images, in
            their units; the colour jitter of the views works on
            ``(value - value_min) / (value_max - value_min)`` and clamps to it.
        value_max: Per-band (or one) highest valid value, in the same units.
    """

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None = None
    min_pixel_fraction: float = 0.0
    has_masks: bool = False
    label_frequencies: Tensor | None = None
    value_min: tuple[float, ...] = (0.0,)
    value_max: tuple[float, ...] = (255.0,)

    def __post_init__(self) -> None:
        """Check the fields.

        Raises:
            ValueError: If a field is out of range or mean and std disagree.
        """
        if self.num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {self.num_classes}')
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f'mean and std need one value per band, got {len(self.mean)} and '
                f'{len(self.std)}'
            )
        if len(self.value_min) != len(self.value_max) or any(
            hi <= lo for lo, hi in zip(self.value_min, self.value_max)
        ):
            raise ValueError(
                'value_max must exceed value_min band by band, got '
                f'{self.value_min} and {self.value_max}'
            )
        if min(self.std) <= 0:
            raise ValueError(f'std must be positive, got {self.std}')
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f'image_size must be >= 1 or None, got {self.image_size}')
        if self.label_frequencies is not None and self.label_frequencies.shape != (
            self.num_classes,
        ):
            raise ValueError(
                f'label_frequencies must have shape ({self.num_classes},), got '
                f'{tuple(self.label_frequencies.shape)}'
            )
