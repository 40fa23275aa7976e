import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from lightning.pytorch import Trainer
from torch import Tensor
from torchgeo.datamodules import BigEarthNetDataModule
from torchgeo.datasets import BigEarthNet

from torchgeo_macl._compat import NonGeoDataModule, NonGeoDataset
from torchgeo_macl.datamodules import (
    QueryDatabaseDataset,
    RetrievalDataModule,
    TorchGeoRetrievalDataModule,
    TorchGeoRetrievalSplit,
)
from torchgeo_macl.main import main
from torchgeo_macl.tasks import RetrievalTask

DATA = Path(__file__).parents[1] / 'data' / 'bigearthnet'
SPLITS = {'train': 6, 'val': 3, 'test': 3}
S2 = {'bands': 's2', 'num_classes': 19}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the fake BigEarthNet archive (extracted, as TorchGeo leaves it)."""
    out = tmp_path / 'bigearthnet'
    shutil.copytree(DATA / 'BigEarthNet-v1.0', out / 'BigEarthNet-v1.0')
    for split in SPLITS:
        shutil.copy(DATA / f'bigearthnet-{split}.csv', out)
    return out


def make(root: Path, **kwargs: Any) -> TorchGeoRetrievalDataModule:
    args: dict[str, Any] = {'batch_size': 2, 'image_size': 16, **S2, **kwargs}
    return TorchGeoRetrievalDataModule('BigEarthNetDataModule', root=str(root), **args)


def test_spec_and_loaders(root: Path) -> None:
    dm = make(root)
    assert isinstance(dm, RetrievalDataModule)
    spec = dm.retrieval_spec('fit')
    reference = BigEarthNetDataModule(bands='s2')
    assert spec.num_classes == 19 == len(dm.classes)
    assert dm.classes == tuple(BigEarthNet.class_sets[19])
    assert spec.mean == tuple(float(v) for v in reference.mean)
    assert spec.std == tuple(float(v) for v in reference.std)
    assert spec.image_size == 16
    assert not spec.has_masks
    assert spec.label_frequencies is not None
    train = BigEarthNet(str(root), split='train', **S2)
    expected = torch.stack([train[i]['label'] for i in range(len(train))]).float()
    assert torch.allclose(spec.label_frequencies, expected.mean(0))
    assert dm.retrieval_spec('test').label_frequencies is None

    dm.setup('fit')
    raw = next(iter(dm.train_dataloader()))
    assert raw['image'].shape == (2, 12, 120, 120)
    assert raw['label'].dtype == torch.long
    assert raw['label'].shape == (2, 19)
    assert set(raw['label'].unique().tolist()) <= {0, 1}
    batch = dm.on_after_batch_transfer(dict(raw), 0)
    assert batch['image'].shape == (2, 12, 16, 16)
    assert torch.equal(batch['index'], raw['index'])

    dm.setup('test')
    batches = list(dm.test_dataloader())
    marks = torch.cat([b['database'] for b in batches])
    indexes = torch.cat([b['index'] for b in batches])
    assert marks.tolist() == [False] * SPLITS['test'] + [True] * (
        SPLITS['train'] + SPLITS['val']
    )
    assert indexes[~marks].tolist() == list(range(SPLITS['test']))
    assert indexes[marks].tolist() == list(range(SPLITS['train'] + SPLITS['val']))

    dm.setup('predict')
    lines = (root / 'bigearthnet-train.csv').read_text().split()
    assert dm.predict_ids[: SPLITS['train']] == [line.split(',')[0] for line in lines]
    assert len(set(dm.predict_ids)) == len(dm.predict_ids)


@pytest.mark.parametrize(
    ('query_split', 'queries', 'database'), [('test', 3, 9), ('val', 3, 6)]
)
def test_query_split(root: Path, query_split: str, queries: int, database: int) -> None:
    dm = make(root, query_split=query_split)
    dm.setup('test')
    dataset = dm.test_dataloader().dataset
    assert isinstance(dataset, QueryDatabaseDataset)
    assert [dataset.num_queries, len(dataset.database)] == [queries, database]  # type: ignore[arg-type]


def test_labels_are_read_without_images(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = make(root)

    def no_images(self: BigEarthNet, index: int) -> Tensor:
        raise AssertionError('an image was loaded')

    monkeypatch.setattr(BigEarthNet, '_load_image', no_images)
    assert dm.retrieval_spec('fit').label_frequencies is not None
    split = dm._split('train')
    assert isinstance(split, TorchGeoRetrievalSplit)
    assert split.labels.shape == (SPLITS['train'], 19)


def test_class_forms_and_dataset_arguments(root: Path) -> None:
    dotted = 'torchgeo.datamodules.BigEarthNetDataModule'
    for cls in (BigEarthNetDataModule, dotted):
        dm = TorchGeoRetrievalDataModule(cls, root=str(root), **S2)
        assert dm.datamodule_class is BigEarthNetDataModule
    dm = TorchGeoRetrievalDataModule(root=str(root), bands='s2', num_classes=43)
    assert dm.num_classes == 43
    assert dm.retrieval_spec('test').num_classes == 43


class _SceneDataset(NonGeoDataset):
    """A single-label scene classification dataset, as TorchGeo's EuroSAT."""

    def __init__(self, split: str = 'train', root: str = 'data') -> None:
        self.split = split

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {'image': torch.zeros(3, 8, 8), 'label': torch.tensor(index % 2)}


