import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchgeo_macl._compat import TORCHGEO_VERSION
from torchgeo_macl.datasets import DLRSD, make_synthetic_dlrsd
from torchgeo_macl.datasets.synthetic import CSV_HEADER, SCENES

AIRPLANE, BARE_SOIL, CARS, DOCK, PAVEMENT = 0, 1, 3, 6, 10
SEA, SHIP, TANKS, WATER = 12, 13, 14, 16


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob('*'))
        if p.is_file()
    }


def read_labels(folder: Path) -> tuple[list[str], np.ndarray]:
    with open(folder / 'multilabels.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER
    return [r[0] for r in rows[1:]], np.array(
        [[int(v) for v in r[1:]] for r in rows[1:]]
    )


@pytest.fixture(scope='module')
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dlrsd(
        tmp_path_factory.mktemp('synthetic'), num_images=210, image_size=32, seed=0
    )


def test_layout(archive: Path) -> None:
    assert archive.name == 'DLRSD'
    assert sorted(p.name for p in (archive / 'Images').iterdir()) == sorted(SCENES)
    images = sorted((archive / 'Images').glob('*/*.tif'))
    masks = sorted((archive / 'Labels').glob('*/*.png'))
    assert len(images) == len(masks) == 210
    assert (
        images[0].relative_to(archive).as_posix()
        == 'Images/agricultural/agricultural00.tif'
    )
    with Image.open(images[0]) as img:
        assert img.format == 'TIFF'
        assert img.mode == 'RGB'
        assert img.size == (32, 32)
    with Image.open(masks[0]) as img:
        assert img.format == 'PNG'
        assert img.mode == 'P'
        values = np.asarray(img)
        assert values.min() >= 1
        assert values.max() <= 17
    names, labels = read_labels(archive)
    assert names == sorted(p.stem for p in images)
    assert labels.shape == (210, 17)


def test_csv_consistent_with_masks(archive: Path) -> None:
    names, labels = read_labels(archive)
    for name, row in zip(names, labels):
        scene = name.rstrip('0123456789')
        with Image.open(archive / 'Labels' / scene / f'{name}.png') as img:
            values = np.asarray(img).astype(np.int64) - 1
        present = np.bincount(values.ravel(), minlength=17) > 0
        assert row.tolist() == present.astype(int).tolist(), name


def test_co_occurrence_rules(archive: Path) -> None:
    _, y = read_labels(archive)
    assert y.sum(1).min() >= 1
    for obj, hosts in (
        (SHIP, (SEA, WATER)),
        (DOCK, (SEA, WATER)),
        (AIRPLANE, (PAVEMENT,)),
        (CARS, (PAVEMENT,)),
        (TANKS, (BARE_SOIL, PAVEMENT)),
    ):
        has = y[:, obj] == 1
        assert has.any(), obj
        assert (y[has][:, list(hosts)].sum(1) > 0).all(), obj


def test_long_tailed(archive: Path) -> None:
    _, y = read_labels(archive)
    freq = y.mean(0)
    assert freq.min() > 0
    assert freq.max() / freq.min() > 5
    flat = make_synthetic_dlrsd(
        archive.parent / 'flat', num_images=210, image_size=32, zipf_exponent=0.0
    )
    _, y_flat = read_labels(flat)
    assert y_flat.mean(0).max() / y_flat.mean(0).min() < freq.max() / freq.min()


def test_labels_are_spatial(archive: Path) -> None:
    ds = DLRSD(archive.parent, split='train')
    lost = 0
    for k in range(len(ds)):
        mask = ds[k]['mask']
        crop = torch.zeros(17, dtype=torch.long)
        crop[mask[:16, :16].unique()] = 1
        assert (crop <= ds.labels[k]).all()
        lost += int((crop < ds.labels[k]).any())
    assert lost > len(ds) // 4


def test_deterministic(tmp_path: Path) -> None:
    a = make_synthetic_dlrsd(tmp_path / 'a', num_images=30, image_size=32, seed=5)
    b = make_synthetic_dlrsd(tmp_path / 'b', num_images=30, image_size=32, seed=5)
    c = make_synthetic_dlrsd(tmp_path / 'c', num_images=30, image_size=32, seed=6)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(c)


def test_zip_archive(tmp_path: Path) -> None:
    make_synthetic_dlrsd(
        tmp_path / 'a', num_images=25, image_size=16, make_archive=True
    )
    make_synthetic_dlrsd(
        tmp_path / 'b', num_images=25, image_size=16, make_archive=True
    )
    zipped = (tmp_path / 'a' / 'DLRSD.zip').read_bytes()
    assert zipped == (tmp_path / 'b' / 'DLRSD.zip').read_bytes()
    root = tmp_path / 'only_zip'
    root.mkdir()
    (root / 'DLRSD.zip').write_bytes(zipped)
    ds = DLRSD(root, split='test')
    assert len(ds) > 0
    assert ds[0]['image'].shape == (3, 16, 16)
    assert not [p for p in os.listdir(tmp_path / 'a') if p.startswith('.')]


def test_overwrite_and_arguments(tmp_path: Path) -> None:
    make_synthetic_dlrsd(tmp_path, num_images=21, image_size=16)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        make_synthetic_dlrsd(tmp_path, num_images=21, image_size=16)
    path = make_synthetic_dlrsd(tmp_path, num_images=5, image_size=16, overwrite=True)
    assert len(list(path.glob('Images/*/*.tif'))) == 5
    with pytest.raises(ValueError, match='num_images'):
        make_synthetic_dlrsd(tmp_path / 'x', num_images=0)
    with pytest.raises(ValueError, match='image_size'):
        make_synthetic_dlrsd(tmp_path / 'x', image_size=8)
    with pytest.raises(ValueError, match='non-negative'):
        make_synthetic_dlrsd(tmp_path / 'x', zipf_exponent=-1.0)


def test_read_by_dlrsd(archive: Path) -> None:
    root = archive.parent
    mask_labels = DLRSD(root, split='test')
    csv_labels = DLRSD(root, split='test', label_source='csv')
    assert torch.equal(mask_labels.labels, csv_labels.labels)
    x = mask_labels[0]
    assert x['image'].shape == (3, 32, 32)
    assert x['mask'].shape == (32, 32)


@pytest.mark.skipif(
    TORCHGEO_VERSION < (0, 10, 0), reason='torchgeo < 0.10 has no DLRSDMultilabel'
)
def test_read_by_torchgeo(archive: Path) -> None:
    from torchgeo.datasets import DLRSD as TorchGeoDLRSD
    from torchgeo.datasets import DLRSDMultilabel

    theirs = DLRSDMultilabel(archive.parent, checksum=False)
    assert len(theirs) == 210
    ours = DLRSD(archive.parent, split='val', label_source='csv')
    stems = {Path(p).stem: i for i, p in enumerate(theirs.image_fns)}
    for k, image_id in enumerate(ours.ids):
        other = theirs[stems[image_id.split('/')[1]]]
        assert torch.equal(ours[k]['label'], other['label'])
        assert torch.equal(ours[k]['image'], other['image'])
    seg = TorchGeoDLRSD(archive.parent, checksum=False)
    mask = seg[0]['mask']
    assert int(mask.min()) >= 0
    assert int(mask.max()) <= 16


def test_max_rate_controls_the_head_of_the_distribution(tmp_path: Path) -> None:
    low = make_synthetic_dlrsd(
        tmp_path / 'low', num_images=84, image_size=32, max_rate=0.2
    )
    high = make_synthetic_dlrsd(
        tmp_path / 'high', num_images=84, image_size=32, max_rate=0.9
    )
    freq_low = DLRSD(low.parent, split='train').label_frequencies
    freq_high = DLRSD(high.parent, split='train').label_frequencies
    assert freq_high.max() > freq_low.max()
    with pytest.raises(ValueError, match='max_rate'):
        make_synthetic_dlrsd(
            tmp_path / 'bad', num_images=21, image_size=32, max_rate=0.0
        )


@pytest.mark.parametrize(
    ('kwargs', 'error', 'message'),
    [
        ({'num_images': 10.5}, TypeError, 'num_images must be an integer, got 10.5'),
        ({'image_size': 32.0}, TypeError, 'image_size must be an integer, got 32.0'),
        ({'num_images': True}, TypeError, 'num_images must be an integer, got True'),
        ({'zipf_exponent': float('nan')}, ValueError, 'zipf_exponent must be finite'),
        ({'noise_std': float('inf')}, ValueError, 'noise_std must be finite'),
        ({'palette_jitter': -1.0}, ValueError, 'palette_jitter must be finite and'),
        ({'max_rate': 0.0}, ValueError, 'max_rate must be in'),
        ({'num_images': 10**12}, ValueError, 'GiB are free on the disk'),
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make_synthetic_dlrsd(tmp_path / 'new', **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / 'new').exists()
