from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import ConcatDataset

from torchgeo_macl._compat import DatasetNotFoundError
from torchgeo_macl.datasets import DLRSD, MLAID, WHDLD
from torchgeo_macl.datasets.base import (
    RetrievalDataset,
    load_rgb_image,
    manual_download_error,
    plot_multilabel_sample,
)


class TestHelpers:
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


class TestArchives:
    def test_getitem(self, any_dataset: RetrievalDataset) -> None:
        x = any_dataset[0]
        masks = {'mask'} if any_dataset.has_masks else set()
        assert set(x) == {'image', 'label', 'index'} | masks
        assert x['image'].dtype == torch.float32
        assert x['image'].shape == (3, 16, 16)
        assert x['label'].dtype == torch.long
        assert x['label'].shape == (len(any_dataset.classes),)
        assert int(x['index']) == 0
        if masks:
            assert x['mask'].dtype == torch.long
            assert x['mask'].shape == (16, 16)
            present = torch.zeros(len(any_dataset.classes), dtype=torch.long)
            present[x['mask'].unique()] = 1
            assert torch.equal(x['label'], present)

    def test_add(self, any_dataset: RetrievalDataset) -> None:
        ds = any_dataset + any_dataset
        assert isinstance(ds, ConcatDataset)
        assert len(ds) == 2 * len(any_dataset)

    @pytest.mark.parametrize('cls', [DLRSD, MLAID, WHDLD], ids=lambda c: c.__name__)
    def test_corrupted(self, tmp_path: Path, cls: type[RetrievalDataset]) -> None:
        (tmp_path / cls.filename).write_text('bad')
        with pytest.raises(RuntimeError, match='Dataset found, but corrupted'):
            cls(tmp_path, checksum=True)

    @pytest.mark.parametrize(
        ('cls', 'index', 'value', 'shape'),
        [(DLRSD, 0, 3, (8, 8)), (WHDLD, 1, 1, (8, 16))],
        ids=['DLRSD', 'WHDLD'],
    )
    def test_mask_size_mismatch(
        self,
        tmp_path: Path,
        copy_extracted: Callable[..., Path],
        cls: type[RetrievalDataset],
        index: int,
        value: int,
        shape: tuple[int, int],
    ) -> None:
        ds = cls(copy_extracted(cls, tmp_path))
        assert ds.mask_paths is not None
        Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(
            ds.mask_paths[index]
        )
        with pytest.raises(
            ValueError, match=f'has size {shape[0]}x{shape[1]} but image'
        ):
            ds[index]

    def test_plot(self, any_dataset: RetrievalDataset) -> None:
        x = any_dataset[0]
        fig = any_dataset.plot(x, suptitle='Test')
        assert isinstance(fig, Figure)
        assert len(fig.axes) == (2 if any_dataset.has_masks else 1)
        plt.close(fig)
        fig = any_dataset.plot(x, show_titles=False)
        assert fig.axes[0].get_title() == ''
        plt.close(fig)
        for prediction in (x['label'].clone(), 1 - x['label']):
            fig = any_dataset.plot({**x, 'prediction': prediction})
            assert 'Predicted: ' in fig.texts[0].get_text()
            plt.close(fig)
