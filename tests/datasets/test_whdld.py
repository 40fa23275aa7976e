import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from torchgeo_macl._compat import DatasetNotFoundError
from torchgeo_macl.datasets import WHDLD

DATA = Path(__file__).parents[1] / 'data' / 'whdld'


@pytest.fixture
def root(tmp_path: Path, copy_extracted: Callable[..., Path]) -> Path:
    return copy_extracted(WHDLD, tmp_path)


@pytest.fixture
def gen(load_generator: Callable[[str], ModuleType]) -> ModuleType:
    return load_generator('whdld')


def bad_colour() -> np.ndarray:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[...] = (0, 255, 0)
    rgb[3, 4] = (1, 2, 3)
    return rgb


def bad_index() -> np.ndarray:
    grey = np.full((16, 16), 2, dtype=np.uint8)
    grey[0, 0] = 7
    return grey


def all_samples(root: Path, **kwargs) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for split in ('train', 'val', 'test'):
        ds = WHDLD(root, split=split, **kwargs)
        for k, image_id in enumerate(ds.ids):
            out[image_id] = ds[k]
    return out


class TestWHDLD:
    @pytest.fixture
    def dataset(self, root: Path) -> WHDLD:
        return WHDLD(root, transforms=nn.Identity())

    def test_getitem(self, dataset: WHDLD) -> None:
        x = dataset[0]
        assert x['label'].shape == (6,)
        assert int(x['mask'].min()) >= 0
        assert int(x['mask'].max()) <= 5

    def test_len(self, root: Path) -> None:
        lengths = [len(WHDLD(root, split=s)) for s in ('train', 'val', 'test')]
        assert sum(lengths) == 12
        assert all(n > 0 for n in lengths)

    def test_already_downloaded(self, dataset: WHDLD, root: Path) -> None:
        assert WHDLD(root, download=True).ids == dataset.ids

    def test_already_downloaded_not_extracted(self, tmp_path: Path) -> None:
        shutil.copy(DATA / 'WHDLD.zip', tmp_path)
        ds = WHDLD(tmp_path, checksum=True)
        assert len(ds) > 0

    def test_corrupted_member(self, tmp_path: Path) -> None:
        data = bytearray((DATA / 'WHDLD.zip').read_bytes())
        data[200] ^= 0xFF  # inside the first member's compressed data
        (tmp_path / 'WHDLD.zip').write_bytes(bytes(data))
        with pytest.raises(RuntimeError, match='Dataset found, but corrupted'):
            WHDLD(tmp_path, checksum=True)

    @pytest.mark.parametrize('download', [False, True])
    def test_not_downloaded(self, tmp_path: Path, download: bool) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found') as info:
            WHDLD(tmp_path, download=download)
        message = str(info.value)
        assert 'sites.google.com/view/zhouwx/dataset' in message
        assert str(tmp_path / 'WHDLD' / 'Images' / 'whNNNN.jpg') in message
        assert str(tmp_path / 'WHDLD' / 'ImagesPNG' / 'whNNNN.png') in message
        assert 'WHDLD.zip' in message

    def test_invalid_split(self, root: Path) -> None:
        with pytest.raises(ValueError, match='Invalid split'):
            WHDLD(root, split='foo')
        with pytest.raises(ValueError, match='min_pixel_fraction'):
            WHDLD(root, min_pixel_fraction=-0.1)


class TestWHDLDMasks:
    def test_all_encodings_decode_exactly(self, root: Path, gen: ModuleType) -> None:
        samples = all_samples(root)
        assert sorted(samples) == [f'wh{i:04d}' for i in range(1, 13)]
        for image_id, sample in samples.items():
            expected = gen.make_mask(int(image_id[2:]) - 1).astype(np.int64)
            assert np.array_equal(sample['mask'].numpy(), expected), image_id

    def test_min_pixel_fraction_exact(self, root: Path, gen: ModuleType) -> None:
        for mpf in (0.0, 0.004, 0.0625, 0.1, 0.5):
            for split in ('train', 'val', 'test'):
                ds = WHDLD(root, split=split, min_pixel_fraction=mpf)
                for image_id, label in zip(ds.ids, ds.labels):
                    mask = gen.make_mask(int(image_id[2:]) - 1)
                    frac = np.bincount(mask.ravel(), minlength=6) / mask.size
                    expected = ((frac > 0) & (frac >= mpf)).astype(int)
                    assert label.tolist() == expected.tolist(), (image_id, mpf)

    def test_palette_mask_read_through_colours(
        self, root: Path, gen: ModuleType
    ) -> None:
        path = root / 'WHDLD' / 'ImagesPNG' / 'wh0005.png'
        with Image.open(path) as img:
            ids = np.asarray(img).astype(np.int64) - 1
        colours = gen.COLOURS
        png = Image.fromarray((ids + 10).astype(np.uint8))  # indices 10..15
        png.putpalette([0] * 30 + [v for c in colours for v in c])
        png.save(path)
        samples = all_samples(root)
        assert np.array_equal(samples['wh0005']['mask'].numpy(), ids)

    @pytest.mark.parametrize(
        ('name', 'pixels', 'match'),
        [
            ('wh0002', bad_colour, r'wh0002\.png.*colour \(1, 2, 3\)'),
            ('wh0010', bad_index, r'wh0010\.png.*value 7'),
        ],
    )
    def test_invalid_mask(
        self, root: Path, name: str, pixels: Callable[[], np.ndarray], match: str
    ) -> None:
        Image.fromarray(pixels()).save(root / 'WHDLD' / 'ImagesPNG' / f'{name}.png')
        with pytest.raises(ValueError, match=match):
            WHDLD(root)

    def test_grey_levels_in_rgb_png(self, root: Path) -> None:
        path = root / 'WHDLD' / 'ImagesPNG' / 'wh0006.png'
        grey = np.full((16, 16), 4, dtype=np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
        assert (all_samples(root)['wh0006']['mask'] == 3).all()

    def test_missing_mask(self, root: Path) -> None:
        (root / 'WHDLD' / 'ImagesPNG' / 'wh0003.png').unlink()
        with pytest.raises(FileNotFoundError, match=r'wh0003\.png'):
            WHDLD(root)

    def test_split_file(self, root: Path) -> None:
        datasets = [WHDLD(root, split=s) for s in ('train', 'val', 'test')]
        assert (root / 'WHDLD' / 'splits' / 'whdld_seed0_70-10-20.json').is_file()
        ids = [set(ds.ids) for ds in datasets]
        assert sum(len(i) for i in ids) == len(set().union(*ids)) == 12
        total = sum(ds.labels.sum(0) for ds in datasets)
        assert ((datasets[0].labels.sum(0) > 0) | (total == 0)).all()
        assert WHDLD(root, split='test').ids == datasets[2].ids
