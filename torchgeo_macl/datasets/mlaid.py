"""ML-AID (AID multi-label) retrieval dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from .utils import (
    PathLike,
    RetrievalDataset,
    check_split_fractions,
    find_or_extract,
    load_or_create_split,
    manual_download_error,
    read_multilabel_csv,
    split_file_name,
)

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

    ML-AID has no stable download URL: download it by hand (see the error raised
    when it is missing). Samples have no ``'mask'``.

    If you use this dataset in your research, please cite the following papers:

    * https://doi.org/10.1109/TGRS.2019.2963364 (Hua, Mou and Zhu, "Relation Network
      for Multilabel Aerial Image Classification", IEEE TGRS 2020)
    * https://doi.org/10.1109/TGRS.2017.2685945 (Xia et al., "AID: A Benchmark Data
      Set for Performance Evaluation of Aerial Scene Classification", IEEE TGRS 2017)
    """

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
        self._check_split(split)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}.')
        fractions = check_split_fractions(
            (1.0 - val_fraction, val_fraction), ('train', 'val')
        )

        self.root = root
        self.split = split
        self.transforms = transforms
        self.download = download
        self.checksum = checksum
        self.min_pixel_fraction = 0.0
        self.val_fraction = float(val_fraction)
        self.split_seed = split_seed
        self.mask_paths = None

        self._verify()

        base = os.path.join(root, self.directory)
        folder = self.folders[split]
        paths = self._find_images(base, folder)
        if not paths:
            raise self._not_found()
        ids = [self._image_id(base, p) for p in paths]
        table = read_multilabel_csv(os.path.join(base, self.csv_filename), self.classes)
        all_labels = self._lookup(table, paths)

        if split == 'test':
            self.ids = ids
            self.image_paths = paths
            labels = all_labels
        else:
            self.split_path = os.path.join(
                os.path.join(base, 'splits') if split_dir is None else split_dir,
                split_file_name('mlaid', split_seed, fractions),
            )
            splits = load_or_create_split(
                self.split_path,
                ids,
                lambda: all_labels,
                fractions,
                split_seed,
                'ML-AID',
            )
            row_of = {v: k for k, v in enumerate(ids)}
            rows = np.array([row_of[i] for i in splits[split]], dtype=np.int64)
            self.ids = list(splits[split])
            self.image_paths = [paths[r] for r in rows]
            labels = all_labels[rows]
        self.labels = torch.from_numpy(labels.reshape(len(self.ids), len(self.classes)))

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
        return sorted(found, key=lambda p: self._image_id(base, p))

    @staticmethod
    def _image_id(base: str, path: str) -> str:
        """Identifier of an image: its path under ``AID_multilabel`` without suffix.

        Args:
            base: The ``AID_multilabel`` directory.
            path: Image path.

        Returns:
            For example ``'images_tr/airport/airport_1'``.
        """
        rel = os.path.relpath(path, base)
        return os.path.splitext(rel)[0].replace(os.sep, '/')

    def _lookup(
        self, table: dict[str, NDArray[np.int64]], paths: list[str]
    ) -> NDArray[np.int64]:
        """Find the label row of every image.

        Args:
            table: Rows of ``multilabel.csv`` by image stem.
            paths: Image paths.

        Returns:
            int64 [N, C].

        Raises:
            ValueError: If an image has no row (the message names the files).
        """
        csv_path = os.path.join(self.root, self.directory, self.csv_filename)
        rows = []
        for path in paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem not in table:
                raise ValueError(
                    f'Label file {csv_path!r} has no row for image {path!r}.'
                )
            rows.append(table[stem])
        return np.stack(rows) if rows else np.zeros((0, len(self.classes)), np.int64)

    def _not_found(self) -> Exception:
        """Build the manual-download error.

        Returns:
            The DatasetNotFoundError to raise.
        """
        base = os.path.join(self.root, self.directory)
        layout = (
            f'  {os.path.join(base, "images_tr")}{os.sep}   (training images; flat '
            'or one sub-folder per scene)\n'
            f'  {os.path.join(base, "images_test")}{os.sep} (test images)\n'
            f'  {os.path.join(base, self.csv_filename)}\n'
            f'or the zip archive of that AID_multilabel/ folder as '
            f'{os.path.join(self.root, self.filename)}.'
        )
        return manual_download_error(self, 'ML-AID', self.source, layout)

    def _verify(self) -> None:
        """Verify the integrity of the dataset, extracting it if needed.

        Raises:
            DatasetNotFoundError: If the dataset is not found (it cannot be
                downloaded automatically).
            RuntimeError: If the archive is corrupted.
        """
        if not find_or_extract(self.root, self.directory, self.filename, self.checksum):
            raise self._not_found()
