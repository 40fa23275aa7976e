import json
import os
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from torchgeo_macl._compat import DatasetNotFoundError
from torchgeo_macl.datasets import utils
from torchgeo_macl.datasets.utils import (
    RetrievalDataset,
    atomic_write_bytes,
    check_split_fractions,
    decode_index_mask,
    decode_rgb_mask,
    iterative_stratification,
    labels_from_pixel_counts,
    load_or_compute_pixel_counts,
    load_or_create_split,
    load_rgb_image,
    manual_download_error,
    normalise_class_name,
    pixel_counts,
    plot_multilabel_sample,
    read_multilabel_csv,
    split_file_name,
    verify_zip,
)

FRACTIONS = {'train': 0.7, 'val': 0.1, 'test': 0.2}


class TestLabelDerivation:
    def test_pixel_counts(self) -> None:
        mask = np.zeros((10, 10), dtype=np.int64)
        mask[:3, :3] = 2  # 9 pixels
        mask[9, 9] = 4  # 1 pixel
        assert pixel_counts(mask, 5).tolist() == [90, 0, 9, 0, 1]

    def test_labels_from_pixel_counts_exact(self) -> None:
        counts = np.array([[90, 0, 9, 0, 1], [0, 50, 50, 0, 0]])
        assert labels_from_pixel_counts(counts).tolist() == [
            [1, 0, 1, 0, 1],
            [0, 1, 1, 0, 0],
        ]
        assert labels_from_pixel_counts(counts, 0.01).tolist() == [
            [1, 0, 1, 0, 1],
            [0, 1, 1, 0, 0],
        ]
        assert labels_from_pixel_counts(counts, 0.0101)[0].tolist() == [1, 0, 1, 0, 0]
        assert labels_from_pixel_counts(counts, 0.09)[0].tolist() == [1, 0, 1, 0, 0]
        assert labels_from_pixel_counts(counts, 0.5)[1].tolist() == [0, 1, 1, 0, 0]
        assert labels_from_pixel_counts(counts, 0.51)[1].tolist() == [0, 0, 0, 0, 0]
        assert labels_from_pixel_counts(np.array([[7, 93]]), 0.07).tolist() == [[1, 1]]
        assert labels_from_pixel_counts(torch.tensor([[3, 1]]), 1.0).tolist() == [
            [0, 0]
        ]
        assert labels_from_pixel_counts(np.zeros((1, 3), int), 0.5).tolist() == [
            [0, 0, 0]
        ]

    def test_invalid_fraction(self) -> None:
        with pytest.raises(ValueError, match='min_pixel_fraction'):
            labels_from_pixel_counts(np.ones((1, 2), int), 1.5)

    def test_decode_index_mask(self) -> None:
        array = np.array([[1, 2], [17, 3]], dtype=np.uint8)
        assert decode_index_mask(array, 'm.png', 17).tolist() == [[0, 1], [16, 2]]
        with pytest.raises(ValueError, match=r"'m\.png' contains the value 18"):
            decode_index_mask(np.array([[1, 18]], np.uint8), 'm.png', 17)
        with pytest.raises(ValueError, match='value 0'):
            decode_index_mask(np.array([[0, 1]], np.int32), 'm.png', 17)
        with pytest.raises(ValueError, match='single channel'):
            decode_index_mask(np.ones((2, 2, 3), np.uint8), 'm.png', 17)

    def test_decode_rgb_mask(self) -> None:
        colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        rgb = np.array(
            [[[0, 0, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255]]], np.uint8
        )
        assert decode_rgb_mask(rgb, 'm.png', colours).tolist() == [[2, 0], [1, 2]]
        rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=-1)
        assert decode_rgb_mask(rgba, 'm.png', colours).tolist() == [[2, 0], [1, 2]]
        rgb[1, 0] = (9, 9, 9)
        with pytest.raises(ValueError, match=r'colour \(9, 9, 9\) at pixel \(row 1'):
            decode_rgb_mask(rgb, 'm.png', colours)


