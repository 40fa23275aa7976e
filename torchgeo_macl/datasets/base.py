"""The base class of the multi-label retrieval datasets.

:class:`RetrievalDataset` owns what every archive shares: the sample format, image
loading, plotting, the seeded split of archives without an official one, labels
from a label table, and finding archives that have to be downloaded by hand.
:class:`MaskRetrievalDataset` adds what the archives of images with segmentation
masks share: finding image and mask pairs, and labels from mask pixel counts. A
dataset file describes its archive's layout and little else.
"""

from __future__ import annotations

import functools
import glob
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor

from .._compat import DatasetNotFoundError, NonGeoDataset, extract_archive
from .._io import verify_zip
from .masks import (
    check_min_pixel_fraction,
    decode_index_mask,
    labels_from_pixel_counts,
    load_or_compute_pixel_counts,
)
from .splits import check_split_fractions, load_or_create_split, split_file_name
from .utils import PathLike, lookup_labels, read_multilabel_csv

__all__ = (
    'MaskRetrievalDataset',
    'RetrievalDataset',
    'eight_bit_error',
    'find_or_extract',
    'image_id',
    'load_rgb_image',
    'manual_download_error',
    'plot_multilabel_sample',
    'sample_position',
)


def find_or_extract(
    root: PathLike,
    directory: str,
    filename: str,
    check: Callable[[str], bool] | None = None,
) -> bool:
    """Find an extracted dataset, extracting its archive if needed.

    Args:
        root: Root directory of the dataset.
        directory: Folder the archive extracts to, under ``root``.
        filename: Name of the archive, under ``root``.
        check: Integrity check of the archive, run before extracting it (None:
            no check).

    Returns:
        True if the extracted folder exists (now), False if neither it nor the
        archive was found.

    Raises:
        RuntimeError: If the archive fails ``check``.
    """
    if os.path.isdir(os.path.join(root, directory)):
        return True
    archive = os.path.join(root, filename)
    if not os.path.isfile(archive):
        return False
    if check is not None and not check(archive):
        raise RuntimeError('Dataset found, but corrupted.')
    extract_archive(archive)
    return True


def manual_download_error(
    dataset: object, name: str, source: str, layout: str
) -> DatasetNotFoundError:
    """Build the error of a dataset that has to be downloaded by hand.

    Args:
        dataset: The dataset instance (must have a ``root`` attribute).
        name: Dataset name used in the message.
        source: Where the archive can be obtained.
        layout: The folder layout expected under ``root``.

    Returns:
        A :class:`~torchgeo.datasets.DatasetNotFoundError` (raise it).
    """
    root = getattr(dataset, 'root', None)
    msg = (
        f'Dataset not found in `root={root!r}` and {name} cannot be automatically '
        f'downloaded (it has no stable download URL). Get it from {source} and '
        f'put it under root as:\n{layout}'
    )
    err = DatasetNotFoundError(dataset)  # type: ignore[arg-type]
    err.args = (msg,)
    return err


#: Pixel types of the Pillow modes that are not 8 bits per band.
_WIDE_MODES = {'I': '32-bit integer', 'F': '32-bit float'}


def eight_bit_error(mode: str, path: PathLike) -> ValueError | None:
    """The error of an image whose Pillow mode is not 8 bits per band.

    The retrieval models are trained on images in 0..255; 16-bit, 32-bit integer
    and floating-point pixels have another range, and converting them to 8 bits
    clips them.

    Args:
        mode: Pillow mode of the image (``'RGB'``, ``'L'``, ``'I;16'``, ...).
        path: The image file, named in the message.

    Returns:
        A ValueError naming the file and its pixel type for the modes ``'I'``,
        ``'F'`` and ``'I;*'``; None for 8-bit modes.
    """
    kind = '16-bit integer' if mode.startswith('I;16') else _WIDE_MODES.get(mode)
    if kind is None and not mode.startswith('I;'):
        return None
    return ValueError(
        f'Image {os.fspath(path)!r} has {kind or mode} pixels (Pillow mode '
        f'{mode!r}); only 8-bit images (values 0..255) are read'
    )


