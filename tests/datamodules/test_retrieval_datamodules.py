import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from matplotlib.figure import Figure

from torchgeo_macl import samplers
from torchgeo_macl._compat import NonGeoDataModule
from torchgeo_macl.datamodules import (
    DLRSDRetrievalDataModule,
    IndexedConcatDataset,
    MLAIDRetrievalDataModule,
    QueryDatabaseDataset,
    RetrievalDataModule,
    RetrievalDataSpec,
    WHDLDRetrievalDataModule,
    retrieval_collate,
)
from torchgeo_macl.datasets import DLRSD

DATA = Path(__file__).parents[1] / 'data'
FOLDERS = {
    DLRSDRetrievalDataModule: ('dlrsd', 'DLRSD'),
    MLAIDRetrievalDataModule: ('mlaid', 'AID_multilabel'),
    WHDLDRetrievalDataModule: ('whdld', 'WHDLD'),
}
MODULES = list(FOLDERS)
HAS_SAMPLER = importlib.util.find_spec('torchgeo_macl.samplers.label_aware') is not None


def make(
    cls: type[RetrievalDataModule], root: Path, **kwargs: Any
) -> RetrievalDataModule:
    name, folder = FOLDERS[cls]
    if not (root / folder).exists():
        shutil.copytree(DATA / name / folder, root / folder)
    return cls(root=str(root), batch_size=2, **kwargs)


