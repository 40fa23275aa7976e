import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from torchgeo_macl.datasets import base, masks, splits, utils
from torchgeo_macl.datasets.utils import (
    lookup_labels,
    normalise_class_name,
    read_multilabel_csv,
)


class TestLabelTables:
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

    def test_lookup_labels(self) -> None:
        table = {'a': np.array([1, 0]), 'b': np.array([0, 1])}
        rows = lookup_labels(table, ['b', 'a'], 'l.csv', 2)
        assert rows.tolist() == [[0, 1], [1, 0]]
        assert lookup_labels(table, [], 'l.csv', 2).shape == (0, 2)
        with pytest.raises(ValueError, match=r"'l\.csv' has no row for image 'c'"):
            lookup_labels(table, ['a', 'c'], 'l.csv', 2)
        with pytest.raises(ValueError, match=r"no row for image 'x/c\.jpg'"):
            lookup_labels(table, ['c'], 'l.csv', 2, names=['x/c.jpg'])


class TestMovedNames:
    @pytest.mark.parametrize(
        ('name', 'owner'),
        [
            ('RetrievalDataset', base),
            ('plot_multilabel_sample', base),
            ('labels_from_pixel_counts', masks),
            ('load_or_compute_pixel_counts', masks),
            ('iterative_stratification', splits),
            ('load_or_create_split', splits),
        ],
    )
    def test_deprecated_alias(self, name: str, owner: ModuleType) -> None:
        with pytest.deprecated_call(match=f'import it from {owner.__name__}'):
            moved = getattr(utils, name)
        assert moved is getattr(owner, name)

    def test_io_names(self) -> None:
        from torchgeo_macl import _io

        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            assert utils.atomic_write_bytes is _io.atomic_write_bytes
            assert utils.verify_zip is _io.verify_zip

    def test_unknown_name(self) -> None:
        with pytest.raises(AttributeError, match='no attribute'):
            utils.missing  # noqa: B018