def load_rgb_image(path: PathLike) -> Tensor:
    """Decode an image file into a float tensor.

    Args:
        path: Image file (any format Pillow reads).

    Returns:
        float32 tensor [3, H, W] with values in 0..255 (a channels-first view of
        an HWC buffer, as TorchGeo's image datasets return).

    Raises:
        OSError: If the file cannot be opened or decoded (the message names it).
        ValueError: If its pixels are not 8-bit (16-bit, 32-bit integer or
            floating point): their values are not in 0..255 (the message names the
            file and the pixel type).
    """
    try:
        with Image.open(path) as img:
            error = eight_bit_error(img.mode, path)
            if error is None:
                rgb = img if img.mode == 'RGB' else img.convert('RGB')
                array = np.asarray(rgb, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as err:
        raise OSError(f'Could not decode image {os.fspath(path)!r}: {err}') from err
    if error is not None:
        raise error
    # A channels-first view of the decoded HWC buffer (no extra copy).
    return torch.from_numpy(array).permute(2, 0, 1)


def _header_size(path: PathLike, what: str) -> tuple[int, int]:
    """Read the size of an image file from its header, without decoding pixels.

    Args:
        path: Image file.
        what: What the file is, in the message (``'mask'``).

    Returns:
        ``(height, width)``.

    Raises:
        OSError: If the file cannot be opened (the message names it).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, SyntaxError, ValueError) as err:
        raise OSError(f'Could not decode {what} {os.fspath(path)!r}: {err}') from err
    return height, width


def sample_position(index: int, length: int) -> int:
    """Position of a sample index, counting negative indices from the end.

    Args:
        index: Index of a sample, ``-length <= index < length``.
        length: Number of samples.

    Returns:
        The position in ``0..length - 1``.

    Raises:
        IndexError: If ``index`` is out of range.
    """
    if not -length <= index < length:
        raise IndexError(f'Index {index} out of range for {length} samples.')
    return index % length


def image_id(folder: str, path: str) -> str:
    """Identifier of an image: its path under ``folder``, without suffix.

    Args:
        folder: The folder the identifiers are relative to.
        path: Image path.

    Returns:
        The relative path with ``/`` separators, for example ``'airport/airport_1'``.
    """
    rel = os.path.relpath(path, folder)
    return os.path.splitext(rel)[0].replace(os.sep, '/')


def _display_image(image: Tensor) -> NDArray[np.float64]:
    """Turn an image tensor [3, H, W] into an HWC array in [0, 1] for imshow.

    Args:
        image: Image in 0..255, 0..1 or normalised units.

    Returns:
        HWC float array in [0, 1].
    """
    array = image.detach().cpu().double().numpy().transpose(1, 2, 0)
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high > 1:
        array = array / 255.0
    elif low < 0:
        array = (array - low) / max(high - low, 1e-12)
    clipped: NDArray[np.float64] = np.clip(array, 0.0, 1.0)
    return clipped


def _label_names(label: Tensor, classes: Sequence[str]) -> list[str]:
    """Names of the classes set in a multi-hot vector.

    Args:
        label: Multi-hot [C].
        classes: Class names.

    Returns:
        The names of the present classes.
    """
    flags = label.detach().cpu().reshape(-1) > 0
    return [classes[int(i)] for i in np.flatnonzero(flags.numpy())]


def plot_multilabel_sample(
    sample: Mapping[str, Tensor],
    classes: Sequence[str],
    colormap: Sequence[tuple[int, int, int]] | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Plot an image, its mask in class colours, and its label names.

    Args:
        sample: A sample with ``'image'`` [3, H, W], ``'label'`` multi-hot [C], and
            optionally ``'mask'`` [H, W] and ``'prediction'`` (multi-hot [C], or a
            predicted mask [H, W]).
        classes: Class names.
        colormap: RGB colour of every class, used for masks.
        show_titles: Whether to show titles (label names) above the panels.
        suptitle: Optional title of the figure.

    Returns:
        The matplotlib Figure.
    """
    panels: list[tuple[str, NDArray[np.float64]]] = [
        ('Image', _display_image(sample['image']))
    ]
    colours = np.asarray(colormap if colormap is not None else [], dtype=np.float64)
    present: set[int] = set()

    def colour_mask(mask: Tensor) -> NDArray[np.float64]:
        ids = mask.detach().cpu().long().numpy()
        present.update(int(v) for v in np.unique(ids))
        if colours.size:
            palette = colours / 255.0
            return np.asarray(palette[np.clip(ids, 0, len(palette) - 1)])
        return np.asarray(plt.get_cmap('tab20')(ids % 20)[..., :3])

    if 'mask' in sample:
        panels.append(('Mask', colour_mask(sample['mask'])))
    prediction = sample.get('prediction')
    predicted_names: list[str] | None = None
    if prediction is not None:
        if prediction.dim() >= 2:
            panels.append(('Predicted mask', colour_mask(prediction)))
        else:
            predicted_names = _label_names(prediction, classes)

    fig, axes = plt.subplots(
        ncols=len(panels), figsize=(4 * len(panels), 4.6), squeeze=False
    )
    for ax, (title, array) in zip(axes[0], panels):
        ax.imshow(array, interpolation='nearest')
        ax.axis('off')
        if show_titles:
            ax.set_title(title)

    if show_titles:
        names = _label_names(sample['label'], classes)
        text = 'Labels: ' + (', '.join(names) or '(none)')
        if predicted_names is not None:
            text += '\nPredicted: ' + (', '.join(predicted_names) or '(none)')
        wrapped = '\n'.join(textwrap.fill(t, 80) for t in text.split('\n'))
        fig.text(0.5, 0.01, wrapped, ha='center', va='bottom', fontsize=9)
        if len(panels) > 1 and colours.size:
            handles = [
                Patch(color=colours[i] / 255.0, label=classes[i])
                for i in sorted(present)
                if 0 <= i < len(classes)
            ]
            if handles:
                axes[0][-1].legend(
                    handles=handles,
                    loc='upper left',
                    bbox_to_anchor=(1.0, 1.0),
                    fontsize=7,
                    frameon=False,
                )
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.08 if show_titles else 0, 1, 1))
    return fig