class TestStratification:
    def test_sizes_and_determinism(self) -> None:
        rng = np.random.default_rng(0)
        labels = rng.random((500, 8)) < np.linspace(0.02, 0.6, 8)
        folds = iterative_stratification(labels, [0.7, 0.1, 0.2], seed=0)
        sizes = np.bincount(folds, minlength=3)
        assert sizes.sum() == 500
        assert np.allclose(sizes / 500, [0.7, 0.1, 0.2], atol=0.02)
        assert np.array_equal(
            folds, iterative_stratification(labels, [0.7, 0.1, 0.2], 0)
        )
        assert not np.array_equal(
            folds, iterative_stratification(labels, [0.7, 0.1, 0.2], 1)
        )
        # Label proportions follow the fold fractions.
        per_fold = np.stack([labels[folds == f].sum(0) for f in range(3)])
        share = per_fold / labels.sum(0)
        assert np.abs(share[0] - 0.7).max() < 0.1

    def test_rare_labels_in_train(self) -> None:
        rng = np.random.default_rng(1)
        labels = rng.random((60, 10)) < 0.3
        labels[:, 7] = False
        labels[5, 7] = True  # a label with one sample
        labels[:, 8] = False
        labels[[10, 11], 8] = True  # two samples
        folds = iterative_stratification(labels, [0.7, 0.1, 0.2], seed=3)
        present = labels.any(0)
        assert (labels[folds == 0].any(0) == present).all()

    def test_small_folds_not_empty(self) -> None:
        labels = np.eye(4, dtype=bool)[np.arange(12) % 4]
        folds = iterative_stratification(labels, [0.7, 0.1, 0.2], seed=0)
        assert (np.bincount(folds, minlength=3) > 0).all()
        assert labels[folds == 0].any(0).all()

    def test_unlabelled_samples(self) -> None:
        labels = np.zeros((10, 3), dtype=bool)
        folds = iterative_stratification(labels, [0.5, 0.5], seed=0)
        assert np.bincount(folds).tolist() == [5, 5]

    def test_invalid(self) -> None:
        with pytest.raises(ValueError, match='positive'):
            iterative_stratification(np.ones((4, 2)), [1.0, 0.0])
        with pytest.raises(ValueError, match='sum to 1'):
            iterative_stratification(np.ones((4, 2)), [0.5, 0.2])
        with pytest.raises(ValueError, match=r'\[N, C\]'):
            iterative_stratification(np.ones(4), [1.0])
        with pytest.raises(ValueError, match='Expected 3'):
            check_split_fractions([0.5, 0.5])
        assert check_split_fractions([0.8, 0.1, 0.1]) == {
            'train': 0.8,
            'val': 0.1,
            'test': 0.1,
        }


