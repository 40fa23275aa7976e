import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import torchgeo_macl.datasets.dlrsd as dlrsd_module
from torchgeo_macl._compat import TORCHGEO_VERSION, DatasetNotFoundError
from torchgeo_macl.datasets import DLRSD

DATA = Path(__file__).parents[1] / 'data' / 'dlrsd'
FAKE_SHA256 = 'fcd054b6e178d78739588ddbd60b171a7d05b5f5ab59fb6b5fd312e96881fc4b'


def fake_download(url: str, root: str, filename: str | None = None, **kwargs) -> str:
    os.makedirs(root, exist_ok=True)
    dst = os.path.join(root, filename or os.path.basename(url))
    shutil.copy(DATA / 'DLRSD.zip', dst)
    return dst


@pytest.fixture
def root(tmp_path: Path, copy_extracted: Callable[..., Path]) -> Path:
    return copy_extracted(DLRSD, tmp_path)


def labels_by_id(root: Path, **kwargs) -> dict[str, torch.Tensor]:
    out = {}
    for split in ('train', 'val', 'test'):
        ds = DLRSD(root, split=split, **kwargs)
        out.update(zip(ds.ids, ds.labels))
    return out


class TestDLRSD:
    @pytest.fixture
    def dataset(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> DLRSD:
        monkeypatch.setattr(dlrsd_module, 'download_url', fake_download)
        monkeypatch.setattr(DLRSD, 'sha256', FAKE_SHA256)
        return DLRSD(tmp_path, transforms=nn.Identity(), download=True, checksum=True)

    def test_getitem(self, dataset: DLRSD) -> None:
        x = dataset[0]
        assert x['image'].min() >= 0
        assert x['image'].max() <= 255
        assert x['label'].shape == (17,)
        assert x['index'].dtype == torch.long
        assert x['index'].ndim == 0
        assert int(dataset[-1]['index']) == len(dataset) - 1
        with pytest.raises(IndexError):
            dataset[len(dataset)]

    def test_len(self, dataset: DLRSD, tmp_path: Path) -> None:
        lengths = [len(DLRSD(tmp_path, split=s)) for s in ('train', 'val', 'test')]
        assert len(dataset) == lengths[0]
        assert sum(lengths) == 12
        assert all(n > 0 for n in lengths)
        assert lengths[0] >= 7

    def test_already_downloaded(self, dataset: DLRSD, tmp_path: Path) -> None:
        ds = DLRSD(tmp_path)
        assert ds.ids == dataset.ids

    def test_already_downloaded_not_extracted(self, tmp_path: Path) -> None:
        shutil.copy(DATA / 'DLRSD.zip', tmp_path)
        ds = DLRSD(tmp_path, checksum=False)
        assert (tmp_path / 'DLRSD' / 'Images').is_dir()
        assert len(ds) > 0

    def test_not_downloaded(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            DLRSD(tmp_path)

    def test_empty_folder(self, tmp_path: Path) -> None:
        (tmp_path / 'DLRSD').mkdir()
        with pytest.raises(DatasetNotFoundError, match='No images found'):
            DLRSD(tmp_path)

    def test_invalid_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match='Invalid split'):
            DLRSD(tmp_path, split='foo')
        with pytest.raises(ValueError, match='label_source'):
            DLRSD(tmp_path, label_source='foo')
        with pytest.raises(ValueError, match='min_pixel_fraction'):
            DLRSD(tmp_path, min_pixel_fraction=1.5)
        with pytest.raises(ValueError, match='only applies'):
            DLRSD(tmp_path, label_source='csv', min_pixel_fraction=0.1)
        with pytest.raises(ValueError, match='sum to 1'):
            DLRSD(tmp_path, split_fractions=(0.5, 0.1, 0.1))
        with pytest.raises(ValueError, match='Expected 3'):
            DLRSD(tmp_path, split_fractions=(0.9, 0.1))

    def test_plot_predicted_mask(self, dataset: DLRSD) -> None:
        x = dataset[0]
        x['prediction'] = x['mask'].clone()
        fig = dataset.plot(x)
        assert len(fig.axes) == 3
        plt.close(fig)

    def test_load_masks_false(self, dataset: DLRSD, tmp_path: Path) -> None:
        ds = DLRSD(tmp_path, load_masks=False)
        x = ds[0]
        assert 'mask' not in x
        assert torch.equal(x['label'], dataset[0]['label'])


class TestDLRSDLabels:
    def test_mask_labels_exact(
        self, root: Path, load_generator: Callable[[str], ModuleType]
    ) -> None:
        gen = load_generator('dlrsd')
        for mpf in (0.0, 0.01, 0.0625, 0.07, 0.3):
            labels = labels_by_id(root, min_pixel_fraction=mpf)
            assert len(labels) == 12
            for image_id, label in labels.items():
                mask = gen.make_mask(image_id.split('/')[1]).astype(np.int64) - 1
                frac = np.bincount(mask.ravel(), minlength=17) / mask.size
                expected = (frac > 0) & (frac >= mpf)
                assert label.tolist() == expected.astype(int).tolist(), (image_id, mpf)

    def test_min_pixel_fraction_boundaries(self, root: Path) -> None:
        any_pixel = labels_by_id(root)
        # airplane00: 16 of 256 airplane pixels (6.25 %); airplane03: 1 car pixel.
        assert any_pixel['airplane/airplane00'][0] == 1
        assert any_pixel['airplane/airplane03'][3] == 1
        at = labels_by_id(root, min_pixel_fraction=0.0625)
        assert at['airplane/airplane00'][0] == 1
        assert at['airplane/airplane03'][3] == 0
        above = labels_by_id(root, min_pixel_fraction=0.0626)
        assert above['airplane/airplane00'][0] == 0
        assert above['airplane/airplane00'][10] == 1  # pavement dominates

    def test_csv_labels_match_masks(self, root: Path) -> None:
        assert {k: v.tolist() for k, v in labels_by_id(root).items()} == {
            k: v.tolist() for k, v in labels_by_id(root, label_source='csv').items()
        }

    def test_label_frequencies(self, root: Path) -> None:
        ds = DLRSD(root)
        assert ds.label_frequencies.dtype == torch.float32
        assert ds.label_frequencies.shape == (17,)
        assert torch.allclose(ds.label_frequencies, ds.labels.float().mean(0))

    def test_pixel_count_cache_reused(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        first = DLRSD(root, split='test')
        assert (root / 'DLRSD' / 'splits' / 'dlrsd_pixel_counts.npz').is_file()

        def fail(self: DLRSD, path: str) -> None:
            raise AssertionError('masks decoded twice')

        monkeypatch.setattr(DLRSD, '_load_mask_array', fail)
        for split in ('train', 'val', 'test'):
            ds = DLRSD(root, split=split, min_pixel_fraction=0.05, load_masks=False)
            assert len(ds) > 0
        assert torch.equal(
            DLRSD(root, split='test', load_masks=False).labels, first.labels
        )

    def test_pixel_count_cache_invalidated(self, root: Path) -> None:
        ds = DLRSD(root, split='train')
        image_id = ds.ids[0]
        path = root / 'DLRSD' / 'Labels' / f'{image_id}.png'
        with Image.open(path) as img:
            palette = img.getpalette()
            new = Image.fromarray(np.full((16, 16), 17, dtype=np.uint8))
        new.putpalette(palette)
        new.save(path)
        os.utime(path, ns=(1, 1))
        again = DLRSD(root, split='train')
        expected = torch.zeros(17, dtype=torch.long)
        expected[16] = 1
        assert torch.equal(again.labels[0], expected)


class TestDLRSDSplits:
    def test_split_file(self, root: Path) -> None:
        datasets = {s: DLRSD(root, split=s) for s in ('train', 'val', 'test')}
        path = root / 'DLRSD' / 'splits' / 'dlrsd_seed0_70-10-20.json'
        assert path.is_file()
        assert datasets['train'].split_path == str(path)
        content = json.loads(path.read_text())
        assert content['seed'] == 0
        ids = [set(ds.ids) for ds in datasets.values()]
        assert not ids[0] & ids[1]
        assert not ids[0] & ids[2]
        assert not ids[1] & ids[2]
        assert len(ids[0] | ids[1] | ids[2]) == 12
        for name, ds in datasets.items():
            assert content['splits'][name] == ds.ids
        # Stratified: every label that occurs anywhere occurs in train.
        total = sum(ds.labels.sum(0) for ds in datasets.values())
        assert ((datasets['train'].labels.sum(0) > 0) | (total == 0)).all()

    def test_split_stable(self, root: Path) -> None:
        before = DLRSD(root, split='test').ids
        path = root / 'DLRSD' / 'splits' / 'dlrsd_seed0_70-10-20.json'
        path.unlink()
        assert DLRSD(root, split='test').ids == before  # same seed, same split
        other = DLRSD(root, split='test', split_seed=1)
        assert (root / 'DLRSD' / 'splits' / 'dlrsd_seed1_70-10-20.json').is_file()
        assert len(other) > 0
        custom = DLRSD(root, split='test', split_fractions=(0.5, 0.25, 0.25))
        assert (root / 'DLRSD' / 'splits' / 'dlrsd_seed0_50-25-25.json').is_file()
        assert len(custom) >= 2

    def test_split_file_reused(self, root: Path) -> None:
        ds = DLRSD(root)
        path = Path(ds.split_path)
        content = json.loads(path.read_text())
        all_ids = sorted(i for v in content['splits'].values() for i in v)
        content['splits'] = {
            'train': all_ids[:6],
            'val': all_ids[6:8],
            'test': all_ids[8:],
        }
        path.write_text(json.dumps(content))
        assert DLRSD(root, split='val').ids == all_ids[6:8]

    def test_split_file_invalid(self, root: Path) -> None:
        path = Path(DLRSD(root).split_path)
        content = json.loads(path.read_text())
        content['splits']['train'].append('airplane/airplane99')
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match='airplane99'):
            DLRSD(root)
        path.write_text('{not json')
        with pytest.raises(ValueError, match='not a valid split file'):
            DLRSD(root)


class TestDLRSDErrors:
    def test_mask_value_out_of_range(self, root: Path) -> None:
        path = root / 'DLRSD' / 'Labels' / 'airplane' / 'airplane01.png'
        mask = np.full((16, 16), 3, dtype=np.uint8)
        mask[0, 0] = 18
        Image.fromarray(mask).save(path)
        with pytest.raises(ValueError, match=r'airplane01\.png.*value 18'):
            DLRSD(root)
        mask[0, 0] = 0
        Image.fromarray(mask).save(path)
        with pytest.raises(ValueError, match=r'airplane01\.png.*value 0'):
            DLRSD(root)

    def test_corrupt_image(self, root: Path) -> None:
        ds = DLRSD(root)
        Path(ds.image_paths[0]).write_bytes(b'not a tiff')
        with pytest.raises(OSError, match='Could not decode image'):
            ds[0]

    def test_csv_row_width(self, root: Path) -> None:
        path = root / 'DLRSD' / 'multilabels.csv'
        lines = path.read_text().splitlines()
        lines[3] = lines[3].rsplit(',', 1)[0]
        path.write_text('\n'.join(lines) + '\n')
        with pytest.raises(ValueError, match=r'multilabels\.csv.*line 4: 17 fields'):
            DLRSD(root, label_source='csv')

    def test_csv_missing_row(self, root: Path) -> None:
        stem = DLRSD(root, split='test').ids[0].split('/')[1]
        path = root / 'DLRSD' / 'multilabels.csv'
        lines = path.read_text().splitlines()
        path.write_text('\n'.join(x for x in lines if not x.startswith(stem)) + '\n')
        with pytest.raises(ValueError, match=f'has no row for image {stem!r}'):
            DLRSD(root, split='test', label_source='csv')

    def test_corrupt_mask(self, root: Path) -> None:
        path = root / 'DLRSD' / 'Labels' / 'agricultural' / 'agricultural03.png'
        path.write_bytes(b'\x89PNG garbage')
        with pytest.raises(OSError, match=r'Could not decode mask .*agricultural03'):
            DLRSD(root)

    def test_missing_mask(self, root: Path) -> None:
        (root / 'DLRSD' / 'Labels' / 'harbor' / 'harbor02.png').unlink()
        with pytest.raises(FileNotFoundError, match=r'harbor02\.png'):
            DLRSD(root)


@pytest.mark.skipif(
    TORCHGEO_VERSION < (0, 10, 0), reason='torchgeo < 0.10 has no DLRSDMultilabel'
)
def test_equals_torchgeo_dlrsd_multilabel(tmp_path: Path) -> None:
    from torchgeo.datasets import DLRSDMultilabel

    # torchgeo extracts the archive; this package finds and uses that copy.
    shutil.copy(DATA / 'DLRSD.zip', tmp_path)
    theirs = DLRSDMultilabel(tmp_path, checksum=False)
    stems = {Path(p).stem: i for i, p in enumerate(theirs.image_fns)}
    seen = 0
    for split in ('train', 'val', 'test'):
        ours = DLRSD(tmp_path, split=split, label_source='csv')
        for k, image_id in enumerate(ours.ids):
            mine, other = ours[k], theirs[stems[image_id.split('/')[1]]]
            assert torch.equal(mine['image'], other['image'])
            assert torch.equal(mine['label'], other['label'])
            seen += 1
    assert seen == len(theirs) == 12
