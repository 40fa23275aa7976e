"""Base datamodule of the multi-label retrieval datasets."""

from __future__ import annotations

import bisect
import functools
import importlib
import inspect
from collections import Counter
from collections.abc import Iterator, Sequence, Sized
from typing import Any, ClassVar

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler
from torch.utils.data.dataloader import default_collate

from .._compat import NonGeoDataModule
from ..datasets.base import MaskRetrievalDataset, RetrievalDataset, sample_position
from ..transforms.preprocess import normalize, resize
from .spec import RetrievalDataSpec

__all__ = (
    'IndexedConcatDataset',
    'MaskRetrievalDataModule',
    'QueryDatabaseDataset',
    'RetrievalDataModule',
    'retrieval_collate',
)

#: ImageNet channel statistics in 0..255 units.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

_SAMPLERS = ('random', 'label_aware')
#: Query split of the test loader -> the splits that form its database.
_QUERY_SPLITS = {'test': ('train', 'val'), 'val': ('train',)}
_PREDICT_SPLITS = {
    'database': ('train', 'val'),
    'test': ('test',),
    'all': ('train', 'val', 'test'),
}


class IndexedConcatDataset(ConcatDataset[dict[str, Tensor]]):
    """Concatenation of retrieval datasets whose ``'index'`` is the global position.

    Used for the retrieval database (train + val): sample ``i`` of the concatenation
    has ``'index'`` ``i``, and :attr:`ids` and :attr:`labels` follow the same order.
    """

    datasets: list[RetrievalDataset]  # type: ignore[assignment]

    def __init__(self, datasets: Sequence[RetrievalDataset]) -> None:
        """Initialize a new IndexedConcatDataset instance.

        Args:
            datasets: Datasets to concatenate, in order.
        """
        super().__init__(datasets)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return a sample with ``'index'`` set to its position in the concatenation.

        Args:
            index: Position in the concatenation.

        Returns:
            The sample dictionary.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        index = sample_position(index, len(self))
        part = bisect.bisect_right(self.cumulative_sizes, index)
        offset = self.cumulative_sizes[part - 1] if part else 0
        sample = dict(self.datasets[part][index - offset])
        sample['index'] = torch.tensor(index, dtype=torch.long)
        return sample

    @property
    def ids(self) -> list[str]:
        """Identifiers of all samples, in order.

        Returns:
            The concatenated ids.
        """
        return [i for ds in self.datasets for i in ds.ids]

    @property
    def labels(self) -> Tensor:
        """Multi-hot labels of all samples, in order.

        Returns:
            long tensor [N, C].
        """
        return torch.cat([ds.labels for ds in self.datasets])


class QueryDatabaseDataset(Dataset[dict[str, Tensor]]):
    """The queries of a retrieval test followed by their database, as one dataset.

    The test loader of :class:`RetrievalDataModule` reads this dataset, so that a
    test is one loader (one column of results) rather than a query loader and a
    database loader. Sample ``i < len(queries)`` is query ``i``, the others are the
    database items in order. Every sample keeps the ``'index'`` of the dataset it
    comes from (a query's position in the query split, a database item's position
    in the database) and gains ``'database'``, a bool scalar: False for a query,
    True for a database item.
    """

    def __init__(
        self, queries: Dataset[dict[str, Tensor]], database: Dataset[dict[str, Tensor]]
    ) -> None:
        """Initialize a new QueryDatabaseDataset instance.

        Args:
            queries: The query split (samples with their ``'index'``).
            database: The database, e.g. an :class:`IndexedConcatDataset`.
        """
        self.queries = queries
        self.database = database

    @property
    def num_queries(self) -> int:
        """Number of queries, the position of the first database item.

        Returns:
            ``len(queries)``.
        """
        return len(self.queries)  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Return the number of queries plus the number of database items.

        Returns:
            The length of the dataset.
        """
        return self.num_queries + len(self.database)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Return a query or a database item, marked by ``'database'``.

        Args:
            index: Position in the dataset (queries first).

        Returns:
            The sample dictionary with its ``'index'`` and ``'database'``.

        Raises:
            IndexError: If ``index`` is out of range.
        """
        index = sample_position(index, len(self))
        in_database = index >= self.num_queries
        if in_database:
            sample = dict(self.database[index - self.num_queries])
        else:
            sample = dict(self.queries[index])
        sample['database'] = torch.tensor(in_database)
        return sample


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Check that an argument is one of its choices.

    Args:
        name: Name of the argument.
        value: Its value.
        choices: The accepted values.

    Raises:
        ValueError: If ``value`` is not in ``choices``.
    """
    if value not in choices:
        raise ValueError(f'Invalid {name} {value!r}; expected one of {choices}.')


def _most_common_size(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The most frequent image size of a batch (the first one on ties).

    Args:
        shapes: (height, width) of every sample.

    Returns:
        The chosen size.
    """
    counts = Counter(shapes)
    best = max(counts.values())
    return next(s for s in shapes if counts[s] == best)