class TestSplitFile:
    ids = [f'img{i:02d}' for i in range(20)]
    labels = np.eye(4, dtype=bool)[np.arange(20) % 4]

    def test_file_name(self) -> None:
        assert split_file_name('dlrsd', 0, FRACTIONS) == 'dlrsd_seed0_70-10-20.json'
        assert (
            split_file_name('x', 3, {'a': 0.725, 'b': 0.275})
            == 'x_seed3_72.5-27.5.json'
        )

    def test_create_and_reuse(self, tmp_path: Path) -> None:
        path = tmp_path / 'splits' / 'x.json'
        calls = []

        def labels() -> np.ndarray:
            calls.append(1)
            return self.labels

        first = load_or_create_split(path, self.ids, labels, FRACTIONS, 0, 'X')
        assert path.is_file()
        assert len(calls) == 1
        assert not [p for p in os.listdir(path.parent) if p != 'x.json']
        content = json.loads(path.read_text())
        assert content['dataset'] == 'X'
        assert content['seed'] == 0
        assert content['splits'] == first
        again = load_or_create_split(path, self.ids, labels, FRACTIONS, 0, 'X')
        assert again == first
        assert len(calls) == 1
        members = [i for v in first.values() for i in v]
        assert sorted(members) == self.ids

    def test_validation(self, tmp_path: Path) -> None:
        path = tmp_path / 'x.json'
        splits = {'train': self.ids[:14], 'val': self.ids[14:16], 'test': self.ids[16:]}

        def write(content: dict) -> None:
            path.write_text(json.dumps({'splits': content}))

        def load() -> dict[str, list[str]]:
            return load_or_create_split(
                path, self.ids, lambda: self.labels, FRACTIONS, 0, 'X'
            )

        write(splits)
        assert load() == splits
        write({**splits, 'test': [*splits['test'], 'ghost']})
        with pytest.raises(
            ValueError, match=r"do not exist in the dataset, e\.g\. 'ghost'"
        ):
            load()
        write({**splits, 'val': [*splits['val'], self.ids[0]]})
        with pytest.raises(ValueError, match='more than once'):
            load()
        write({**splits, 'test': splits['test'][1:]})
        with pytest.raises(ValueError, match='does not assign 1 image'):
            load()
        write({'train': splits['train']})
        with pytest.raises(ValueError, match='not a valid split file'):
            load()

    def test_unwritable_location_warns(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(path: object, data: bytes) -> None:
            raise PermissionError('read-only')

        monkeypatch.setattr(utils, 'atomic_write_bytes', fail)
        with pytest.warns(UserWarning, match='Could not write the split file'):
            result = load_or_create_split(
                tmp_path / 'x.json', self.ids, lambda: self.labels, FRACTIONS, 0, 'X'
            )
        assert sum(len(v) for v in result.values()) == 20
        assert not (tmp_path / 'x.json').exists()


class TestPixelCountCache:
    def test_cache(self, tmp_path: Path) -> None:
        masks = {}
        for i in range(3):
            path = tmp_path / f'm{i}.bin'
            path.write_bytes(bytes([i]))
            masks[str(path)] = np.full((2, 2), i, dtype=np.int64)
        calls: list[str] = []

        def load(path: str) -> np.ndarray:
            calls.append(path)
            return masks[path]

        cache = tmp_path / 'cache' / 'counts.npz'
        ids, paths = ['a', 'b', 'c'], list(masks)
        counts = load_or_compute_pixel_counts(cache, ids, paths, load, 3)
        assert counts.tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
        assert cache.is_file()
        assert len(calls) == 3
        again = load_or_compute_pixel_counts(cache, ids, paths, load, 3)
        assert np.array_equal(again, counts)
        assert len(calls) == 3
        with np.load(cache, allow_pickle=False) as data:
            assert data['counts'].dtype == np.int64
        # A changed mask file invalidates the cache.
        os.utime(paths[1], ns=(5, 5))
        masks[paths[1]] = np.full((2, 2), 2, dtype=np.int64)
        changed = load_or_compute_pixel_counts(cache, ids, paths, load, 3)
        assert changed[1].tolist() == [0, 0, 4]
        assert len(calls) == 6
        # A corrupt cache is recomputed.
        cache.write_bytes(b'garbage')
        assert np.array_equal(
            load_or_compute_pixel_counts(cache, ids, paths, load, 3), changed
        )
        with pytest.raises(FileNotFoundError, match=r"Mask '.*missing' of image 'd'"):
            load_or_compute_pixel_counts(
                cache, [*ids, 'd'], [*paths, str(tmp_path / 'missing')], load, 3
            )


class TestFiles:
    def test_atomic_write(self, tmp_path: Path) -> None:
        path = tmp_path / 'a' / 'b.txt'
        atomic_write_bytes(path, b'one')
        atomic_write_bytes(path, b'two')
        assert path.read_bytes() == b'two'
        assert os.listdir(path.parent) == ['b.txt']

    def test_verify_zip(self, tmp_path: Path) -> None:
        good = tmp_path / 'good.zip'
        with zipfile.ZipFile(good, 'w', compression=zipfile.ZIP_STORED) as zf:
            zf.writestr('a.txt', b'hello world' * 10)
        assert verify_zip(good)
        bad = tmp_path / 'bad.zip'
        data = bytearray(good.read_bytes())
        data[data.index(b'hello')] ^= 1
        bad.write_bytes(bytes(data))
        assert not verify_zip(bad)
        (tmp_path / 'text.zip').write_text('bad')
        assert not verify_zip(tmp_path / 'text.zip')
        assert not verify_zip(tmp_path / 'missing.zip')

    def test_read_multilabel_csv(self, tmp_path: Path) -> None:
        path = tmp_path / 'l.csv'
        path.write_text(
            '\ufeffIMAGE\\LABEL,bare-soil,Mobile Home\na_1.jpg,1,0\n\nb_2,0,1\n'
        )
        table = read_multilabel_csv(path, ('bare soil', 'mobile home'))
        assert {k: v.tolist() for k, v in table.items()} == {
            'a_1': [1, 0],
            'b_2': [0, 1],
        }
        path.write_text('image,x,y\na,1,2\n')
        with pytest.raises(
            ValueError, match="line 2: labels must be 0 or 1, got \\['1', '2'\\]"
        ):
            read_multilabel_csv(path, ('x', 'y'))
        path.write_text('image,x,y\na,1,0\na,0,0\n')
        with pytest.raises(ValueError, match="line 3: image 'a' is listed twice"):
            read_multilabel_csv(path, ('x', 'y'))
        path.write_text('image,x\na,1\n')
        with pytest.raises(ValueError, match='the header has 2 columns, expected 3'):
            read_multilabel_csv(path, ('x', 'y'))
        path.write_text('')
        with pytest.raises(ValueError, match='is empty'):
            read_multilabel_csv(path, ('x', 'y'))
        with pytest.raises(FileNotFoundError, match='does not exist'):
            read_multilabel_csv(tmp_path / 'missing.csv', ('x',))
        assert normalise_class_name('Bare-Soil_ 2') == 'baresoil2'

    def test_load_rgb_image(self, tmp_path: Path) -> None:
        from PIL import Image

        grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
        Image.fromarray(grey).save(tmp_path / 'g.png')
        image = load_rgb_image(tmp_path / 'g.png')
        assert image.shape == (3, 3, 4)
        assert image.dtype == torch.float32
        assert torch.equal(image[1], torch.from_numpy(grey).float())
        with pytest.raises(OSError, match=r"Could not decode image '.*missing\.png'"):
            load_rgb_image(tmp_path / 'missing.png')

    def test_manual_download_error(self) -> None:
        class Fake:
            root = 'here'
            download = False

        err = manual_download_error(Fake(), 'X', 'the web', '  here/X/')
        assert isinstance(err, DatasetNotFoundError)
        assert str(err).startswith("Dataset not found in `root='here'`")
        assert 'Get it from the web' in str(err)
        assert 'here/X/' in str(err)


class TestPlotAndBase:
    def test_plot_variants(self) -> None:
        sample = {
            'image': torch.randn(3, 8, 8),  # normalised image
            'label': torch.tensor([1, 0, 1]),
            'mask': torch.randint(0, 3, (8, 8)),
            'prediction': torch.tensor([0, 0, 0]),
        }
        fig = plot_multilabel_sample(sample, ('a', 'b', 'c'), None, True, 'title')
        assert 'Labels: a, c' in fig.texts[0].get_text()
        assert 'Predicted: (none)' in fig.texts[0].get_text()
        plt.close(fig)
        sample['image'] = torch.rand(3, 8, 8)  # 0..1 image
        fig = plot_multilabel_sample(sample, ('a', 'b', 'c'), ((1, 2, 3),) * 3)
        assert len(fig.axes) == 2
        plt.close(fig)

    def test_base_dataset(self) -> None:
        class Tiny(RetrievalDataset):
            classes = ('a', 'b')

            def __init__(self) -> None:
                self.image_paths = []
                self.mask_paths = None
                self.ids = []
                self.labels = torch.zeros(0, 2, dtype=torch.long)
                self.transforms = None

        ds = Tiny()
        assert len(ds) == 0
        assert ds.label_frequencies.tolist() == [0.0, 0.0]
        with pytest.raises(IndexError):
            ds[0]
        with pytest.raises(NotImplementedError):
            ds._load_mask_array('x.png')
        with pytest.raises(ValueError, match='Invalid split'):
            ds._check_split('bad')