class SceneDataModule(NonGeoDataModule):
    def __init__(
        self, batch_size: int = 2, num_workers: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(_SceneDataset, batch_size, num_workers, **kwargs)


def test_bad_inputs(root: Path) -> None:
    dm = TorchGeoRetrievalDataModule(SceneDataModule)
    with pytest.raises(ValueError, match='SceneDataModule is not a multi-label'):
        dm.retrieval_spec('fit')
    with pytest.raises(ValueError, match="its 'label' is a class index"):
        dm.setup('fit')
    dm = make(root, label_key='labels')
    with pytest.raises(ValueError, match="have no 'labels'"):
        dm.setup('fit')
    with pytest.raises(ValueError, match="unknown TorchGeo datamodule 'NoSuchModule'"):
        TorchGeoRetrievalDataModule('NoSuchModule')
    with pytest.raises(ValueError, match='not a TorchGeo NonGeoDataModule'):
        TorchGeoRetrievalDataModule('L7IrishDataModule')
    with pytest.raises(ValueError, match='cannot import datamodule'):
        TorchGeoRetrievalDataModule('no_such_package.DataModule')
    with pytest.raises(ValueError, match='unexpected argument'):
        make(root, no_such_option=1)


def test_fit_with_macl(
    root: Path, tmp_path: Path, quiet_trainer: Callable[..., Trainer]
) -> None:
    torch.manual_seed(0)
    task = RetrievalTask(
        model='test_resnet',
        in_channels=12,
        loss='macl',
        embed_dim=8,
        proj_hidden_dim=16,
        image_size=16,
        ks=(1, 5),
        monitor='val_mAP@1',
    )
    dm = make(root)
    trainer = quiet_trainer(tmp_path / 'out', max_epochs=1)
    trainer.fit(task, datamodule=dm)
    assert task.criterion is not None
    frequencies = getattr(task.criterion, 'label_frequencies', None)
    assert frequencies is not None
    assert frequencies.shape == (19,)
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = trainer.callback_metrics
    assert 'test_mAP@1' in metrics
    assert 0.0 <= float(metrics['test_mAP@1']) <= 1.0


def _write_query(root: Path, path: Path) -> None:
    """Stack the 12 bands of a test patch into one 12-band GeoTIFF."""
    dataset = BigEarthNet(str(root), split='test', **S2)
    image = dataset[0]['image'].numpy().astype(np.uint16)
    profile = {
        'driver': 'GTiff',
        'dtype': 'uint16',
        'count': image.shape[0],
        'height': image.shape[1],
        'width': image.shape[2],
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(image)


def test_cli_fit_test_index_search(
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, 'argv', ['torchgeo-macl'])
    data = {
        'class_path': 'TorchGeoRetrievalDataModule',
        'init_args': {
            'datamodule_class': 'BigEarthNetDataModule',
            'batch_size': 2,
            'image_size': 16,
        },
        'dict_kwargs': {'root': str(root), **S2},
    }
    config = {
        'model': {
            'class_path': 'RetrievalTask',
            'init_args': {
                'model': 'test_resnet',
                'in_channels': 12,
                'loss': 'macl',
                'embed_dim': 8,
                'proj_hidden_dim': 16,
                'image_size': 16,
                'ks': [1, 5],
                'monitor': 'val_mAP@1',
            },
        },
        'data': data,
        'trainer': {
            'accelerator': 'cpu',
            'logger': False,
            'enable_progress_bar': False,
            'enable_model_summary': False,
            'max_epochs': 1,
            'default_root_dir': str(tmp_path / 'out'),
        },
    }
    path = tmp_path / 'bigearthnet.yaml'
    path.write_text(yaml.safe_dump(config))
    assert main(['fit', '--config', str(path)]) == 0
    [ckpt] = (tmp_path / 'out').rglob('last.ckpt')
    assert main(['test', '--config', str(path), f'--ckpt_path={ckpt}']) == 0
    assert 'test_mAP@1' in capsys.readouterr().out

    data_config = tmp_path / 'data.yaml'
    data_config.write_text(yaml.safe_dump({'data': data}))
    out = tmp_path / 'index' / 'ben'
    argv = ['index', '--ckpt', str(ckpt), '--data', str(data_config), '--out', str(out)]
    assert main([*argv, '--split', 'all', '--accelerator', 'cpu']) == 0
    assert 'indexed 12 images' in capsys.readouterr().out
    query = tmp_path / 'query.tif'
    _write_query(root, query)
    search = ['search', '--index', str(out), '--ckpt', str(ckpt), str(query), '-k', '3']
    assert main(search) == 0
    first = BigEarthNet(str(root), split='test', **S2).folders[0]['s2']
    assert Path(first).name in capsys.readouterr().out