class RetrievalDataset(NonGeoDataset):
    """Base class of the multi-label retrieval datasets.

    Subclasses describe their archive in class attributes, call ``__init__`` of
    this class, and set ``image_paths``, ``mask_paths`` (or None), ``ids``,
    ``labels`` and ``min_pixel_fraction`` (most through :meth:`_select_split`,
    :meth:`_csv_labels` and :meth:`_set_labels`). Archives with masks derive from
    :class:`MaskRetrievalDataset`.

    Samples are ``{'image': float32 [3, H, W] in 0..255, 'label': long multi-hot
    [C], 'mask': long [H, W] (datasets with masks, unless ``load_masks`` is False),
    'index': long scalar}`` where ``'index'`` is the position in the split.
    """

    #: Class names, in label order.
    classes: ClassVar[tuple[str, ...]] = ()
    #: RGB colour of every class for plotting masks (None: no masks).
    colormap: ClassVar[tuple[tuple[int, int, int], ...] | None] = None
    #: Whether samples carry a ``'mask'``.
    has_masks: ClassVar[bool] = False
    #: Valid values of ``split``.
    splits: ClassVar[tuple[str, ...]] = ('train', 'val', 'test')

    root: PathLike
    split: str
    transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None
    image_paths: list[str]
    mask_paths: list[str] | None
    #: Stable identifiers of the split's images, in sample order.
    ids: list[str]
    #: Multi-hot labels [N, C] of the split, in sample order.
    labels: Tensor
    #: Pixel fraction a class needs to count as a label (0: any pixel).
    min_pixel_fraction: float
    #: Whether samples carry the ``'mask'`` (datasets with masks only).
    load_masks: bool = True
    #: The split file, for splits that come from one.
    split_path: str

    #: Name of the dataset in split files and messages.
    dataset_name: ClassVar[str] = ''
    #: Prefix of the split and cache file names.
    file_prefix: ClassVar[str] = ''
    #: Folder the archive extracts to, under ``root``.
    directory: ClassVar[str] = ''
    #: Name of the zip archive, under ``root``.
    filename: ClassVar[str] = ''
    #: Name of the label table under :attr:`directory` ('' when there is none).
    csv_filename: ClassVar[str] = ''
    #: Download address of the archive ('' when it has to be downloaded by hand).
    url: ClassVar[str] = ''
    #: Where to get an archive that cannot be downloaded automatically.
    source: ClassVar[str] = ''
    #: The files expected under ``root``, one ``(path, note)`` per line of the
    #: not-found message; a path ending in ``/`` is a folder.
    layout: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(
        self,
        root: PathLike = 'data',
        split: str = 'train',
        transforms: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
        download: bool = False,
        checksum: bool = False,
        split_seed: int = 0,
    ) -> None:
        """Validate the split name and store the arguments every dataset takes.

        Args:
            root: Root directory where the dataset can be found.
            split: One of :attr:`splits`.
            transforms: A function/transform that takes a sample dict and returns a
                transformed version.
            download: If True, download the dataset (where it can be downloaded).
            checksum: If True, check the archive before extracting it.
            split_seed: Seed of the stratified split.

        Raises:
            ValueError: If ``split`` is not one of :attr:`splits`.
        """
        self._check_split(split)
        self.root = root
        self.split = split
        self.transforms = transforms
        self.download = download
        self.checksum = checksum
        self.split_seed = split_seed

    def _check_split(self, split: str) -> None:
        """Validate the split name.

        Args:
            split: Requested split.

        Raises:
            ValueError: If it is not one of :attr:`splits`.
        """
        if split not in self.splits:
            raise ValueError(
                f'Invalid split {split!r} for {type(self).__name__}; expected one of '
                f'{self.splits}.'
            )

    def __len__(self) -> int:
        """Return the number of samples in the split.

        Returns:
            Length of the dataset.
        """
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return a sample.

        Args:
            index: Position in the split.

        Returns:
            The sample dictionary.

        Raises:
            IndexError: If ``index`` is out of range.
            ValueError: If the mask size differs from the image size (checked
                from the mask's header when ``load_masks`` is False, since the
                labels come from it), the mask holds an invalid value or the image
                is not 8-bit (the message names the files).
            OSError: If the image or mask cannot be decoded (the message names
                it).
        """
        index = sample_position(index, len(self.image_paths))
        image = load_rgb_image(self.image_paths[index])
        sample = {
            'image': image,
            'label': self.labels[index].clone(),
            'index': torch.tensor(index, dtype=torch.long),
        }
        if self.mask_paths is not None:
            path = self.mask_paths[index]
            if self.load_masks:
                mask = self._load_mask_array(path)
                mask_size: tuple[int, ...] = mask.shape
            else:
                # the labels come from this mask: check its size from the header
                mask_size = _header_size(path, 'mask')
            if tuple(mask_size) != tuple(image.shape[1:]):
                raise ValueError(
                    f'Mask {path!r} has size {mask_size[0]}x{mask_size[1]} but '
                    f'image {self.image_paths[index]!r} has size '
                    f'{image.shape[1]}x{image.shape[2]}.'
                )
            if self.load_masks:
                sample['mask'] = torch.from_numpy(mask)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _select_split(
        self,
        ids: Sequence[str],
        image_paths: Sequence[str],
        mask_paths: Sequence[str] | None,
        stratify_labels: Callable[[], NDArray[Any]],
        split_dir: str,
        fractions: Mapping[str, float],
    ) -> NDArray[np.int64]:
        """Keep the images of :attr:`split`, reading or creating the split file.

        Sets :attr:`split_path` (in ``split_dir``, named by :attr:`file_prefix`, the
        seed and the fractions), :attr:`ids`, :attr:`image_paths` and
        :attr:`mask_paths`.

        Args:
            ids: Every image id of the archive part being split, sorted.
            image_paths: Image file of every id.
            mask_paths: Mask file of every id, or None.
            stratify_labels: Returns the multi-hot labels [len(ids), C] to stratify
                on; called only when the split file has to be created.
            split_dir: Directory of the split file.
            fractions: Fraction of every split, in split order.

        Returns:
            int64 [N]: the position in ``ids`` of every image of the split, in
            sample order.

        Raises:
            ValueError: If an existing split file is invalid (the message names it).
        """
        seed = self.split_seed
        self.split_path = os.path.join(
            split_dir, split_file_name(self.file_prefix, seed, fractions)
        )
        splits = load_or_create_split(
            self.split_path, ids, stratify_labels, fractions, seed, self.dataset_name
        )
        row_of = {v: k for k, v in enumerate(ids)}
        rows = np.array([row_of[i] for i in splits[self.split]], dtype=np.int64)
        self.ids = list(splits[self.split])
        self.image_paths = [image_paths[r] for r in rows]
        self.mask_paths = None if mask_paths is None else [mask_paths[r] for r in rows]
        return rows

    def _set_labels(self, labels: NDArray[np.int64]) -> None:
        """Store the multi-hot labels of the split's samples.

        Args:
            labels: int64 [len(ids), C] (any shape with that many elements).
        """
        self.labels = torch.from_numpy(labels.reshape(len(self.ids), len(self.classes)))

    def _csv_labels(
        self, stems: Sequence[str], names: Sequence[str] | None = None
    ) -> NDArray[np.int64]:
        """Read the label rows of some images from the label table.

        Args:
            stems: File name of every image without extension, in sample order.
            names: How each image is named in error messages (default: its stem).

        Returns:
            int64 [len(stems), C].

        Raises:
            ValueError: If the table is invalid or has no row for an image (the
                message names the file).
        """
        path = os.path.join(self.root, self.directory, self.csv_filename)
        table = read_multilabel_csv(path, self.classes)
        return lookup_labels(table, stems, path, len(self.classes), names=names)

    def _not_found(self, empty: bool = False) -> DatasetNotFoundError:
        """Build the error raised when the dataset is not found.

        Args:
            empty: Whether the extracted folder exists but holds no images; the
                error of a downloadable archive then names the first path of
                :attr:`layout`.

        Returns:
            For an archive downloaded by hand (:attr:`source` set), an error naming
            :attr:`source` and the expected :attr:`layout`; otherwise TorchGeo's.
        """
        if not self.source:
            err = DatasetNotFoundError(self)
            if empty and self.layout:
                expected = os.path.join(self.root, *self.layout[0][0].split('/'))
                err.args = (f'{err.args[0]} No images found: expected {expected}.',)
            return err
        lines = [
            f'  {os.path.join(self.root, *path.split("/"))}{note}'
            for path, note in self.layout
        ]
        lines.append(
            f'or the zip archive of that {self.directory}/ folder as '
            f'{os.path.join(self.root, self.filename)}.'
        )
        return manual_download_error(
            self, self.dataset_name, self.source, '\n'.join(lines)
        )

    def _verify(self) -> None:
        """Verify the integrity of the dataset, extracting or downloading it.

        In TorchGeo's order: the extracted folder :attr:`directory`, else the
        archive :attr:`filename` (checked with :meth:`_check_archive` when
        ``checksum`` is True), else a download (:meth:`_download`) when
        ``download`` is True and the dataset has a :attr:`url`.

        Raises:
            DatasetNotFoundError: If the dataset is not found and cannot be
                downloaded.
            RuntimeError: If ``checksum`` is True and the archive is corrupted.
        """
        check = self._check_archive if self.checksum else None
        if find_or_extract(self.root, self.directory, self.filename, check):
            return
        if not (self.download and self.url):
            raise self._not_found()
        self._download()
        extract_archive(os.path.join(self.root, self.filename))

    def _check_archive(self, path: str) -> bool:
        """Check the integrity of the archive: the CRC-32 of every zip member.

        Args:
            path: The archive.

        Returns:
            Whether the archive is intact.
        """
        return verify_zip(path)

    def _download(self) -> None:
        """Download the archive :attr:`filename` into ``root``.

        Raises:
            NotImplementedError: In datasets without a :attr:`url`.
        """
        raise NotImplementedError(f'{type(self).__name__} cannot be downloaded.')

    def _load_mask_array(self, path: str) -> NDArray[np.int64]:
        """Decode a mask file into class ids 0..C-1.

        Args:
            path: Mask file.

        Returns:
            int64 array [H, W].

        Raises:
            NotImplementedError: In datasets without masks.
        """
        raise NotImplementedError(f'{type(self).__name__} has no masks.')

    @property
    def label_frequencies(self) -> Tensor:
        """Fraction of the split's images that carry each label.

        Returns:
            float32 tensor [C].
        """
        if len(self.labels) == 0:
            return torch.zeros(len(self.classes), dtype=torch.float32)
        return self.labels.float().mean(dim=0)

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot a sample: image, mask in class colours (if any) and label names.

        Args:
            sample: A sample returned by :meth:`__getitem__`, optionally with a
                ``'prediction'`` (multi-hot predicted labels).
            show_titles: Whether to show titles and label names.
            suptitle: Optional figure title.

        Returns:
            A matplotlib Figure.
        """
        return plot_multilabel_sample(
            sample, self.classes, self.colormap, show_titles, suptitle
        )


