"""WHDLD multi-label retrieval dataset."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from .base import RetrievalDataset
from .masks import (
    check_min_pixel_fraction,
    decode_index_mask,
    decode_rgb_mask,
    labels_from_pixel_counts,
)
from .splits import check_split_fractions
from .utils import PathLike

__all__ = ('WHDLD',)

_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 255, 0),
    (192, 192, 0),
    (0, 255, 0),
    (128, 128, 128),
    (0, 0, 255),
)


class WHDLD(RetrievalDataset):
    """WHDLD (Wuhan Dense Labeling Dataset) as a multi-label retrieval benchmark.

    The `WHDLD <https://sites.google.com/view/zhouwx/dataset>`__ dataset holds 4940
    RGB images (256x256, 2 m) cropped from a large image of Wuhan, with pixel-wise
    annotations of 6 classes.

    Dataset format:

    * ``WHDLD/Images/whNNNN.jpg``: RGB images
    * ``WHDLD/ImagesPNG/whNNNN.png``: masks, either index-coded (palette or
      greyscale values 1..6) or colour-coded with the class colours below

    Dataset classes (and mask colours):

    0. building (255, 0, 0)
    1. road (255, 255, 0)
    2. pavement (192, 192, 0)
    3. vegetation (0, 255, 0)
    4. bare soil (128, 128, 128)
    5. water (0, 0, 255)

    Labels come from the masks: class c is present when its pixel fraction is at
    least ``min_pixel_fraction`` (0 means any pixel). WHDLD has no official split:
    a seeded multi-label-stratified train/val/test split (default 70/10/20) is
    written once to ``<root>/WHDLD/splits/`` and reused. WHDLD has no stable
    download URL: download it by hand (see the error raised when it is missing).

    If you use this dataset in your research, please cite the following papers:

    * https://doi.org/10.1109/JSTARS.2020.3005403 (Shao et al., "Multilabel Remote
      Sensing Image Retrieval Based on Fully Convolutional Network", IEEE JSTARS
      2020)
    * https://doi.org/10.3390/rs10060964 (Shao et al., "Performance Evaluation of
      Single-Label and Multi-Label Remote Sensing Image Retrieval Using a Dense
      Labeling Dataset", Remote Sensing 2018)
    """

    dataset_name = 'WHDLD'
    file_prefix = 'whdld'
    directory = 'WHDLD'
    filename = 'WHDLD.zip'
    source = (
        'the WHDLD page https://sites.google.com/view/zhouwx/dataset '
        '(Wuhan Dense Labeling Dataset)'
    )
    layout: ClassVar[tuple[tuple[str, str], ...]] = (
        ('WHDLD/Images/whNNNN.jpg', ''),
        ('WHDLD/ImagesPNG/whNNNN.png', ''),
    )

    classes: ClassVar[tuple[str, ...]] = (
        'building',
        'road',
        'pavement',
        'vegetation',
        'bare soil',
        'water',
    )
    colormap: ClassVar[tuple[tuple[int, int, int], ...] | None] = _COLOURS
    has_masks: ClassVar[bool] = True

    def __init__(
        self,
        root: PathLike = 'data',
        split: str = 'train',
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        download: bool = False,
        checksum: bool = False,
        min_pixel_fraction: float = 0.0,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        load_masks: bool = True,
    ) -> None:
        """Initialize a new WHDLD instance.

        Args:
            root: Root directory where the dataset can be found.
            split: One of 'train', 'val' or 'test'.
            transforms: A function/transform that takes a sample dict and returns a
                transformed version.
            download: WHDLD cannot be downloaded automatically; if the dataset is
                missing a DatasetNotFoundError explains where to get it either way.
            checksum: If True, check the CRC-32 of every member of
                ``<root>/WHDLD.zip`` before extracting it.
            min_pixel_fraction: Fraction of an image's pixels a class needs to count
                as a label; 0 means any pixel.
            split_seed: Seed of the stratified split; each seed has its own file.
            split_fractions: Train, val and test fractions (positive, sum 1).
            load_masks: If False, samples carry no ``'mask'`` and masks are not
                decoded when loading samples (labels still come from them).

        Raises:
            DatasetNotFoundError: If the dataset is not found.
            RuntimeError: If ``checksum`` is True and the archive is corrupted.
            ValueError: If an argument, a split file or a mask is invalid (the
                message names the file and the value).
        """
        super().__init__(root, split, transforms, download, checksum, split_seed)
        self.min_pixel_fraction = check_min_pixel_fraction(min_pixel_fraction)
        fractions = check_split_fractions(split_fractions, self.splits)
        self.load_masks = load_masks

        self._verify()

        base = os.path.join(root, self.directory)
        paths = sorted(glob.glob(os.path.join(base, 'Images', '*.jpg')))
        if not paths:
            raise self._not_found()
        ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        masks = [os.path.join(base, 'ImagesPNG', i + '.png') for i in ids]
        rows, counts = self._split_by_masks(
            os.path.join(base, 'splits'), ids, paths, masks, fractions
        )
        self._set_labels(
            labels_from_pixel_counts(counts()[rows], self.min_pixel_fraction)
        )

    def _load_mask_array(self, path: str) -> NDArray[np.int64]:
        """Decode a WHDLD mask in either encoding into class ids 0..5.

        Single-channel masks (palette or greyscale) must hold the values 1..6; a
        palette mask with other indices is read through its palette colours. RGB(A)
        masks must use the class colours (or grey levels 1..6).

        Args:
            path: Mask file.

        Returns:
            int64 array [H, W].

        Raises:
            ValueError: If a value or colour is not a class (the message names the
                file and the value).
            OSError: If the file cannot be decoded (the message names it).
        """
        num = len(self.classes)
        try:
            with Image.open(path) as img:
                mode = img.mode
                array: NDArray[Any] = np.asarray(img)
                if (
                    mode == 'P'
                    and array.size
                    and not (int(array.min()) >= 1 and int(array.max()) <= num)
                ):
                    array = np.asarray(img.convert('RGB'))
                    mode = 'RGB'
        except (OSError, SyntaxError, ValueError) as err:
            raise OSError(f'Could not decode mask {path!r}: {err}') from err
        if array.ndim == 2:
            return decode_index_mask(array, path, num)
        if array.ndim == 3 and array.shape[2] in (3, 4):
            rgb = array[..., :3]
            grey = rgb[..., 0]
            if (
                (rgb == grey[..., None]).all()
                and grey.size
                and int(grey.min()) >= 1
                and int(grey.max()) <= num
            ):
                return decode_index_mask(grey, path, num)
            return decode_rgb_mask(rgb, path, _COLOURS)
        raise ValueError(
            f'Mask {path!r} has unsupported shape {array.shape} (mode {mode}); '
            'expected a palette, greyscale or RGB image.'
        )
