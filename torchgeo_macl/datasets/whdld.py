"""WHDLD multi-label retrieval dataset."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .base import MaskRetrievalDataset
from .masks import decode_index_mask, decode_rgb_mask

__all__ = ('WHDLD',)

_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 255, 0),
    (192, 192, 0),
    (0, 255, 0),
    (128, 128, 128),
    (0, 0, 255),
)


class WHDLD(MaskRetrievalDataset):
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
    image_pattern = '*.jpg'
    mask_folder = 'ImagesPNG'
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
