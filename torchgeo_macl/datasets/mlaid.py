"""ML-AID (AID multi-label) retrieval dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

from torch import Tensor

from .base import RetrievalDataset, image_id
from .dlrsd import DLRSD
from .splits import check_split_fractions
from .utils import PathLike

__all__ = ('MLAID',)


class MLAID(RetrievalDataset):
    r"""ML-AID, the multi-label version of the AID aerial scene dataset.

    The `AID multi-label dataset <https://github.com/Hua-YS/AID-Multilabel-Dataset>`__
    annotates 3000 images (600x600, RGB) of the AID scene dataset with 17 object
    labels, the label set of DLRSD. The official split has 2400 training and 600
    test images; a seeded multi-label-stratified validation split is carved out of
    the training images (``val_fraction``, default 10%) and written once to
    ``<root>/AID_multilabel/splits/``.

    Dataset format:

    * ``AID_multilabel/images_tr/``: training images, directly in the folder or in
      one sub-folder per scene category
    * ``AID_multilabel/images_test/``: test images, laid out the same way
    * ``AID_multilabel/multilabel.csv``: header ``IMAGE\LABEL,airplane,bare-soil,...``,
      first column the image name without extension, then one 0/1 column per class

    Dataset classes: the 17 classes of
    :class:`~torchgeo_macl.datasets.DLRSD`, in the same order.

    ML-AID has no stable download URL: download it by hand (see the error raised
    when it is missing). Samples have no ``'mask'``.

    If you use this dataset in your research, please cite the following papers:

    * https://doi.org/10.1109/TGRS.2019.2963364 (Hua, Mou and Zhu, "Relation Network
      for Multilabel Aerial Image Classification", IEEE TGRS 2020)
    * https://doi.org/10.1109/TGRS.2017.2685945 (Xia et al., "AID: A Benchmark Data
      Set for Performance Evaluation of Aerial Scene Classification", IEEE TGRS 2017)
    """

    dataset_name = 'ML-AID'
    file_prefix = 'mlaid'
    directory = 'AID_multilabel'
    filename = 'AID_multilabel.zip'
    csv_filename = 'multilabel.csv'
    folders: ClassVar[dict[str, str]] = {
        'train': 'images_tr',
        'val': 'images_tr',
        'test': 'images_test',
    }
    extensions: ClassVar[tuple[str, ...]] = ('.jpg', '.jpeg', '.png', '.tif', '.tiff')
    source = (
        'the ML-AID GitHub page https://github.com/Hua-YS/AID-Multilabel-Dataset '
        '(Google Drive link)'
    )
    layout: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            'AID_multilabel/images_tr/',
            '   (training images; flat or one sub-folder per scene)',
        ),
        ('AID_multilabel/images_test/', ' (test images)'),
        ('AID_multilabel/multilabel.csv', ''),
    )

    #: The label set of DLRSD.
    classes: ClassVar[tuple[str, ...]] = DLRSD.classes
    has_masks: ClassVar[bool] = False

    def __init__(
        self,
        root: PathLike = 'data',
        split: str = 'train',
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        download: bool = False,
        checksum: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        split_dir: PathLike | None = None,
    ) -> None:
        """Initialize a new MLAID instance.

        Args:
            root: Root directory where the dataset can be found.
            split: One of 'train', 'val' (both from ``images_tr``) or 'test'
                (``images_test``).
            transforms: A function/transform that takes a sample dict and returns a
                transformed version.
            download: ML-AID cannot be downloaded automatically; if the dataset is
                missing a DatasetNotFoundError explains where to get it either way.
            checksum: If True, check the CRC-32 of every member of
                ``<root>/AID_multilabel.zip`` before extracting it.
            val_fraction: Fraction of ``images_tr`` held out as the 'val' split.
            split_seed: Seed of the stratified validation split.
            split_dir: Directory of the split files; None keeps them next to the
                images in ``<root>/AID_multilabel/splits`` (use another directory
                when ``root`` is read-only).

        Raises:
            DatasetNotFoundError: If the dataset is not found.
            RuntimeError: If ``checksum`` is True and the archive is corrupted.
            ValueError: If an argument, the split file or the label file is invalid
                (the message names the file).
        """
        super().__init__(root, split, transforms, download, checksum, split_seed)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}.')
        fractions = check_split_fractions(
            (1.0 - val_fraction, val_fraction), ('train', 'val')
        )
        self.min_pixel_fraction = 0.0
        self.val_fraction = float(val_fraction)
        self.mask_paths = None

        self._verify()

        base = os.path.join(root, self.directory)
        paths = self._find_images(base, self.folders[split])
        if not paths:
            raise self._not_found()
        ids = [image_id(base, p) for p in paths]
        all_labels = self._csv_labels(
            [os.path.splitext(os.path.basename(p))[0] for p in paths], names=paths
        )
        if split == 'test':
            self.ids = ids
            self.image_paths = paths
            labels = all_labels
        else:
            rows = self._select_split(
                ids,
                paths,
                None,
                lambda: all_labels,
                os.path.join(base, 'splits')
                if split_dir is None
                else os.fspath(split_dir),
                fractions,
            )
            labels = all_labels[rows]
        self._set_labels(labels)

    def _find_images(self, base: str, folder: str) -> list[str]:
        """List the images of a split folder (flat or one sub-folder per scene).

        Args:
            base: The ``AID_multilabel`` directory.
            folder: ``images_tr`` or ``images_test``.

        Returns:
            Sorted image paths.
        """
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(base, folder)):
            dirnames.sort()
            found.extend(
                os.path.join(dirpath, f)
                for f in filenames
                if os.path.splitext(f)[1].lower() in self.extensions
            )
        return sorted(found, key=lambda p: image_id(base, p))
