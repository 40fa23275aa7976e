import json
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import timm
import torch
from lightning.pytorch import Trainer, seed_everything
from PIL import Image

from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
from torchgeo_macl.datasets import DLRSD, make_synthetic_dlrsd
from torchgeo_macl.main import main
from torchgeo_macl.search import (
    ArchiveInfo,
    EmbeddingIndex,
    embed_images,
    list_images,
    load_archive_info,
    load_task,
    model_fingerprint,
    read_image,
    save_archive_info,
)
from torchgeo_macl.search.archive import ARCHIVE_FORMAT_VERSION
from torchgeo_macl.tasks import RetrievalTask

pytestmark = [
    pytest.mark.filterwarnings('ignore::rasterio.errors.NotGeoreferencedWarning'),
    pytest.mark.usefixtures('one_thread'),
]

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)

_create_model = timm.create_model


def _tiny_timm(name: str, *args: Any, **kwargs: Any) -> Any:
    """Create timm's tiny test ResNet whatever model name the task asks for."""
    kwargs['pretrained'] = False
    return _create_model('test_resnet', *args, **kwargs)


@pytest.fixture(autouse=True, scope='module')
def tiny_models() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr('torchgeo_macl.tasks.retrieval.timm.create_model', _tiny_timm)
        yield


def _train(
    root: Path, seed: int, out: Path, quiet_trainer: Callable[..., Trainer]
) -> tuple[Path, str]:
    """Train a tiny task for one short epoch; return its checkpoint and fingerprint."""
    seed_everything(seed, verbose=False)
    dm = DLRSDRetrievalDataModule(
        root=str(root), batch_size=8, seed=seed, split_fractions=SPLIT_FRACTIONS
    )
    task = RetrievalTask(
        model='resnet18',
        embed_dim=16,
        proj_hidden_dim=32,
        max_epochs=1,
        ks=(2,),
        monitor='val_mAP@2',
    )
    trainer = quiet_trainer(
        out,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=dm)
    ckpt = out / f'seed{seed}.ckpt'
    trainer.save_checkpoint(ckpt, weights_only=False)
    return ckpt, model_fingerprint(task.eval())


class Archive:
    """A tiny synthetic archive, two checkpoints and indexes built with the first."""

    def __init__(self, base: Path, quiet_trainer: Callable[..., Trainer]) -> None:
        self.base = base
        self.root = make_synthetic_dlrsd(
            base / 'data', num_images=30, image_size=32, seed=0
        ).parent
        self.ckpt, self.fingerprint = _train(
            self.root, 0, base / 'train0', quiet_trainer
        )
        self.other_ckpt, self.other_fingerprint = _train(
            self.root, 1, base / 'train1', quiet_trainer
        )
        self.config = base / 'data.yaml'
        self.config.write_text(
            'data:\n'
            '  class_path: torchgeo_macl.datamodules.DLRSDRetrievalDataModule\n'
            '  init_args:\n'
            f'    root: {self.root}\n'
            '    batch_size: 16\n'
            f'    split_fractions: {list(SPLIT_FRACTIONS)}\n'
        )
        self.index = base / 'index' / 'dlrsd'


@pytest.fixture(scope='module')
def archive(
    tmp_path_factory: pytest.TempPathFactory, quiet_trainer: Callable[..., Trainer]
) -> Archive:
    return Archive(tmp_path_factory.mktemp('archive'), quiet_trainer)


@pytest.fixture(scope='module')
def indexed(archive: Archive) -> Archive:
    code = main(
        [
            'index',
            '--ckpt',
            str(archive.ckpt),
            '--data',
            str(archive.config),
            '--out',
            str(archive.index),
        ]
    )
    assert code == 0
    return archive


def _all_ids(archive: Archive) -> list[str]:
    return [
        i
        for split in ('train', 'val', 'test')
        for i in DLRSD(
            root=str(archive.root), split=split, split_fractions=SPLIT_FRACTIONS
        ).ids
    ]


def _parse_results(out: str) -> dict[str, list[tuple[int, float, str]]]:
    """Read the printed tables: query -> [(rank, score, id), ...]."""
    results: dict[str, list[tuple[int, float, str]]] = {}
    rows: list[tuple[int, float, str]] = []
    for line in out.splitlines():
        if line.startswith('query: '):
            rows = results.setdefault(line.removeprefix('query: '), [])
            continue
        match = re.match(r'^\s+(\d+)\s+(-?\d+\.\d{4})\s+(\S+)', line)
        if match:
            rows.append((int(match[1]), float(match[2]), match[3]))
    return results


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