@pytest.mark.parametrize('cls', MODULES)
class TestRetrievalDataModules:
    def test_fit_batches(self, cls: type[RetrievalDataModule], tmp_path: Path) -> None:
        dm = make(cls, tmp_path, image_size=8)
        assert isinstance(dm, NonGeoDataModule)
        dm.setup('fit')
        loader = dm.train_dataloader()
        assert len(loader) == len(dm.train_dataset) // 2  # drop_last
        raw = next(iter(loader))
        assert raw['image'].shape[0] == 2
        assert raw['label'].shape == (2, dm.num_classes)
        batch = dm.on_after_batch_transfer(dict(raw), 0)
        assert batch['image'].shape == (2, 3, 8, 8)
        assert torch.equal(batch['label'], raw['label'])
        assert torch.equal(batch['index'], raw['index'])
        assert ('mask' in batch) == dm.has_masks
        if dm.has_masks:
            assert batch['mask'].shape == (2, 8, 8)
            assert batch['mask'].dtype == torch.long
            assert set(batch['mask'].unique().tolist()) <= set(
                raw['mask'].unique().tolist()
            )
        val = next(iter(dm.val_dataloader()))
        assert val['index'].tolist() == list(range(len(val['index'])))

    def test_normalisation(
        self, cls: type[RetrievalDataModule], tmp_path: Path
    ) -> None:
        dm = make(cls, tmp_path)
        dm.setup('validate')
        raw = next(iter(dm.val_dataloader()))
        batch = dm.on_after_batch_transfer(dict(raw), 0)
        mean = torch.tensor([0.485, 0.456, 0.406]) * 255
        std = torch.tensor([0.229, 0.224, 0.225]) * 255
        expected = (raw['image'] - mean[:, None, None]) / std[:, None, None]
        assert torch.allclose(batch['image'], expected, atol=1e-5)
        assert batch['image'].shape == raw['image'].shape  # image_size=None
        if 'mask' in raw:
            assert torch.equal(batch['mask'], raw['mask'])

    def test_properties(self, cls: type[RetrievalDataModule], tmp_path: Path) -> None:
        dm = make(cls, tmp_path)
        freqs = dm.label_frequencies  # builds the train split lazily
        assert freqs.shape == (dm.num_classes,)
        assert freqs.dtype == torch.float32
        dm.setup('fit')
        assert torch.equal(freqs, dm.train_dataset.label_frequencies)
        assert dm.classes == dm.retrieval_dataset_class.classes
        assert dm.num_classes == len(dm.classes)
        assert dm.min_pixel_fraction == 0.0
        assert dm.has_masks == (cls is not MLAIDRetrievalDataModule)

    def test_test_loader(self, cls: type[RetrievalDataModule], tmp_path: Path) -> None:
        dm = make(cls, tmp_path)
        dm.setup('test')
        loader = dm.test_dataloader()
        dataset = loader.dataset
        assert isinstance(dataset, QueryDatabaseDataset)
        test_ds = dm.test_dataset
        assert dataset.queries is test_ds
        assert dataset.database is dm.database_dataset
        train = dm._split('train')
        val = dm._split('val')
        database = dm.database_dataset
        assert isinstance(database, IndexedConcatDataset)
        assert database.ids == train.ids + val.ids
        assert torch.equal(database.labels, torch.cat([train.labels, val.labels]))
        assert len(dataset) == len(test_ds) + len(database)
        marks, indexes, labels = [], [], []
        for batch in loader:
            assert batch['database'].dtype == torch.bool
            marks += batch['database'].tolist()
            indexes += batch['index'].tolist()
            labels.append(batch['label'])
        n = len(test_ds)
        assert marks == [False] * n + [True] * len(database)
        assert indexes[:n] == list(range(n))
        assert indexes[n:] == list(range(len(train) + len(val)))
        assert torch.equal(torch.cat(labels)[n:], database.labels)
        assert torch.equal(torch.cat(labels)[:n], test_ds.labels)

    @pytest.mark.parametrize('sampler', ['random', 'label_aware'])
    def test_batch_larger_than_train_split(
        self, cls: type[RetrievalDataModule], tmp_path: Path, sampler: str
    ) -> None:
        dm = make(cls, tmp_path, sampler=sampler)
        n = len(dm._split('train'))
        dm.batch_size = n + 1
        with pytest.raises(
            ValueError, match=f'batch_size={n + 1} is larger than the {n} '
        ):
            dm.train_dataloader()
        dm.batch_size = n
        assert len(dm.train_dataloader()) == 1

    def test_val_queries(self, cls: type[RetrievalDataModule], tmp_path: Path) -> None:
        dm = make(cls, tmp_path, query_split='val')
        dm.setup('test')
        dataset = dm.test_dataloader().dataset
        assert isinstance(dataset, QueryDatabaseDataset)
        val = dm._split('val')
        assert dataset.queries is val
        database = dataset.database
        assert isinstance(database, IndexedConcatDataset)
        assert database.ids == dm._split('train').ids
        assert not set(val.ids) & set(database.ids)
        indexes = [int(dataset[i]['index']) for i in range(len(val), len(dataset))]
        assert indexes == list(range(len(database)))

    @pytest.mark.parametrize(
        ('split', 'parts'),
        [
            ('database', ('train', 'val')),
            ('test', ('test',)),
            ('all', ('train', 'val', 'test')),
        ],
    )
    def test_predict(
        self,
        cls: type[RetrievalDataModule],
        tmp_path: Path,
        split: str,
        parts: tuple[str, ...],
    ) -> None:
        dm = make(cls, tmp_path, predict_split=split)
        dm.setup('predict')
        expected = [i for p in parts for i in dm._split(p).ids]
        assert dm.predict_ids == expected
        indexes = [i for b in dm.predict_dataloader() for i in b['index'].tolist()]
        assert indexes == list(range(len(expected)))

    def test_plot(self, cls: type[RetrievalDataModule], tmp_path: Path) -> None:
        dm = make(cls, tmp_path)
        dm.setup('validate')
        sample = dm.val_dataset[0]
        sample['prediction'] = sample['label']
        fig = dm.plot(sample)
        assert isinstance(fig, Figure)
        plt.close(fig)

    def test_label_aware_hook(
        self,
        cls: type[RetrievalDataModule],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        calls: list[dict[str, Any]] = []

        class Recorder:
            def __init__(
                self, labels: torch.Tensor, batch_size: int, **kwargs: Any
            ) -> None:
                calls.append({'labels': labels, 'batch_size': batch_size, **kwargs})

            def __iter__(self):
                yield [0, 1]
                yield [2, 0]

            def __len__(self) -> int:
                return 2

        monkeypatch.setattr(samplers, 'LabelAwareBatchSampler', Recorder, raising=False)
        dm = make(
            cls,
            tmp_path,
            sampler='label_aware',
            sampler_m=3,
            sampler_sigma=0.25,
            seed=7,
        )
        dm.setup('fit')
        batches = list(dm.train_dataloader())
        assert [b['index'].tolist() for b in batches] == [[0, 1], [2, 0]]
        assert torch.equal(calls[0]['labels'], dm.train_dataset.labels)
        assert calls[0]['batch_size'] == 2
        assert calls[0]['m'] == 3
        assert calls[0]['sigma'] == 0.25
        assert calls[0]['seed'] == 7
        assert calls[0]['num_replicas'] is None
        assert calls[0]['rank'] is None
        dm.trainer = SimpleNamespace(world_size=4, global_rank=3)  # type: ignore[assignment]
        dm.train_dataloader()
        assert calls[1]['num_replicas'] == 4
        assert calls[1]['rank'] == 3


@pytest.mark.skipif(
    not HAS_SAMPLER, reason='torchgeo_macl.samplers.label_aware missing'
)
def test_real_label_aware_sampler(tmp_path: Path) -> None:
    dm = make(DLRSDRetrievalDataModule, tmp_path, sampler='label_aware')
    dm.setup('fit')
    loader = dm.train_dataloader()
    assert type(loader.batch_sampler).__name__ == 'LabelAwareBatchSampler'
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    assert all(b['image'].shape[0] == 2 for b in batches)


def test_dataset_kwargs(tmp_path: Path) -> None:
    dm = make(
        DLRSDRetrievalDataModule,
        tmp_path,
        min_pixel_fraction=0.0625,
        split_seed=1,
        split_fractions=(0.5, 0.25, 0.25),
        load_masks=False,
    )
    assert dm.min_pixel_fraction == 0.0625
    assert not dm.has_masks
    dm.setup('fit')
    assert dm.train_dataset.split_path.endswith('dlrsd_seed1_50-25-25.json')
    assert 'mask' not in dm.train_dataset[0]
    csv_dm = make(DLRSDRetrievalDataModule, tmp_path, label_source='csv')
    assert csv_dm.label_frequencies.shape == (17,)
    mlaid = make(MLAIDRetrievalDataModule, tmp_path, val_fraction=0.25, split_seed=2)
    mlaid.setup('validate')
    assert len(mlaid.val_dataset) == 3


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='Invalid sampler'):
        DLRSDRetrievalDataModule(root=str(tmp_path), sampler='foo')
    with pytest.raises(ValueError, match='Invalid predict_split'):
        DLRSDRetrievalDataModule(root=str(tmp_path), predict_split='foo')
    with pytest.raises(ValueError, match="Invalid query_split 'train'"):
        MLAIDRetrievalDataModule(root=str(tmp_path), query_split='train')
    with pytest.raises(ValueError, match='batch_size'):
        DLRSDRetrievalDataModule(root=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match='image_size'):
        DLRSDRetrievalDataModule(root=str(tmp_path), image_size=0)


