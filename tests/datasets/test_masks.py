import os
from pathlib import Path

import numpy as np
import pytest
import torch

from torchgeo_macl.datasets.masks import (
    check_min_pixel_fraction,
    decode_index_mask,
    decode_rgb_mask,
    labels_from_pixel_counts,
    load_or_compute_pixel_counts,
    pixel_counts,
)


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

    def test_check_min_pixel_fraction(self) -> None:
        assert check_min_pixel_fraction(0) == 0.0
        assert check_min_pixel_fraction(1) == 1.0
        with pytest.raises(ValueError, match=r'in \[0, 1\], got -0\.1'):
            check_min_pixel_fraction(-0.1)


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
