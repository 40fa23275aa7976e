import json
import os
from pathlib import Path

import numpy as np
import pytest

from torchgeo_macl import _io
from torchgeo_macl.datasets.splits import (
    check_split_fractions,
    iterative_stratification,
    load_or_create_split,
    split_file_name,
)

FRACTIONS = {'train': 0.7, 'val': 0.1, 'test': 0.2}


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

        monkeypatch.setattr(_io, 'atomic_write_bytes', fail)
        with pytest.warns(UserWarning, match='Could not write the split file'):
            result = load_or_create_split(
                tmp_path / 'x.json', self.ids, lambda: self.labels, FRACTIONS, 0, 'X'
            )
        assert sum(len(v) for v in result.values()) == 20
        assert not (tmp_path / 'x.json').exists()