def test_collate_mixed_sizes(tmp_path: Path) -> None:
    # harbor03 of the fake DLRSD is 16x15, like the odd UC Merced images.
    make(DLRSDRetrievalDataModule, tmp_path)
    datasets = [DLRSD(tmp_path, split=s) for s in ('train', 'val', 'test')]
    odd = next(
        ds[k] for ds in datasets for k, i in enumerate(ds.ids) if i == 'harbor/harbor03'
    )
    normal = datasets[0][0]
    assert odd['image'].shape == (3, 16, 15)
    batch = retrieval_collate([normal, odd, normal])
    assert batch['image'].shape == (3, 3, 16, 16)
    assert batch['mask'].shape == (3, 16, 16)
    assert batch['mask'].dtype == torch.long
    assert torch.equal(batch['image'][0], normal['image'])
    sized = retrieval_collate([normal, odd], size=15)
    assert sized['image'].shape == (2, 3, 15, 15)
    same = retrieval_collate([normal, normal])
    assert torch.equal(same['image'][1], normal['image'])
    # the test loader's 'database' mark survives the resize
    marked = [{**normal, 'database': torch.tensor(False)}]
    marked.append({**odd, 'database': torch.tensor(True)})
    assert retrieval_collate(marked)['database'].tolist() == [False, True]


