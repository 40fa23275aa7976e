import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from torchgeo_macl._compat import DatasetNotFoundError
from torchgeo_macl.datasets import MLAID

DATA = Path(__file__).parents[1] / 'data' / 'mlaid'


def read_csv() -> dict[str, list[int]]:
    with open(DATA / 'AID_multilabel' / 'multilabel.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0][0] == 'IMAGE\\LABEL'
    return {r[0]: [int(v) for v in r[1:]] for r in rows[1:]}


@pytest.fixture
def root(tmp_path: Path, copy_extracted: Callable[..., Path]) -> Path:
    return copy_extracted(MLAID, tmp_path)


class TestMLAID:
    @pytest.fixture
    def dataset(self, root: Path) -> MLAID:
        return MLAID(root, transforms=nn.Identity())

    def test_getitem(self, dataset: MLAID) -> None:
        x = dataset[0]
        assert x['label'].shape == (17,)
        assert x['label'].tolist() == read_csv()[dataset.ids[0].rsplit('/', 1)[1]]

    def test_len(self, root: Path) -> None:
        lengths = {s: len(MLAID(root, split=s)) for s in ('train', 'val', 'test')}
        assert lengths['train'] + lengths['val'] == 12
        assert lengths['val'] >= 1
        assert lengths['test'] == 4

    def test_already_downloaded(self, dataset: MLAID, root: Path) -> None:
        assert MLAID(root, download=True).ids == dataset.ids

    def test_already_downloaded_not_extracted(self, tmp_path: Path) -> None:
        shutil.copy(DATA / 'AID_multilabel.zip', tmp_path)
        ds = MLAID(tmp_path, split='test', checksum=True)
        assert len(ds) == 4

    @pytest.mark.parametrize('download', [False, True])
    def test_not_downloaded(self, tmp_path: Path, download: bool) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found') as info:
            MLAID(tmp_path, download=download)
        message = str(info.value)
        assert 'https://github.com/Hua-YS/AID-Multilabel-Dataset' in message
        assert str(tmp_path / 'AID_multilabel' / 'images_tr') in message
        assert str(tmp_path / 'AID_multilabel' / 'images_test') in message
        assert str(tmp_path / 'AID_multilabel' / 'multilabel.csv') in message
        assert 'AID_multilabel.zip' in message

    def test_invalid_split(self, root: Path) -> None:
        with pytest.raises(ValueError, match='Invalid split'):
            MLAID(root, split='foo')
        with pytest.raises(ValueError, match='val_fraction'):
            MLAID(root, val_fraction=1.0)

    def test_labels_and_frequencies(self, root: Path) -> None:
        table = read_csv()
        for split in ('train', 'val', 'test'):
            ds = MLAID(root, split=split)
            expected = [table[i.rsplit('/', 1)[1]] for i in ds.ids]
            assert ds.labels.tolist() == expected
            assert torch.allclose(ds.label_frequencies, ds.labels.float().mean(0))
            assert ds.min_pixel_fraction == 0.0


class TestMLAIDLayout:
    def test_ids_and_folders(self, root: Path) -> None:
        train = MLAID(root, split='train')
        test = MLAID(root, split='test')
        assert all(i.startswith('images_tr/') for i in train.ids)
        assert all(i.startswith('images_test/') for i in test.ids)
        assert test.ids[0] == 'images_test/airport/airport_101'

    def test_flat_layout(self, root: Path) -> None:
        nested = {s: MLAID(root, split=s) for s in ('train', 'val', 'test')}
        first = {s: ds[0]['image'] for s, ds in nested.items()}
        shutil.rmtree(root / 'AID_multilabel' / 'splits')
        for folder in ('images_tr', 'images_test'):
            base = root / 'AID_multilabel' / folder
            for path in sorted(base.glob('*/*.jpg')):
                path.rename(base / path.name)
        for split, before in nested.items():
            flat = MLAID(root, split=split)
            assert all(i.count('/') == 1 for i in flat.ids)
            stems = [i.rsplit('/', 1)[1] for i in flat.ids]
            assert stems == [i.rsplit('/', 1)[1] for i in before.ids]
            assert torch.equal(flat.labels, before.labels)
            assert torch.equal(flat[0]['image'], first[split])

    def test_val_split_file(self, root: Path) -> None:
        train = MLAID(root, split='train')
        val = MLAID(root, split='val')
        path = root / 'AID_multilabel' / 'splits' / 'mlaid_seed0_90-10.json'
        assert path.is_file()
        content = json.loads(path.read_text())
        assert content['splits']['train'] == train.ids
        assert content['splits']['val'] == val.ids
        assert not set(train.ids) & set(val.ids)
        assert ((train.labels.sum(0) > 0) | (val.labels.sum(0) == 0)).all()
        assert MLAID(root, split='val').ids == val.ids
        other = MLAID(root, split='val', split_seed=3, val_fraction=0.25)
        assert len(other) == 3
        assert (root / 'AID_multilabel' / 'splits' / 'mlaid_seed3_75-25.json').is_file()

    def test_split_dir_and_no_test_folder(self, root: Path, tmp_path: Path) -> None:
        # a read-only archive: the split file goes elsewhere, nothing is written
        # under the root, and the test folder may be missing
        shutil.rmtree(root / 'AID_multilabel' / 'images_test')
        before = sorted(p.name for p in (root / 'AID_multilabel').rglob('*'))
        splits = tmp_path / 'my_splits'
        train = MLAID(root, split='train', split_dir=splits)
        val = MLAID(root, split='val', split_dir=splits)
        assert sorted(p.name for p in (root / 'AID_multilabel').rglob('*')) == before
        content = json.loads((splits / 'mlaid_seed0_90-10.json').read_text())
        assert content['splits'] == {'train': train.ids, 'val': val.ids}
        assert MLAID(root, split='val', split_dir=splits).ids == val.ids
        with pytest.raises(DatasetNotFoundError, match='images_test'):
            MLAID(root, split='test', split_dir=splits)


class TestMLAIDErrors:
    def test_csv_row_width(self, root: Path) -> None:
        path = root / 'AID_multilabel' / 'multilabel.csv'
        lines = path.read_text().splitlines()
        lines[2] += ',1'
        path.write_text('\n'.join(lines) + '\n')
        with pytest.raises(ValueError, match=r'multilabel\.csv.*line 3: 19 fields'):
            MLAID(root)

    def test_csv_header(self, root: Path) -> None:
        path = root / 'AID_multilabel' / 'multilabel.csv'
        text = path.read_text().replace('bare-soil', 'bare-rock')
        path.write_text(text)
        with pytest.raises(ValueError, match='do not match the expected classes'):
            MLAID(root)

    def test_image_not_in_csv(self, root: Path) -> None:
        extra = root / 'AID_multilabel' / 'images_test' / 'port' / 'port_999.jpg'
        shutil.copy(
            root / 'AID_multilabel' / 'images_test' / 'port' / 'port_101.jpg', extra
        )
        with pytest.raises(ValueError, match=r'no row for image .*port_999\.jpg'):
            MLAID(root, split='test')

    def test_corrupt_image(self, root: Path) -> None:
        ds = MLAID(root, split='test')
        Path(ds.image_paths[1]).write_bytes(b'\xff\xd8garbage')
        with pytest.raises(OSError, match='Could not decode image'):
            ds[1]
