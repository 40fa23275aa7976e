"""Retrieval on the splits of a TorchGeo multi-label classification datamodule."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from .._compat import NonGeoDataModule
from ..datasets.base import RetrievalDataset, plot_multilabel_sample, sample_position
from .base import RetrievalDataModule

__all__ = ('TorchGeoRetrievalDataModule', 'TorchGeoRetrievalSplit')

#: Lightning stage whose ``setup`` builds each split, and the attribute holding it.
_SPLIT_STAGES = {
    'train': ('fit', 'train_dataset'),
    'val': ('validate', 'val_dataset'),
    'test': ('test', 'test_dataset'),
}

#: Loading options of :class:`RetrievalDataModule` (its arguments other than the
#: dataset's) and their defaults.
_LOADING = {
    name: parameter.default
    for name, parameter in inspect.signature(
        RetrievalDataModule.__init__
    ).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def _resolve_datamodule_class(name: str | type[Any]) -> type[NonGeoDataModule]:
    """Find a TorchGeo datamodule class by name.

    Args:
        name: The class, its name in :mod:`torchgeo.datamodules`, or a dotted
            ``module.Class`` path.

    Returns:
        The class.

    Raises:
        ValueError: If the name names no class, or a class that is not a
            :class:`~torchgeo.datamodules.NonGeoDataModule`.
    """
    target: Any = name
    if isinstance(name, str):
        if '.' in name:
            module, _, attr = name.rpartition('.')
            try:
                target = getattr(importlib.import_module(module), attr, None)
            except ImportError as exc:
                raise ValueError(f'cannot import datamodule {name!r}: {exc}') from exc
        else:
            datamodules = importlib.import_module('torchgeo.datamodules')
            target = getattr(datamodules, name, None)
        if target is None:
            raise ValueError(f'unknown TorchGeo datamodule {name!r}')
    if not (inspect.isclass(target) and issubclass(target, NonGeoDataModule)):
        raise ValueError(
            f'{name!r} is not a TorchGeo NonGeoDataModule: retrieval needs a '
            'datamodule of image patches with train, val and test splits'
        )
    return target


def _target_loader(dataset: object) -> Callable[[int], Tensor] | None:
    """The dataset's ``_load_target(index)``, which reads a label without its image.

    Args:
        dataset: A TorchGeo dataset.

    Returns:
        The bound method when the dataset has one that takes only an index (as
        TorchGeo's BigEarthNet), else None.
    """
    method = getattr(dataset, '_load_target', None)
    if not callable(method):
        return None
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(parameters) != 1 or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return None
    loader: Callable[[int], Tensor] = method
    return loader


class TorchGeoRetrievalSplit(RetrievalDataset):
    """One split of a TorchGeo dataset, as the retrieval datamodules expect it.

    Samples are ``{'image': float [C, H, W] in the dataset's units, 'label': long
    multi-hot [C], 'index': long}`` (the dataset's own transforms apply before).
    :attr:`ids` name the samples (the patch folder or file where the dataset records
    it, else ``<split>/<position>``); :attr:`labels` are read once, without the
    images when the dataset can load a target alone (``_load_target(index)``, as
    TorchGeo's BigEarthNet, for ``label_key='label'``), else in one pass over the
    samples.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        split: str,
        label_key: str = 'label',
        source: str = '',
    ) -> None:
        """Initialize a new TorchGeoRetrievalSplit instance.

        Args:
            dataset: The TorchGeo dataset of the split.
            split: 'train', 'val' or 'test'.
            label_key: Key of the multi-hot label in the dataset's samples.
            source: Name of the datamodule, for error messages.

        Raises:
            ValueError: If the samples carry no multi-hot ``label_key``.
        """
        super().__init__(root=str(getattr(dataset, 'root', '')), split=split)
        self.dataset = dataset
        self.label_key = label_key
        self.datamodule_name = source or type(dataset).__name__
        self.mask_paths = None
        self.min_pixel_fraction = 0.0
        self.load_masks = False
        self.image_paths = self._image_paths()
        self.ids = self._ids()
        self._labels: Tensor | None = None
        if len(self) > 0:
            self._check_label(self._read_label(0))

    def __len__(self) -> int:
        """Return the number of samples in the split.

        Returns:
            Length of the dataset.
        """
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return a sample.

        Args:
            index: Position in the split.

        Returns:
            ``'image'`` (float), ``'label'`` (long multi-hot) and ``'index'``.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        index = sample_position(index, len(self))
        sample = self.dataset[index]
        label = self._check_label(sample[self.label_key])
        return {
            'image': sample['image'].float(),
            'label': label,
            'index': torch.tensor(index, dtype=torch.long),
        }

    # ----------------------------------------------------------------- labels

    def _read_label(self, index: int) -> Tensor:
        """Read the label of one sample, without its image where possible.

        Args:
            index: Position in the split.

        Returns:
            The label as the dataset stores it.

        Raises:
            ValueError: If the samples have no ``label_key``.
        """
        load_target = _target_loader(self.dataset)
        if load_target is not None and self.label_key == 'label':
            return torch.as_tensor(load_target(index))
        sample = self.dataset[index]
        if self.label_key not in sample:
            raise ValueError(
                f'{self.datamodule_name} is not a multi-label classification datamodule: its '
                f'samples have no {self.label_key!r} (keys: {", ".join(sample)}); '
                'set label_key to the key of the multi-hot label'
            )
        return torch.as_tensor(sample[self.label_key])

    def _check_label(self, label: Tensor) -> Tensor:
        """Check that a label is multi-hot and return it as long.

        Args:
            label: A sample's label.

        Returns:
            The label, long ``[C]``.

        Raises:
            ValueError: If it is not a vector of zeros and ones.
        """
        if label.ndim != 1 or label.numel() == 0:
            kind = 'a class index' if label.ndim == 0 else f'shape {tuple(label.shape)}'
            raise ValueError(
                f'{self.datamodule_name} is not a multi-label classification datamodule: its '
                f'{self.label_key!r} is {kind}, not a multi-hot vector [C]'
            )
        if label.dtype.is_floating_point or label.dtype == torch.bool:
            if not bool(((label == 0) | (label == 1)).all()):
                raise ValueError(
                    f'{self.datamodule_name}: {self.label_key!r} holds values other than 0 and '
                    '1; retrieval needs multi-hot labels'
                )
        elif bool((label < 0).any() | (label > 1).any()):
            raise ValueError(
                f'{self.datamodule_name}: {self.label_key!r} holds values other than 0 and 1; '
                'retrieval needs multi-hot labels'
            )
        return label.long()

    @property
    def labels(self) -> Tensor:  # type: ignore[override]
        """Multi-hot labels of all samples, read once.

        Returns:
            long tensor [N, C].
        """
        if self._labels is None:
            rows = [self._check_label(self._read_label(i)) for i in range(len(self))]
            self._labels = (
                torch.stack(rows)
                if rows
                else torch.zeros(0, self.num_classes, dtype=torch.long)
            )
        return self._labels

    @property
    def num_classes(self) -> int:
        """Number of labels C.

        Returns:
            The length of the labels (or the dataset's ``num_classes`` when the
            split is empty).
        """
        if len(self) > 0:
            return int(self._read_label(0).numel())
        return int(getattr(self.dataset, 'num_classes', 0))

    @property
    def label_frequencies(self) -> Tensor:
        """Fraction of the split's images that carry each label.

        Returns:
            float32 tensor [C].
        """
        if len(self) == 0:
            return torch.zeros(self.num_classes, dtype=torch.float32)
        return self.labels.float().mean(dim=0)

    # -------------------------------------------------------------------- ids

    def _folder(self, index: int) -> str | None:
        """The file or folder a sample is read from, where the dataset records it.

        Args:
            index: Position in the split.

        Returns:
            The path, or None.
        """
        folders = getattr(self.dataset, 'folders', None)
        if isinstance(folders, list) and index < len(folders):
            entry = folders[index]
            if isinstance(entry, dict):
                bands = getattr(self.dataset, 'bands', None)
                key = 's1' if bands == 's1' else 's2'
                value = entry.get(key, next(iter(entry.values()), None))
                return None if value is None else str(value)
            return str(entry)
        files = getattr(self.dataset, 'files', None)
        if isinstance(files, list) and index < len(files):
            entry = files[index]
            if isinstance(entry, dict):
                entry = entry.get('image')
            return None if entry is None else str(entry)
        return None

    def _ids(self) -> list[str]:
        """Name every sample.

        Returns:
            The base name of each sample's folder or file (without suffix) when all
            are known and distinct, else ``<split>/<position>``.
        """
        paths = [self._folder(i) for i in range(len(self))]
        if all(p is not None for p in paths):
            names = [
                os.path.splitext(os.path.basename(os.path.normpath(str(p))))[0]
                for p in paths
            ]
            if len(set(names)) == len(names):
                return names
        return [f'{self.split}/{i}' for i in range(len(self))]

    def _image_paths(self) -> list[str]:
        """The image file of every sample, when each sample is one file.

        Returns:
            The files (for the search tools), or an empty list when samples are
            folders of band files (as BigEarthNet) or unknown.
        """
        paths = [self._folder(i) for i in range(len(self))]
        if paths and all(p is not None and os.path.isfile(p) for p in paths):
            return [str(p) for p in paths]
        return []

    def plot(
        self,
        sample: dict[str, Tensor],
        show_titles: bool = True,
        suptitle: str | None = None,
    ) -> Figure:
        """Plot bands 1-3 of a sample, stretched to their range, and its labels.

        Args:
            sample: A sample returned by :meth:`__getitem__`.
            show_titles: Whether to show titles and label names.
            suptitle: Optional figure title.

        Returns:
            A matplotlib Figure.
        """
        classes = tuple(getattr(self.dataset, 'classes', ()) or ())
        if len(classes) != int(sample['label'].numel()):
            classes = tuple(str(i) for i in range(int(sample['label'].numel())))
        image = sample['image'][:3].float()
        low, high = image.amin(), image.amax()
        image = (image - low) / (high - low).clamp(min=1e-6) * 255
        return plot_multilabel_sample(
            {**sample, 'image': image}, classes, None, show_titles, suptitle
        )


class TorchGeoRetrievalDataModule(RetrievalDataModule):
    """Retrieval on a TorchGeo multi-label classification datamodule.

    Wraps a TorchGeo :class:`~torchgeo.datamodules.NonGeoDataModule` (for example
    ``BigEarthNetDataModule``) and serves its splits like the other retrieval
    datamodules: training batches (random or label-aware), the validation split,
    one test loader of queries followed by their database (``query_split`` 'test'
    against train + val, or 'val' against train, told apart by ``'database'``), a
    predict loader with :attr:`predict_ids`, every sample with its ``'index'`` and
    a long multi-hot ``'label'``. The splits are the ones the TorchGeo datamodule's
    ``setup`` builds; batches are normalised with its ``mean`` and ``std``, in the
    units of its images (for BigEarthNet the band minima and the max - min ranges
    of raw reflectances), and resized to ``image_size`` on the device. The TorchGeo
    datamodule's own augmentations are not applied.
    """

    def __init__(
        self,
        datamodule_class: str | type[NonGeoDataModule] = 'BigEarthNetDataModule',
        label_key: str = 'label',
        **kwargs: Any,
    ) -> None:
        """Initialize a new TorchGeoRetrievalDataModule instance.

        Args:
            datamodule_class: The TorchGeo datamodule: its class, its name in
                :mod:`torchgeo.datamodules` or a dotted path.
            label_key: Key of the multi-hot label in the dataset's samples.
            **kwargs: Loading options of
                :class:`~torchgeo_macl.datamodules.RetrievalDataModule`
                (``batch_size``, ``num_workers``, ``image_size``, ``sampler``, ...),
                and arguments of the TorchGeo datamodule and its dataset (root,
                bands, num_classes, download, ...), as TorchGeo's ``dict_kwargs``.

        Raises:
            ValueError: If ``datamodule_class`` is not a TorchGeo NonGeoDataModule or
                an argument is invalid.
        """
        cls = _resolve_datamodule_class(datamodule_class)
        torchgeo_kwargs = {
            name: kwargs.pop(name) for name in list(kwargs) if name not in _LOADING
        }
        loading = {**_LOADING, **kwargs}
        self.torchgeo_datamodule = cls(
            batch_size=loading['batch_size'],
            num_workers=loading['num_workers'],
            **torchgeo_kwargs,
        )
        super().__init__(
            self.torchgeo_datamodule.dataset_class,  # type: ignore[arg-type]
            **kwargs,
            **self.torchgeo_datamodule.kwargs,
        )
        self.datamodule_class = cls
        self.label_key = label_key
        self.mean = torch.as_tensor(self.torchgeo_datamodule.mean).float().flatten()
        self.std = torch.as_tensor(self.torchgeo_datamodule.std).float().flatten()

    def prepare_data(self) -> None:
        """Download the data through the TorchGeo datamodule when it is asked to."""
        self.torchgeo_datamodule.prepare_data()

    def _split(self, split: str) -> RetrievalDataset:
        """Build (once) and return the retrieval view of a split.

        Args:
            split: 'train', 'val' or 'test'.

        Returns:
            The split.

        Raises:
            ValueError: If the TorchGeo datamodule builds no such split or its
                samples are not multi-label.
        """
        if split not in self._splits:
            stage, attribute = _SPLIT_STAGES[split]
            inner = self.torchgeo_datamodule
            dataset = getattr(inner, attribute, None)
            if dataset is None:
                inner.setup(stage)
                dataset = getattr(inner, attribute, None)
            if dataset is None:
                raise ValueError(
                    f'{self.datamodule_class.__name__} builds no {split} split'
                )
            self._splits[split] = TorchGeoRetrievalSplit(
                dataset, split, self.label_key, self.datamodule_class.__name__
            )
        return self._splits[split]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the dataset.

        Returns:
            The dataset's class names when it lists one per label, else the label
            positions as strings.
        """
        split = self._split('train')
        assert isinstance(split, TorchGeoRetrievalSplit)
        count = self.num_classes
        names = getattr(split.dataset, 'classes', None)
        if names is not None and len(names) == count:
            return tuple(str(n) for n in names)
        class_sets = getattr(split.dataset, 'class_sets', None)
        if isinstance(class_sets, dict) and len(class_sets.get(count, ())) == count:
            return tuple(str(n) for n in class_sets[count])
        return tuple(str(i) for i in range(count))

    @property
    def num_classes(self) -> int:
        """Number of labels.

        Returns:
            C, the length of the train split's labels.
        """
        split = self._split('train')
        assert isinstance(split, TorchGeoRetrievalSplit)
        return split.num_classes

    @property
    def min_pixel_fraction(self) -> float:
        """Pixel fraction a class needs to count as a label.

        Returns:
            0: labels do not come from masks.
        """
        return 0.0

    @property
    def has_masks(self) -> bool:
        """Whether batches carry a ``'mask'``.

        Returns:
            False.
        """
        return False

    @property
    def value_range(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The values TorchGeo's normalisation maps to 0..1 (``mean``, ``mean + std``).

        TorchGeo's datamodules normalise to about 0..1 (min-max statistics such as
        BigEarthNet's, or 0 and 255 for 8-bit data).

        Returns:
            ``(value_min, value_max)``, one value per band each.
        """
        low = [float(v) for v in self.mean.flatten()]
        high = [lo + float(s) for lo, s in zip(low, self.std.flatten())]
        return tuple(low), tuple(high)