class _Probe(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen: dict[str, Any] = {}

    def training_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        self.seen['train'] = {k: v.shape for k, v in batch.items()}
        self.seen['train_mean'] = float(batch['image'].mean())
        return self.layer(batch['image'].mean((2, 3))).sum()

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.seen.setdefault('test', []).append(
            (dataloader_idx, batch['image'].shape, batch['database'].tolist())
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings('ignore:You passed in a `val_dataloader`')
@pytest.mark.filterwarnings('ignore:.*LeafSpec.*is deprecated')
def test_with_lightning_trainer(
    tmp_path: Path, quiet_trainer: Callable[..., Trainer]
) -> None:
    dm = make(DLRSDRetrievalDataModule, tmp_path, image_size=12)
    model = _Probe()
    trainer = quiet_trainer(
        tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen['train']['image'] == (2, 3, 12, 12)
    assert model.seen['train']['mask'] == (2, 12, 12)
    assert abs(model.seen['train_mean']) < 3  # normalised, not 0..255
    trainer.test(model, datamodule=dm, verbose=False)
    loaders = {idx for idx, _, _ in model.seen['test']}
    assert loaders == {0}  # one test loader: queries, then the database
    marks = [mark for _, _, batch_marks in model.seen['test'] for mark in batch_marks]
    assert marks == [False] * len(dm.test_dataset) + [True] * len(
        dm.database_dataset  # type: ignore[arg-type]
    )
    assert all(shape[1:] == (3, 12, 12) for _, shape, _ in model.seen['test'])


@pytest.mark.parametrize('cls', MODULES)
def test_retrieval_spec(cls: type[RetrievalDataModule], tmp_path: Path) -> None:
    dm = make(cls, tmp_path, image_size=12)
    spec = dm.retrieval_spec('fit')
    assert isinstance(spec, RetrievalDataSpec)
    assert spec.num_classes == dm.num_classes
    assert spec.mean == pytest.approx(tuple(dm.mean.tolist()))
    assert spec.std == pytest.approx(tuple(dm.std.tolist()))
    assert spec.image_size == 12
    assert spec.has_masks == dm.has_masks
    assert spec.min_pixel_fraction == dm.min_pixel_fraction
    assert spec.label_frequencies is not None
    assert torch.equal(spec.label_frequencies, dm.label_frequencies)
    assert dm.retrieval_spec('test').label_frequencies is None
    with pytest.raises(FrozenInstanceError):
        spec.image_size = 3  # type: ignore[misc]


def test_retrieval_spec_checks() -> None:
    with pytest.raises(ValueError, match='one value per band'):
        RetrievalDataSpec(num_classes=2, mean=(0.0, 0.0), std=(1.0,))
    with pytest.raises(ValueError, match='label_frequencies'):
        RetrievalDataSpec(
            num_classes=2, mean=(0.0,), std=(1.0,), label_frequencies=torch.ones(3)
        )


def test_unknown_argument_is_named_at_construction() -> None:
    with pytest.raises(ValueError, match=r'unexpected argument.*no_such_arg.*DLRSD'):
        DLRSDRetrievalDataModule(root='data', no_such_arg=1)