def retrieval_collate(
    samples: list[dict[str, Tensor]], size: int | None = None
) -> dict[str, Tensor]:
    """Collate samples, resizing the odd ones when image sizes differ.

    Archives such as DLRSD (from UC Merced) contain a few images that are not
    256x256. Samples whose size differs from ``size`` (or, without ``size``, from
    the most common size in the batch) are resized on the CPU with
    :func:`~torchgeo_macl.transforms.preprocess.resize` before stacking, so that no
    image is resized twice; batches of one size are collated unchanged.

    Args:
        samples: Sample dictionaries.
        size: Target side when resizing is needed.

    Returns:
        The batch dictionary.
    """
    shapes = [(int(s['image'].shape[-2]), int(s['image'].shape[-1])) for s in samples]
    if len(set(shapes)) <= 1:
        return dict(default_collate(samples))
    target = (size, size) if size is not None else _most_common_size(shapes)
    fixed = []
    for sample in samples:
        if tuple(sample['image'].shape[-2:]) != target:
            sample = dict(sample)
            mask = sample['mask'][None] if 'mask' in sample else None
            image, mask = resize(sample['image'][None].float(), target, mask)
            sample['image'] = image[0]
            if mask is not None:
                sample['mask'] = mask[0]
        fixed.append(sample)
    return dict(default_collate(fixed))


