"""DLRSD multi-label retrieval dataset."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from .._compat import DatasetNotFoundError, check_sha256, download_url
from .base import RetrievalDataset
from .masks import check_min_pixel_fraction, decode_index_mask, labels_from_pixel_counts
from .splits import check_split_fractions
from .utils import PathLike, lookup_labels, read_multilabel_csv

__all__ = ('DLRSD',)


class DLRSD(RetrievalDataset):
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
    has_masks: ClassVar[bool] = True
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
        super().__init__(root, split, transforms, download, checksum, split_seed)
        if label_source not in self.label_sources:
            raise ValueError(
                f'Invalid label_source {label_source!r}; expected one of '
                f'{self.label_sources}.'
            )
        self.min_pixel_fraction = check_min_pixel_fraction(min_pixel_fraction)
        if label_source == 'csv' and min_pixel_fraction > 0:
            raise ValueError(
                "min_pixel_fraction only applies to label_source='mask', got "
                f'{min_pixel_fraction} with the csv labels.'
            )
        fractions = check_split_fractions(split_fractions, self.splits)
        self.label_source = label_source
        self.load_masks = load_masks

        self._verify()

        base = os.path.join(root, self.directory)
        paths = sorted(glob.glob(os.path.join(base, 'Images', '*', '*.tif')))
        if not paths:
            err = DatasetNotFoundError(self)
            expected = os.path.join(base, 'Images', '<scene>', '<scene>NN.tif')
            err.args = (f'{err.args[0]} No images found: expected {expected}.',)
            raise err
        ids = [
            f'{os.path.basename(os.path.dirname(p))}/{os.path.splitext(os.path.basename(p))[0]}'
            for p in paths
        ]
        masks = [os.path.join(base, 'Labels', i + '.png') for i in ids]
        rows, counts = self._split_by_masks(
            os.path.join(base, 'splits'), ids, paths, masks, fractions
        )
        if label_source == 'mask':
            labels = labels_from_pixel_counts(counts()[rows], self.min_pixel_fraction)
        else:
            csv_path = os.path.join(base, self.csv_filename)
            labels = lookup_labels(
                read_multilabel_csv(csv_path, self.classes),
                [i.rsplit('/', 1)[-1] for i in self.ids],
                csv_path,
                len(self.classes),
            )
        self._set_labels(labels)

    def _load_mask_array(self, path: str) -> NDArray[np.int64]:
        """Decode a DLRSD mask (palette values 1..17) into class ids 0..16.

        Args:
            path: Mask file.

        Returns:
            int64 array [H, W].

        Raises:
            ValueError: If a value is outside 1..17 (the message names the file).
            OSError: If the file cannot be decoded (the message names it).
        """
        try:
            with Image.open(path) as img:
                array: NDArray[Any] = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as err:
            raise OSError(f'Could not decode mask {path!r}: {err}') from err
        return decode_index_mask(array, path, len(self.classes))

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