# ----------------------------------------------------------------------------------
# index / search round trip
# ----------------------------------------------------------------------------------


def test_index_writes_index_and_sidecar(
    indexed: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    index = EmbeddingIndex.load(indexed.index)
    ids = _all_ids(indexed)
    assert sorted(index.ids) == sorted(ids)
    assert index.model_id == indexed.fingerprint
    assert index.labels is not None
    assert index.labels.shape == (len(ids), len(DLRSD.classes))
    info = load_archive_info(indexed.index)
    assert info.model_id == indexed.fingerprint
    assert info.checkpoint == str(indexed.ckpt.resolve())
    assert info.classes == list(DLRSD.classes)
    assert set(info.sources) == set(ids)
    for id_, source in info.sources.items():
        assert Path(source).is_absolute()
        assert Path(source).is_file()
        assert Path(source).stem == id_.split('/')[-1]


def test_checkpoint_fingerprint_survives_loading(archive: Archive) -> None:
    assert model_fingerprint(load_task(archive.ckpt)) == archive.fingerprint
    assert archive.fingerprint != archive.other_fingerprint


def _search(indexed: Archive, *queries: str, ckpt: Path | None = None) -> list[str]:
    return [
        'search',
        '--index',
        str(indexed.index),
        '--ckpt',
        str(ckpt or indexed.ckpt),
        *queries,
    ]


def test_search_by_file_and_id(
    indexed: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = load_archive_info(indexed.index)
    query_id = min(info.sources)
    query_file = max(info.sources.values())
    file_id = next(i for i, p in info.sources.items() if p == query_file)
    grid = tmp_path / 'grid.png'
    capsys.readouterr()
    code = main(
        [*_search(indexed, query_file, query_id), '-k', '3', '--grid', str(grid)]
    )
    assert code == 0
    out = capsys.readouterr().out
    results = _parse_results(out)
    assert list(results) == [query_file, query_id]
    for rows in results.values():
        assert [r[0] for r in rows] == [1, 2, 3]
        scores = [r[1] for r in rows]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0001 <= s <= 1.0001 for s in scores)
        assert all(r[2] in info.sources for r in rows)
        assert len({r[2] for r in rows}) == 3
    # an archive image as a file finds itself, preprocessed as when indexing
    assert results[query_file][0][2] == file_id
    assert results[query_file][0][1] == pytest.approx(1.0, abs=1e-3)
    # an id query leaves itself out; its shared labels are known
    assert query_id not in [r[2] for r in results[query_id]]
    assert '(shared: ' in out
    assert f'grid: {grid}' in out
    assert _is_png(grid)
    assert plt.imread(grid).ndim == 3


def test_search_more_results_than_items(
    indexed: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    info = load_archive_info(indexed.index)
    query_id = sorted(info.sources)[1]
    capsys.readouterr()
    code = main([*_search(indexed, query_id), '-k', '1000'])
    assert code == 0
    rows = _parse_results(capsys.readouterr().out)[query_id]
    assert len(rows) == len(info.sources) - 1
    assert sorted(r[2] for r in rows) == sorted(set(info.sources) - {query_id})


def test_index_with_another_image_size_matches_its_checkpoint(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the datamodule resizes to 24 px while the task was trained at the stored size
    config = tmp_path / 'data24.yaml'
    config.write_text(archive.config.read_text() + '    image_size: 24\n')
    out = tmp_path / 'index24'
    args = ['index', '--ckpt', str(archive.ckpt), '--data', str(config)]
    assert main([*args, '--out', str(out)]) == 0
    assert EmbeddingIndex.load(out).model_id == archive.fingerprint
    query = min(load_archive_info(out).sources)
    args = ['search', '--index', str(out), '--ckpt', str(archive.ckpt), query]
    assert main([*args, '-k', '2']) == 0
    assert len(_parse_results(capsys.readouterr().out)[query]) == 2


def test_index_and_search_an_image_folder(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = sorted((archive.root / 'DLRSD' / 'Images').rglob('*.tif'))[:6]
    folder = tmp_path / 'images'
    (folder / 'sub').mkdir(parents=True)
    for i, src in enumerate(sources[:3]):
        shutil.copy(src, folder / f'a{i}.tif')
    for i, src in enumerate(sources[3:5]):
        shutil.copy(src, folder / 'sub' / f'b{i}.TIF')
    rgb = read_image(sources[5]).permute(1, 2, 0).numpy().astype(np.uint8)
    Image.fromarray(rgb).save(folder / 'sub' / 'c.png')
    (folder / 'notes.txt').write_text('not an image')
    out = tmp_path / 'folder_index'
    code = main(
        [
            'index',
            '--ckpt',
            str(archive.ckpt),
            '--data',
            str(folder),
            '--out',
            str(out),
            '--batch-size',
            '4',
        ]
    )
    assert code == 0
    assert 'indexed 6 images' in capsys.readouterr().out
    index = EmbeddingIndex.load(out)
    expected = ['a0', 'a1', 'a2', 'sub/b0', 'sub/b1', 'sub/c']
    assert list(index.ids) == expected
    assert index.labels is None
    info = load_archive_info(out)
    assert info.classes == []
    assert info.sources['sub/c'] == str((folder / 'sub' / 'c.png').resolve())

    # the PNG copy of an archive image is found as the nearest neighbour of the TIFF
    code = main(
        [
            'search',
            '--index',
            str(out),
            '--ckpt',
            str(archive.ckpt),
            str(sources[5]),
            'a1',
            '-k',
            '2',
        ]
    )
    assert code == 0
    out_text = capsys.readouterr().out
    results = _parse_results(out_text)
    assert results[str(sources[5])][0][2] == 'sub/c'
    assert results[str(sources[5])][0][1] == pytest.approx(1.0, abs=1e-3)
    assert len(results['a1']) == 2
    assert 'a1' not in [r[2] for r in results['a1']]
    assert '(shared:' not in out_text


def test_search_images_of_different_sizes(
    indexed: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trained without image_size: queries are embedded at their own size
    assert int(load_task(indexed.ckpt).input_size) == 0
    rng = np.random.default_rng(0)
    queries = []
    for side in (40, 24):
        path = tmp_path / f'q{side}.png'
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        queries.append(str(path))
    assert main([*_search(indexed, *queries), '-k', '2']) == 0
    results = _parse_results(capsys.readouterr().out)
    assert list(results) == queries
    assert all(len(rows) == 2 for rows in results.values())


def test_embed_images_mixed_sizes_match_one_by_one(archive: Archive) -> None:
    task = load_task(archive.ckpt)
    g = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 32, 32, generator=g) * 255,
        torch.rand(3, 40, 28, generator=g) * 255,
        torch.rand(3, 32, 32, generator=g) * 255,
    ]
    alone = torch.cat([embed_images(task, [image]) for image in images])
    assert alone.shape == (3, 16)
    torch.testing.assert_close(alone.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(embed_images(task, images), alone)
    same = [images[0], images[2]]
    torch.testing.assert_close(
        embed_images(task, same, batch_size=2), alone[[0, 2]], rtol=0, atol=1e-5
    )
    assert embed_images(task, []).shape == (0, 16)


# ----------------------------------------------------------------------------------
# Errors of the command line
# ----------------------------------------------------------------------------------


def _search_fails(
    indexed: Archive,
    query: str,
    capsys: pytest.CaptureFixture[str],
    ckpt: Path | None = None,
) -> str:
    """Run ``search``, check that it fails, and return its standard error."""
    assert main(_search(indexed, query, ckpt=ckpt)) == 1
    return capsys.readouterr().err


def test_search_with_another_checkpoint_fails(
    indexed: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    query = min(load_archive_info(indexed.index).sources)
    err = _search_fails(indexed, query, capsys, ckpt=indexed.other_ckpt)
    assert err.startswith('torchgeo-macl search: error: ')
    assert 'does not match the index' in err
    assert indexed.fingerprint in err
    assert indexed.other_fingerprint in err


def _four_band_geotiff(path: Path) -> None:
    with rasterio.open(
        path, 'w', driver='GTiff', width=32, height=32, count=4, dtype='uint8'
    ) as dst:
        dst.write(np.full((4, 32, 32), 100, dtype=np.uint8))


def _grayscale_png(path: Path) -> None:
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(path)


#: Query files with another number of bands than the model's 3: writer, bands.
OTHER_BANDS = {'four.tif': (_four_band_geotiff, 4), 'gray.png': (_grayscale_png, 1)}


@pytest.mark.parametrize('name', sorted(OTHER_BANDS))
def test_search_image_with_other_bands_fails(
    name: str, indexed: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write, bands = OTHER_BANDS[name]
    path = tmp_path / name
    write(path)
    err = _search_fails(indexed, str(path), capsys)
    assert 'torchgeo-macl search: error:' in err
    assert f'{bands} bands' in err
    assert 'expects 3' in err
    assert str(path) in err


@pytest.mark.parametrize('query', ['missing/file.tif', 'harbor/harbor99'])
def test_search_unknown_query_fails(
    indexed: Archive, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _search_fails(indexed, query, capsys)
    assert 'torchgeo-macl search: error:' in err
    assert repr(query) in err
    assert 'neither an image file nor an id of the index' in err


def test_search_missing_checkpoint_fails(
    indexed: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / 'missing.ckpt'
    query = min(load_archive_info(indexed.index).sources)
    err = _search_fails(indexed, query, capsys, ckpt=missing)
    assert 'checkpoint not found' in err
    assert str(missing) in err


@pytest.mark.parametrize('content', [b'', b'not a checkpoint'])
def test_search_invalid_checkpoint_fails(
    indexed: Archive, tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / 'bad.ckpt'
    bad.write_bytes(content)
    query = min(load_archive_info(indexed.index).sources)
    err = _search_fails(indexed, query, capsys, ckpt=bad)
    assert f'{bad} is not a RetrievalTask checkpoint' in err


def test_search_non_positive_k_fails(
    indexed: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    query = min(load_archive_info(indexed.index).sources)
    with pytest.raises(SystemExit) as info:
        main([*_search(indexed, query), '-k', '0'])
    assert info.value.code == 2
    assert 'argument -k: must be an integer >= 1, got 0' in capsys.readouterr().err


def test_search_missing_index_fails(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / 'nothing'
    code = main(['search', '--index', str(missing), '--ckpt', str(archive.ckpt), 'x/y'])
    assert code == 1
    err = capsys.readouterr().err
    assert 'torchgeo-macl search: error:' in err
    assert str(missing) in err


def _index_fails(
    ckpt: Path, data: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``index``, check that it fails, and return its standard error."""
    args = ['index', '--ckpt', str(ckpt), '--data', str(data), '--out', str(out)]
    assert main(args) == 1
    return capsys.readouterr().err


def test_index_missing_checkpoint_fails(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / 'missing.ckpt'
    err = _index_fails(missing, archive.config, tmp_path / 'idx', capsys)
    assert err.startswith('torchgeo-macl index: error: checkpoint not found')
    assert str(missing) in err
    assert not list(tmp_path.glob('idx*'))


def test_index_config_without_datamodule_fails(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / 'bad.yaml'
    config.write_text('model:\n  class_path: RetrievalTask\n')
    err = _index_fails(archive.ckpt, config, tmp_path / 'idx', capsys)
    assert 'no datamodule class_path' in err
    assert str(config) in err


def test_index_empty_folder_fails(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / 'empty'
    folder.mkdir()
    err = _index_fails(archive.ckpt, folder, tmp_path / 'idx', capsys)
    assert 'no .tif/.tiff/.png/.jpg/.jpeg images under' in err
    assert str(folder) in err


# ----------------------------------------------------------------------------------
# read_image
# ----------------------------------------------------------------------------------


def test_read_image_geotiff(tmp_path: Path) -> None:
    path = tmp_path / 'five.tif'
    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7) * 100
    with rasterio.open(
        path, 'w', driver='GTiff', width=7, height=6, count=5, dtype='uint16'
    ) as dst:
        dst.write(data)
    image = read_image(path)
    assert image.dtype == torch.float32
    assert image.shape == (5, 6, 7)
    assert torch.equal(image, torch.from_numpy(data.astype(np.float32)))
    assert torch.equal(read_image(str(path), bands=5), image)
    with pytest.raises(ValueError, match='has 5 bands but the model expects 3'):
        read_image(path, bands=3)


def test_read_image_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / 'rgb.png'
    Image.fromarray(rgb).save(path)
    image = read_image(path, bands=3)
    assert image.dtype == torch.float32
    assert image.shape == (3, 9, 11)
    assert image.is_contiguous()
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1).float())
    gray = tmp_path / 'gray.png'
    Image.fromarray(rgb[..., 0]).save(gray)
    assert read_image(gray).shape == (1, 9, 11)
    with pytest.raises(ValueError, match=re.escape(f'{gray} has 1 bands')):
        read_image(gray, bands=3)


def test_read_image_missing_file(tmp_path: Path) -> None:
    path = tmp_path / 'missing.png'
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_image(path)
    with pytest.raises(FileNotFoundError, match='image not found'):
        read_image(tmp_path)


@pytest.mark.parametrize('name', ['broken.png', 'broken.tif', 'broken.jpg'])
def test_read_image_undecodable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b'this is not an image at all')
    with pytest.raises(ValueError, match=re.escape(f'cannot decode image {path}')):
        read_image(path)


# ----------------------------------------------------------------------------------
# list_images
# ----------------------------------------------------------------------------------


def test_list_images_sorted_and_recursive(tmp_path: Path) -> None:
    names = ['b.png', 'a.tif', 'z/c.JPG', 'z/y/d.jpeg', 'e.TIFF', 'notes.txt', 'x.npy']
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'folder.png').mkdir()
    files = list_images(tmp_path)
    assert files == sorted(files)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        'a.tif',
        'b.png',
        'e.TIFF',
        'z/c.JPG',
        'z/y/d.jpeg',
    ]
    assert list_images(str(tmp_path)) == files


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        list_images(tmp_path / 'missing')
    (tmp_path / 'notes.txt').write_text('')
    with pytest.raises(FileNotFoundError, match=re.escape(f'images under {tmp_path}')):
        list_images(tmp_path)


# ----------------------------------------------------------------------------------
# model_fingerprint
# ----------------------------------------------------------------------------------


def _model(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_model_fingerprint_stable() -> None:
    a, b = _model(0), _model(0)
    fp = model_fingerprint(a)
    assert re.fullmatch(r'sha256:[0-9a-f]{64}', fp)
    assert model_fingerprint(a) == fp
    assert model_fingerprint(b) == fp
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(b) == fp
    assert model_fingerprint(_model(1)) != fp


def test_model_fingerprint_changes_with_any_weight() -> None:
    model = _model(0)
    fp = model_fingerprint(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weight = state['0.weight']
    weight[1, 2] = torch.nextafter(weight[1, 2], torch.tensor(math.inf))
    model.load_state_dict(state)
    changed = model_fingerprint(model)
    assert changed != fp
    # a buffer counts as well as a parameter
    model.load_state_dict(_model(0).state_dict())
    assert model_fingerprint(model) == fp
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['1.num_batches_tracked'] += 1
    model.load_state_dict(state)
    assert model_fingerprint(model) not in (fp, changed)


def test_model_fingerprint_sees_dtype_and_shape() -> None:
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    fp = model_fingerprint(model)
    assert model_fingerprint(model.double()) != fp
    other = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        other.weight.zero_()
    assert model_fingerprint(other) != fp


# ----------------------------------------------------------------------------------
# Archive sidecar
# ----------------------------------------------------------------------------------


def _info() -> ArchiveInfo:
    return ArchiveInfo(
        checkpoint='/models/model.ckpt',
        model_id='sha256:' + '0' * 64,
        classes=['water', 'trees'],
        sources={'a/b': '/data/a/b.tif', 'c': '/data/c.png'},
    )


def test_archive_info_round_trip(tmp_path: Path) -> None:
    prefix = tmp_path / 'index'
    save_archive_info(prefix, _info())
    path = tmp_path / 'index.archive.json'
    assert json.loads(path.read_text())['format_version'] == ARCHIVE_FORMAT_VERSION
    assert load_archive_info(prefix) == _info()
    assert load_archive_info(str(prefix)) == _info()
    assert [p.name for p in tmp_path.iterdir()] == ['index.archive.json']


def test_load_archive_info_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='archive sidecar not found'):
        load_archive_info(tmp_path / 'index')


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('{"format_version": 1, ', 'Expecting'),
        ('[1, 2]', "'list' object has no attribute 'get'"),
        (json.dumps({'format_version': 2}), 'unsupported format_version 2'),
        (json.dumps({'checkpoint': 'x'}), 'unsupported format_version None'),
        (json.dumps({'format_version': 1, 'checkpoint': 'x'}), 'model_id'),
    ],
)
def test_load_archive_info_invalid(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'index.archive.json'
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        load_archive_info(tmp_path / 'index')
    assert f'invalid archive sidecar {path}' in str(exc.value)


def test_search_with_known_query_labels_marks_shared_labels(indexed: Archive) -> None:
    from torchgeo_macl.search import (
        EmbeddingIndex,
        load_archive_info,
        load_task,
        search_archive,
    )

    test = DLRSD(root=str(indexed.root), split='test', split_fractions=SPLIT_FRACTIONS)
    index = EmbeddingIndex.load(indexed.index)
    info = load_archive_info(indexed.index)
    task = load_task(indexed.ckpt)
    query = test.image_paths[0]
    unknown = search_archive(index, info, task, [query], k=3)
    assert all(hit.shared is None for hit in unknown[0][1])
    known = search_archive(
        index, info, task, [query], k=3, query_labels=[test.labels[0]]
    )
    names = {test.classes[c] for c in test.labels[0].nonzero().flatten().tolist()}
    for hit in known[0][1]:
        assert hit.shared is not None
        assert set(hit.shared) == names & set(hit.labels)
    with pytest.raises(ValueError, match='1 query labels given for 2 queries'):
        search_archive(index, info, task, [query, query], query_labels=[None])