class EpochRandomSampler(RandomSampler):
    """A random permutation that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so the order of an epoch
    is the same whether training ran straight through or resumed from a checkpoint.
    Being a :class:`~torch.utils.data.RandomSampler`, Lightning replaces it by a
    shuffling ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        """Initialise the sampler.

        Args:
            data_source: The dataset.
            seed: Base seed of the permutations.
        """
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation :meth:`__iter__` yields.

        Args:
            epoch: Epoch number.
        """
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        """Yield the permutation of the current epoch.

        Yields:
            Dataset indices.
        """
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class RetrievalDataModule(NonGeoDataModule):
    """Base LightningDataModule of the multi-label retrieval datasets.

    Loaders:

    * ``train_dataloader``: the train split, shuffled with ``drop_last=True``, or
      batches from :class:`torchgeo_macl.samplers.LabelAwareBatchSampler` with
      ``sampler='label_aware'`` (rank-aware: with DDP use
      ``Trainer(use_distributed_sampler=False)`` since the sampler already splits
      batches between ranks).
    * ``val_dataloader``: the val split.
    * ``test_dataloader``: one loader over a :class:`QueryDatabaseDataset`: the
      ``query_split`` ('test': the test split against train + val; 'val': the val
      split against train, for model selection without touching the test split)
      followed by its database, each sample marked by a bool ``'database'``; a
      database item's ``'index'`` is its position in the database.
    * ``predict_dataloader``: ``predict_split`` ('database' = train + val, 'test',
      or 'all' = train + val + test), with :attr:`predict_ids` in the same order.

    After a batch reaches the device, :meth:`on_after_batch_transfer` resizes
    ``'image'`` (bilinear) and ``'mask'`` (nearest) to ``image_size`` and normalises
    ``'image'`` with :attr:`mean` and :attr:`std` (0..255 units); ``'label'``,
    ``'index'`` and ``'database'`` are left untouched. This is the only resize and
    normalisation of the batches; :meth:`retrieval_spec` tells a task what they are.
    Training augmentations (the two views of contrastive learning) are not applied
    here.
    """

    mean = torch.tensor(IMAGENET_MEAN)
    std = torch.tensor(IMAGENET_STD)

    def __init__(
        self,
        dataset_class: type[RetrievalDataset],
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int | None = None,
        sampler: str = 'random',
        sampler_m: int = 2,
        sampler_sigma: float = 0.5,
        seed: int = 0,
        predict_split: str = 'database',
        query_split: str = 'test',
        **kwargs: Any,
    ) -> None:
        """Initialize a new RetrievalDataModule instance.

        Args:
            dataset_class: The retrieval dataset class.
            batch_size: Size of each mini-batch.
            num_workers: Number of workers for parallel data loading.
            image_size: Side images (and masks) are resized to on the device; None
                keeps the stored size.
            sampler: 'random' (shuffled batches) or 'label_aware'
                (:class:`~torchgeo_macl.samplers.LabelAwareBatchSampler`).
            sampler_m: Images per drawn label of the label-aware sampler.
            sampler_sigma: Label-frequency smoothing of the label-aware sampler
                (0: natural frequencies, 1: uniform over labels).
            seed: Seed of the training order.
            predict_split: 'database', 'test' or 'all'.
            query_split: Queries of the test loader: 'test' (database train +
                val) or 'val' (database train).
            **kwargs: Keyword arguments of ``dataset_class`` (root, download, ...).

        Raises:
            ValueError: If an argument is invalid, or ``kwargs`` holds a name that
                ``dataset_class`` does not take.
        """
        accepted = inspect.signature(dataset_class).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(kwargs) - set(accepted))
            if unknown:
                raise ValueError(
                    f'{type(self).__name__} got unexpected argument(s) '
                    f'{", ".join(unknown)}: neither a loading option nor an argument '
                    f'of {dataset_class.__name__}'
                )
        if batch_size < 1:
            raise ValueError(f'batch_size must be positive, got {batch_size}.')
        if num_workers < 0:
            raise ValueError(f'num_workers must be >= 0, got {num_workers}.')
        if image_size is not None and image_size < 1:
            raise ValueError(f'image_size must be positive or None, got {image_size}.')
        _check_choice('sampler', sampler, _SAMPLERS)
        _check_choice('predict_split', predict_split, tuple(_PREDICT_SPLITS))
        _check_choice('query_split', query_split, tuple(_QUERY_SPLITS))
        super().__init__(dataset_class, batch_size, num_workers, **kwargs)
        self.retrieval_dataset_class = dataset_class
        self.image_size = image_size
        self.sampler = sampler
        self.sampler_m = sampler_m
        self.sampler_sigma = sampler_sigma
        self.seed = seed
        self.predict_split = predict_split
        self.query_split = query_split
        self.collate_fn = functools.partial(retrieval_collate, size=image_size)
        self._splits: dict[str, RetrievalDataset] = {}
        self.database_dataset: IndexedConcatDataset | None = None
        #: Ids of the predict loader's samples, in order (after ``setup('predict')``).
        self.predict_ids: list[str] = []

    # ------------------------------------------------------------------ datasets

    def _split(self, split: str) -> RetrievalDataset:
        """Build (once) and return the dataset of a split.

        Args:
            split: 'train', 'val' or 'test'.

        Returns:
            The dataset.
        """
        if split not in self._splits:
            self._splits[split] = self.retrieval_dataset_class(
                split=split,  # type: ignore[call-arg]
                **self.kwargs,
            )
        return self._splits[split]

    def setup(self, stage: str) -> None:
        """Set up the datasets of a stage.

        Args:
            stage: 'fit', 'validate', 'test' or 'predict'.
        """
        if stage == 'fit':
            self.train_dataset = self._split('train')
        if stage in ('fit', 'validate'):
            self.val_dataset = self._split('val')
        if stage == 'test':
            self.test_dataset = self._split(self.query_split)
            self.database_dataset = self._database()
        if stage == 'predict':
            parts = [self._split(s) for s in _PREDICT_SPLITS[self.predict_split]]
            predict = IndexedConcatDataset(parts)
            self.predict_dataset = predict
            self.predict_ids = predict.ids

    # ---------------------------------------------------------------- properties

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the dataset.

        Returns:
            The class names, in label order.
        """
        return self.retrieval_dataset_class.classes

    @property
    def num_classes(self) -> int:
        """Number of classes.

        Returns:
            C.
        """
        return len(self.retrieval_dataset_class.classes)

    @property
    def label_frequencies(self) -> Tensor:
        """Fraction of the training images carrying each label (for the losses).

        Builds the train dataset if :meth:`setup` has not done so yet.

        Returns:
            float32 tensor [C].
        """
        return self._split('train').label_frequencies

    @property
    def min_pixel_fraction(self) -> float:
        """Pixel fraction a class needs to count as a label (0: any pixel).

        Returns:
            The threshold (0 for datasets without masks).
        """
        return float(self.kwargs.get('min_pixel_fraction', 0.0))

    @property
    def has_masks(self) -> bool:
        """Whether batches carry a ``'mask'``.

        Returns:
            True for datasets with masks unless ``load_masks`` is False.
        """
        return self.retrieval_dataset_class.has_masks and bool(
            self.kwargs.get('load_masks', True)
        )

    def retrieval_spec(self, stage: str = 'fit') -> RetrievalDataSpec:
        """Describe the batches of this datamodule for a retrieval task.

        Args:
            stage: Lightning stage; the label frequencies (which need the train
                split) are included for ``'fit'`` only.

        Returns:
            The number of labels, the normalisation, the image size, the mask
            settings and, when fitting, the training label frequencies.
        """
        return RetrievalDataSpec(
            num_classes=self.num_classes,
            mean=tuple(float(v) for v in self.mean.flatten()),
            std=tuple(float(v) for v in self.std.flatten()),
            image_size=self.image_size,
            min_pixel_fraction=self.min_pixel_fraction,
            has_masks=self.has_masks,
            label_frequencies=self.label_frequencies if stage == 'fit' else None,
            value_min=self.value_range[0],
            value_max=self.value_range[1],
        )

    @property
    def value_range(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Lowest and highest valid value of the stored images (8-bit: 0 and 255).

        Returns:
            ``(value_min, value_max)``, one value or one per band each.
        """
        return (0.0,), (255.0,)

    # --------------------------------------------------------------- dataloaders

    def _loader(
        self, dataset: Dataset[dict[str, Tensor]], **kwargs: Any
    ) -> DataLoader[dict[str, Tensor]]:
        """Build a loader with this datamodule's workers and collate function.

        Args:
            dataset: The dataset.
            **kwargs: Batching arguments of :class:`~torch.utils.data.DataLoader`
                (``sampler``, ``batch_sampler``, ``drop_last``); without
                ``batch_sampler``, batches of :attr:`batch_size` in dataset order
                unless a sampler is given.

        Returns:
            The DataLoader.
        """
        if 'batch_sampler' not in kwargs:
            kwargs.setdefault('batch_size', self.batch_size)
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Return the training loader (random or label-aware batches).

        Returns:
            The DataLoader of the train split.

        Raises:
            ValueError: If the train split holds fewer images than one batch.
        """
        dataset = self._split('train')
        self.train_dataset = dataset
        if len(dataset) < self.batch_size:
            raise ValueError(
                f'batch_size={self.batch_size} is larger than the {len(dataset)} '
                'images of the train split: no training step would run (full batches '
                'only); lower batch_size'
            )
        if self.sampler == 'label_aware':
            samplers = importlib.import_module('torchgeo_macl.samplers')
            sampler_class = samplers.LabelAwareBatchSampler
            num_replicas: int | None = None
            rank: int | None = None
            trainer = getattr(self, 'trainer', None)
            if trainer is not None:
                num_replicas = int(trainer.world_size)
                rank = int(trainer.global_rank)
            batch_sampler = sampler_class(
                dataset.labels,
                self.batch_size,
                m=self.sampler_m,
                sigma=self.sampler_sigma,
                seed=self.seed,
                num_replicas=num_replicas,
                rank=rank,
            )
            return self._loader(dataset, batch_sampler=batch_sampler)
        return self._loader(
            dataset, sampler=EpochRandomSampler(dataset, seed=self.seed), drop_last=True
        )

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Return the validation loader.

        Returns:
            The DataLoader of the val split.
        """
        self.val_dataset = self._split('val')
        return self._loader(self.val_dataset)

    def _database(self) -> IndexedConcatDataset:
        """The retrieval database of the test loader's queries.

        Returns:
            train + val for ``query_split='test'``, train for ``'val'``.
        """
        return IndexedConcatDataset(
            [self._split(s) for s in _QUERY_SPLITS[self.query_split]]
        )

    def test_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Return the loader of the queries followed by their database.

        Returns:
            One DataLoader over a :class:`QueryDatabaseDataset` of
            :attr:`test_dataset` (``query_split``) and :attr:`database_dataset`
            (see the class documentation): ``'database'`` tells the two apart, and
            a database sample's ``'index'`` is its position in the database.
        """
        self.test_dataset = self._split(self.query_split)
        if self.database_dataset is None:
            self.database_dataset = self._database()
        return self._loader(
            QueryDatabaseDataset(self.test_dataset, self.database_dataset)
        )

    def predict_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Return the loader of ``predict_split``.

        Returns:
            The DataLoader; :attr:`predict_ids` lists its samples in order.
        """
        if self.predict_dataset is None:
            self.setup('predict')
        dataset = self.predict_dataset
        if dataset is None:  # pragma: no cover - setup('predict') always sets it
            raise RuntimeError('setup("predict") did not create a predict dataset.')
        return self._loader(dataset)

    # ------------------------------------------------------------ device hooks

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Resize and normalise a batch on its device.

        Args:
            batch: The batch (``'image'`` float [B, 3, H, W] in 0..255, ``'label'``,
                ``'index'``, optionally ``'mask'`` [B, H, W] and, in the test
                loader, ``'database'``).
            dataloader_idx: Index of the loader the batch came from.

        Returns:
            The batch with ``'image'`` resized and normalised and ``'mask'``
            resized; other entries unchanged.
        """
        batch = dict(batch)
        image = batch['image'].float()
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
            image, mask = resize(image, size, batch.get('mask'))
            if mask is not None:
                batch['mask'] = mask
        batch['image'] = normalize(image, self.mean, self.std)
        return batch

    def plot(self, *args: Any, **kwargs: Any) -> Figure | None:
        """Plot a sample with the dataset's :meth:`plot`.

        Args:
            *args: Arguments of the dataset's ``plot``.
            **kwargs: Keyword arguments of the dataset's ``plot``.

        Returns:
            A matplotlib Figure.
        """
        if self._splits:
            dataset = next(iter(self._splits.values()))
        else:
            dataset = self._split('val')
        return dataset.plot(*args, **kwargs)


class MaskRetrievalDataModule(RetrievalDataModule):
    """Base LightningDataModule of the datasets with segmentation masks.

    A subclass names its :class:`~torchgeo_macl.datasets.MaskRetrievalDataset` in
    :attr:`mask_dataset_class`; this class takes the arguments those datasets share
    and passes them on with the loading options of :class:`RetrievalDataModule`.
    """

    #: The dataset of the datamodule.
    mask_dataset_class: ClassVar[type[MaskRetrievalDataset]]

    def __init__(
        self,
        root: str = 'data',
        min_pixel_fraction: float = 0.0,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        load_masks: bool = True,
        download: bool = False,
        checksum: bool = False,
        **kwargs: Any,
    ) -> None:
        """Initialize a new datamodule instance.

        Args:
            root: Root directory of the dataset.
            min_pixel_fraction: Pixel fraction a class needs to count as a label.
            split_seed: Seed of the stratified split.
            split_fractions: Train, val and test fractions.
            load_masks: Whether batches carry the masks.
            download: If True, download the dataset (datasets with a download
                address).
            checksum: If True, check the archive before extracting it.
            **kwargs: Loading options of :class:`RetrievalDataModule`
                (``batch_size``, ``num_workers``, ``image_size``, ``sampler``, ...)
                and further arguments of :attr:`mask_dataset_class`.
        """
        super().__init__(
            self.mask_dataset_class,
            root=root,
            min_pixel_fraction=min_pixel_fraction,
            split_seed=split_seed,
            split_fractions=tuple(split_fractions),
            load_masks=load_masks,
            download=download,
            checksum=checksum,
            **kwargs,
        )
