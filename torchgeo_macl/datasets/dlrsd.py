"""DLRSD multi-label retrieval dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from .._compat import check_sha256, download_url
from .base import MaskRetrievalDataset
from .masks import check_min_pixel_fraction
from .utils import PathLike

__all__ = ('DLRSD',)


class DLRSD(MaskRetrievalDataset):
    """DLRSD dense-labelling dataset as a multi-label retrieval benchmark.

    The `DLRSD <https://sites.google.com/view/zhouwx/dataset>`__ dataset adds
    pixel-wise annotations of 17 land-cover classes to the 2100 images (256x256,
    0.3 m, RGB) of the 21 UC Merced scene classes. Every image carries the set of
    classes that occur in it, which makes DLRSD a standard multi-label retrieval
    benchmark.

    Dataset format:

    * ``DLRSD/Images/<scene>/<scene>NN.tif``: RGB images
    * ``DLRSD/Labels/<scene>/<scene>NN.png``: palette PNG masks, values 1..17
    * ``DLRSD/multilabels.csv``: header ``image,airplane,baresoil,...``, one 0/1
      column per class

    Dataset classes:

    0. airplane
    1. bare soil
    2. buildings
    3. cars
    4. chaparral
    5. court
    6. dock
    7. field
    8. grass
    9. mobile home
    10. pavement
    11. sand
    12. sea
    13. ship
    14. tanks
    15. trees
    16. water

    Labels come from the masks (``label_source='mask'``: class c is present when
    its pixel fraction is at least ``min_pixel_fraction``; 0 means any pixel) or from
    ``multilabels.csv`` (``label_source='csv'``). DLRSD has no official split: a
    seeded multi-label-stratified train/val/test split (default 70/10/20, stratified
    on the mask labels, so the same for both label sources) is written once to
    ``<root>/DLRSD/splits/`` and reused. The per-class pixel counts of all masks are
    cached there too, so labels for any split and ``min_pixel_fraction`` come
    without decoding a mask twice. The archive is the one TorchGeo's own ``DLRSD``
    dataset downloads, so a copy it extracted in the same ``root`` is used as is.

    If you use this dataset in your research, please cite the following papers:

    * https://doi.org/10.3390/rs10060964 (Shao et al., "Performance Evaluation of
      Single-Label and Multi-Label Remote Sensing Image Retrieval Using a Dense
      Labeling Dataset", Remote Sensing 2018)
    * https://doi.org/10.1145/1869790.1869829 (Yang and Newsam, "Bag-of-visual-words
      and spatial extensions for land-use classification", ACM SIGSPATIAL 2010)
    """

    dataset_name = 'DLRSD'
    file_prefix = 'dlrsd'
    url = (
        'https://hf.co/datasets/calebrob6/dlrsd/resolve/'
        'dcd622dd05f327cd0fd10951ad6cd7ba52d0e832/DLRSD.zip'
    )
    filename = 'DLRSD.zip'
    sha256 = 'cb49d850855a7622c51b5f09dbdf98952e064b661f35cb105e8749513e75796f'
    directory = 'DLRSD'
    csv_filename = 'multilabels.csv'
    image_pattern = '*/*.tif'
    mask_folder = 'Labels'
    layout: ClassVar[tuple[tuple[str, str], ...]] = (
        ('DLRSD/Images/<scene>/<scene>NN.tif', ''),
        ('DLRSD/Labels/<scene>/<scene>NN.png', ''),
        ('DLRSD/multilabels.csv', ''),
    )

    classes: ClassVar[tuple[str, ...]] = (
        'airplane',
        'bare soil',
        'buildings',
        'cars',
        'chaparral',
        'court',
        'dock',
        'field',
        'grass',
        'mobile home',
        'pavement',
        'sand',
        'sea',
        'ship',
        'tanks',
        'trees',
        'water',
    )
    #: Colours of the DLRSD label palette, in class order.
    colormap: ClassVar[tuple[tuple[int, int, int], ...] | None] = (
        (166, 202, 240),
        (128, 128, 0),
        (0, 0, 128),
        (255, 0, 0),
        (0, 128, 0),
        (128, 0, 0),
        (255, 233, 233),
        (160, 160, 164),
        (0, 128, 128),
        (90, 87, 255),
        (255, 255, 0),
        (255, 192, 0),
        (0, 0, 255),
        (255, 0, 192),
        (128, 0, 128),
        (0, 255, 0),
        (0, 255, 255),
    )
    label_sources: ClassVar[tuple[str, ...]] = ('mask', 'csv')

    def __init__(
        self,
        root: PathLike = 'data',
        split: str = 'train',
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        download: bool = False,
        checksum: bool = False,
        label_source: str = 'mask',
        min_pixel_fraction: float = 0.0,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        load_masks: bool = True,
    ) -> None:
        """Initialize a new DLRSD instance.

        Args:
            root: Root directory where the dataset can be found.
            split: One of 'train', 'val' or 'test'.
            transforms: A function/transform that takes a sample dict and returns a
                transformed version.
            download: If True, download the dataset and store it in ``root``.
            checksum: If True, check the SHA-256 of the (downloaded) archive.
            label_source: 'mask' (labels from the masks) or 'csv' (labels from
                ``multilabels.csv``).
            min_pixel_fraction: Fraction of an image's pixels a class needs to count
                as a label (``label_source='mask'`` only); 0 means any pixel.
            split_seed: Seed of the stratified split; each seed has its own file.
            split_fractions: Train, val and test fractions (positive, sum 1).
            load_masks: If False, samples carry no ``'mask'`` and masks are not
                decoded when loading samples (labels still come from them).

        Raises:
            DatasetNotFoundError: If the dataset is not found and ``download`` is
                False.
            RuntimeError: If ``checksum`` is True and the archive is corrupted.
            ValueError: If an argument is invalid, or a split file, label file or
                mask is invalid (the message names the file).
        """
        if label_source not in self.label_sources:
            raise ValueError(
                f'Invalid label_source {label_source!r}; expected one of '
                f'{self.label_sources}.'
            )
        if label_source == 'csv' and check_min_pixel_fraction(min_pixel_fraction) > 0:
            raise ValueError(
                "min_pixel_fraction only applies to label_source='mask', got "
                f'{min_pixel_fraction} with the csv labels.'
            )
        self.label_source = label_source
        super().__init__(
            root,
            split,
            transforms,
            download,
            checksum,
            min_pixel_fraction,
            split_seed,
            split_fractions,
            load_masks,
        )

    def _split_labels(
        self, rows: NDArray[np.int64], counts: Callable[[], NDArray[np.int64]]
    ) -> NDArray[np.int64]:
        """Labels of the split's images, from the masks or from the label table.

        Args:
            rows: The rows of :attr:`split` (see :meth:`_select_split`).
            counts: Returns the pixel counts [N, C] of the whole archive.

        Returns:
            int64 [len(rows), C].
        """
        if self.label_source == 'csv':
            return self._csv_labels([i.rsplit('/', 1)[-1] for i in self.ids])
        return super()._split_labels(rows, counts)

    def _check_archive(self, path: str) -> bool:
        """Check the archive against its published SHA-256.

        Args:
            path: The archive.

        Returns:
            Whether the checksum matches.
        """
        return check_sha256(path, self.sha256)

    def _download(self) -> None:
        """Download the archive into ``root`` (checking it when ``checksum``)."""
        download_url(
            self.url,
            self.root,
            self.filename,
            sha256=self.sha256 if self.checksum else None,
        )