class MaskRetrievalDataset(RetrievalDataset):
    """Base class of the archives of images with segmentation masks.

    A subclass names where its images and masks lie (:attr:`image_folder`,
    :attr:`image_pattern`, :attr:`mask_folder`, :attr:`mask_suffix`) and overrides
    :meth:`_load_mask_array` when its masks are not index-coded.

    The identifier of an image is its path under :attr:`image_folder` without
    suffix; its mask is ``<mask_folder>/<id><mask_suffix>``. Labels come from the
    masks: class c is present when its pixel fraction is at least
    ``min_pixel_fraction`` (0 means any pixel). A seeded multi-label-stratified
    train/val/test split is written once to ``<root>/<directory>/splits/`` and
    reused, next to a cache of the per-class pixel counts of every mask.
    """

    has_masks: ClassVar[bool] = True
    #: Folder of the images, under :attr:`directory`.
    image_folder: ClassVar[str] = 'Images'
    #: Glob pattern of the images, under :attr:`image_folder`.
    image_pattern: ClassVar[str] = ''
    #: Folder of the masks, under :attr:`directory`.
    mask_folder: ClassVar[str] = ''
    #: Suffix of the mask files.
    mask_suffix: ClassVar[str] = '.png'

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
        """Initialize a new dataset instance.

        Args:
            root: Root directory where the dataset can be found.
            split: One of 'train', 'val' or 'test'.
            transforms: A function/transform that takes a sample dict and returns a
                transformed version.
            download: If True, download the dataset and store it in ``root``
                (datasets with a :attr:`url`); if the dataset is missing and has
                no url, a DatasetNotFoundError explains where to get it.
            checksum: If True, check the archive (:meth:`_check_archive`) before
                extracting it.
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
        images = os.path.join(base, self.image_folder)
        paths = sorted(glob.glob(os.path.join(images, self.image_pattern)))
        if not paths:
            raise self._not_found(empty=True)
        ids = [image_id(images, p) for p in paths]
        masks = [
            os.path.join(base, self.mask_folder, i + self.mask_suffix) for i in ids
        ]
        rows, counts = self._split_by_masks(
            os.path.join(base, 'splits'), ids, paths, masks, fractions
        )
        self._set_labels(self._split_labels(rows, counts))

    def _split_by_masks(
        self,
        split_dir: str,
        ids: Sequence[str],
        image_paths: Sequence[str],
        mask_paths: Sequence[str],
        fractions: Mapping[str, float],
    ) -> tuple[NDArray[np.int64], Callable[[], NDArray[np.int64]]]:
        """Split an archive with masks, stratified on the classes present in them.

        The per-class pixel counts of every mask are cached in ``split_dir`` and
        computed at most once, when first needed. The split does not depend on
        :attr:`min_pixel_fraction`.

        Args:
            split_dir: Directory of the split file and the pixel-count cache.
            ids: Every image id of the archive, sorted.
            image_paths: Image file of every id.
            mask_paths: Mask file of every id.
            fractions: Fraction of every split, in split order.

        Returns:
            The rows of :attr:`split` (see :meth:`_select_split`) and a function
            returning the pixel counts [len(ids), C] of the whole archive.

        Raises:
            ValueError: If the split file or a mask is invalid (the message names
                the file).
        """
        cache_path = os.path.join(split_dir, f'{self.file_prefix}_pixel_counts.npz')
        counts = functools.cache(
            lambda: load_or_compute_pixel_counts(
                cache_path, ids, mask_paths, self._load_mask_array, len(self.classes)
            )
        )
        rows = self._select_split(
            ids,
            image_paths,
            mask_paths,
            lambda: labels_from_pixel_counts(counts()),
            split_dir,
            fractions,
        )
        return rows, counts

    def _split_labels(
        self, rows: NDArray[np.int64], counts: Callable[[], NDArray[np.int64]]
    ) -> NDArray[np.int64]:
        """Labels of the split's images, from the pixel counts of their masks.

        Args:
            rows: The rows of :attr:`split` (see :meth:`_select_split`).
            counts: Returns the pixel counts [N, C] of the whole archive.

        Returns:
            int64 [len(rows), C].
        """
        return labels_from_pixel_counts(counts()[rows], self.min_pixel_fraction)

    def _load_mask_array(self, path: str) -> NDArray[np.int64]:
        """Decode the index-coded mask file ``path`` (values 1..C).

        Returns:
            Class ids 0..C-1, int64 [H, W].

        Raises:
            ValueError: If a value is outside 1..C (the message names the file).
            OSError: If the file cannot be decoded (the message names it).
        """
        try:
            with Image.open(path) as img:
                array: NDArray[Any] = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as err:
            raise OSError(f'Could not decode mask {path!r}: {err}') from err
        return decode_index_mask(array, path, len(self.classes))
