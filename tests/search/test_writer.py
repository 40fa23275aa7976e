import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
from torchgeo_macl.main import main
from torchgeo_macl.search import (
    EmbeddingIndex,
    Embeddings,
    EmbeddingWriter,
    load_archive_info,
    load_task,
    model_fingerprint,
    read_shards,
    write_shard,
)

pytestmark = pytest.mark.usefixtures('one_thread')

DATA = Path(__file__).parents[1] / 'data'


@pytest.fixture(scope='module')
def checkpoint(
    tiny_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny task trained (as far as preprocessing goes) at 32 px on DLRSD."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.ckpt'
    return tiny_checkpoint(path, trained_at=32)


@pytest.fixture(scope='module')
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DLRSD datamodule config over the 12 test images, batches of 5."""
    base = tmp_path_factory.mktemp('data')
    shutil.copytree(DATA / 'dlrsd' / 'DLRSD', base / 'dlrsd' / 'DLRSD')
    shutil.rmtree(base / 'dlrsd' / 'DLRSD' / 'splits', ignore_errors=True)
    data = {
        'class_path': 'torchgeo_macl.datamodules.DLRSDRetrievalDataModule',
        'init_args': {'root': str(base / 'dlrsd'), 'batch_size': 5, 'image_size': 32},
    }
    path = base / 'data.yaml'
    path.write_text(yaml.safe_dump({'data': data}))
    return path


@pytest.fixture(scope='module')
def exported(
    checkpoint: Path, config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp('export') / 'shards'
    argv = ['export', '--ckpt', str(checkpoint), '--data', str(config)]
    assert (
        main([*argv, '--out', str(out), '--accelerator', 'cpu', '--no-progress']) == 0
    )
    return out


def _error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = f'torchgeo-macl {command}: error: '
    assert lines[0].startswith(prefix), err
    return lines[0].removeprefix(prefix)


def _fails(capsys: pytest.CaptureFixture[str], command: str, *args: str) -> str:
    """Run ``command`` with ``args``, expect exit status 1 and return its error."""
    assert main([command, *args]) == 1
    return _error_line(capsys.readouterr().err, command)


# ----------------------------------------------------------------------------------
# shards
# ----------------------------------------------------------------------------------


def _part(n: int = 5, model_id: str = 'sha256:x', labels: bool = True) -> Embeddings:
    g = torch.Generator().manual_seed(n)
    return Embeddings(
        embeddings=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1),
        indexes=torch.arange(n).flip(0),
        ids=[f'img{i}' for i in range(n)][::-1],
        model_id=model_id,
        labels=torch.randint(0, 2, (n, 3), generator=g) if labels else None,
        sources={f'img{i}': f'/data/img{i}.png' for i in range(n)},
        classes=['a', 'b', 'c'],
        checkpoint='/ckpt/model.ckpt',
    )


def test_shard_npy_and_parquet_agree(tmp_path: Path) -> None:
    part = _part()
    manifest = write_shard(tmp_path, part, rank=0, world_size=1)
    meta = json.loads(manifest.read_text())
    assert meta['rank'] == 0
    assert meta['world_size'] == 1
    assert meta['count'] == 5
    assert meta['dim'] == 4
    assert meta['model_id'] == 'sha256:x'
    assert meta['format_version'] == 1
    files = {k: tmp_path / v for k, v in meta['files'].items()}
    embeddings = np.load(files['embeddings'], allow_pickle=False)
    assert embeddings.dtype == np.float32
    table = pq.read_table(files['parquet']).to_pydict()
    np.testing.assert_array_equal(np.array(table['embedding'], np.float32), embeddings)
    np.testing.assert_array_equal(table['index'], np.load(files['index']))
    assert table['id'] == np.load(files['ids']).tolist() == part.ids
    np.testing.assert_array_equal(table['label'], np.load(files['labels']))
    np.testing.assert_array_equal(table['label'], part.labels.numpy())
    assert table['source'] == [part.sources[i] for i in part.ids]
    merged = read_shards(tmp_path)
    # sorted by dataset index
    assert merged.ids == [f'img{i}' for i in range(5)]
    torch.testing.assert_close(merged.embeddings, part.embeddings.flip(0))
    assert merged.labels is not None
    torch.testing.assert_close(merged.labels, part.labels.flip(0).byte())
    assert merged.sources == part.sources
    assert merged.classes == part.classes
    assert merged.checkpoint == part.checkpoint


def test_read_shards_drops_repeated_indexes(tmp_path: Path) -> None:
    part = _part(6, labels=False)
    first = Embeddings(
        part.embeddings[:4], torch.tensor([0, 2, 4, 0]), ['a', 'c', 'e', 'a'], 'm'
    )
    second = Embeddings(part.embeddings[4:], torch.tensor([1, 3]), ['b', 'd'], 'm')
    write_shard(tmp_path, first, rank=0, world_size=2)
    write_shard(tmp_path, second, rank=1, world_size=2)
    merged = read_shards(tmp_path)
    assert merged.ids == ['a', 'b', 'c', 'd', 'e']
    assert merged.indexes.tolist() == [0, 1, 2, 3, 4]
    assert merged.labels is None
    torch.testing.assert_close(merged.embeddings, part.embeddings[[0, 4, 1, 5, 2]])


def test_read_shards_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='embedding folder not found'):
        read_shards(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='no embedding shards'):
        read_shards(tmp_path)
    write_shard(tmp_path, _part(model_id='sha256:a'), rank=0, world_size=3)
    write_shard(tmp_path, _part(model_id='sha256:b'), rank=1, world_size=3)
    with pytest.raises(
        ValueError,
        match=re.escape('shard-00001-of-00003.json holds embeddings of model sha256:b'),
    ):
        read_shards(tmp_path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            'shard-00000-of-00003.json holds embeddings of model sha256:a but the checkpoint is sha256:c'
        ),
    ):
        read_shards(tmp_path, model_id='sha256:c')
    write_shard(tmp_path, _part(model_id='sha256:a'), rank=1, world_size=3)
    with pytest.raises(
        FileNotFoundError, match=re.escape('shards missing: shard-00002-of-00003.json')
    ):
        read_shards(tmp_path)
    write_shard(tmp_path, _part(model_id='sha256:a'), rank=2, world_size=3)
    assert len(read_shards(tmp_path).ids) == 5
    (tmp_path / 'shard-00002-of-00003.labels.npy').unlink()
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            'labels.npy: file of shard shard-00002-of-00003.json is missing'
        ),
    ):
        read_shards(tmp_path)


def test_writer_in_a_single_process_predict(
    checkpoint: Path, config: Path, tmp_path: Path
) -> None:
    task = load_task(checkpoint)
    fingerprint = model_fingerprint(task)
    dm = DLRSDRetrievalDataModule(
        root=str(config.parent / 'dlrsd'),
        batch_size=5,
        image_size=32,
        predict_split='all',
    )
    writer = EmbeddingWriter(tmp_path)
    trainer = Trainer(
        accelerator='cpu',
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
    )
    assert trainer.predict(task, datamodule=dm, return_predictions=False) is None
    merged = read_shards(tmp_path, model_id=fingerprint)
    assert merged.ids == dm.predict_ids
    assert merged.classes == list(dm.classes)
    assert merged.labels is not None
    torch.testing.assert_close(merged.labels, dm.predict_dataset.labels.byte())
    assert writer.count == 12


# ----------------------------------------------------------------------------------
# export and index --embeddings
# ----------------------------------------------------------------------------------


def _same_index(a: Path, b: Path) -> None:
    first, second = EmbeddingIndex.load(a), EmbeddingIndex.load(b)
    assert first.ids == second.ids
    assert first.model_id == second.model_id
    assert first.labels is not None
    assert second.labels is not None
    torch.testing.assert_close(first.labels, second.labels)
    vectors = [
        torch.from_numpy(index._index.reconstruct_n(0, len(index)))
        for index in (first, second)
    ]
    torch.testing.assert_close(vectors[0], vectors[1], rtol=0, atol=1e-6)
    info_a, info_b = load_archive_info(a), load_archive_info(b)
    assert info_a == info_b


def test_export_then_index_equals_index_from_data(
    checkpoint: Path,
    config: Path,
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in exported.iterdir()) == [
        'shard-00000-of-00001.' + ext
        for ext in (
            'embeddings.npy',
            'ids.npy',
            'index.npy',
            'json',
            'labels.npy',
            'parquet',
            'sources.npy',
        )
    ]
    direct = tmp_path / 'direct' / 'idx'
    argv = ['index', '--ckpt', str(checkpoint), '--out']
    assert (
        main([*argv, str(direct), '--data', str(config), '--accelerator', 'cpu']) == 0
    )
    # `index --data` embeds with its own prediction writer: no shards beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ['direct']
    from_shards = tmp_path / 'shards' / 'idx'
    assert main([*argv, str(from_shards), '--embeddings', str(exported)]) == 0
    _same_index(direct, from_shards)
    # without --ckpt, the manifests name the checkpoint
    bare = tmp_path / 'bare' / 'idx'
    assert main(['index', '--embeddings', str(exported), '--out', str(bare)]) == 0
    _same_index(direct, bare)


@pytest.mark.slow
def test_export_two_processes_match_one(
    exported: Path,
    checkpoint: Path,
    config: Path,
    run_command: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    out = tmp_path / 'ddp'
    argv = [
        sys.executable,
        '-m',
        'torchgeo_macl',
        'export',
        '--ckpt',
        str(checkpoint),
        '--data',
        str(config),
        '--out',
        str(out),
        '--accelerator',
        'cpu',
        '--devices',
        '2',
        '--strategy',
        'ddp',
        '--no-progress',
    ]
    run_command(argv, tmp_path, OMP_NUM_THREADS='1')
    assert sorted(p.name for p in out.glob('*.json')) == [
        'shard-00000-of-00002.json',
        'shard-00001-of-00002.json',
    ]
    counts = [json.loads(p.read_text())['count'] for p in sorted(out.glob('*.json'))]
    assert sum(counts) == 12
    assert min(counts) > 0
    two, one = read_shards(out), read_shards(exported)
    assert two.ids == one.ids
    assert two.model_id == one.model_id
    torch.testing.assert_close(two.embeddings, one.embeddings, rtol=0, atol=1e-6)
    assert two.labels is not None
    assert one.labels is not None
    torch.testing.assert_close(two.labels, one.labels)
    assert two.sources == one.sources


# ----------------------------------------------------------------------------------
# errors of the command line
# ----------------------------------------------------------------------------------


def test_index_from_an_empty_folder_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'idx' / 'x'
    line = _fails(capsys, 'index', '--embeddings', str(tmp_path), '--out', str(out))
    assert f'no embedding shards (shard-*-of-*.json) in {tmp_path}' in line
    assert not (tmp_path / 'idx').exists()


def test_index_from_shards_of_another_model_fails(
    exported: Path,
    tiny_checkpoint: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tiny_checkpoint(tmp_path / 'other.ckpt')
    args = ['--ckpt', str(other), '--embeddings', str(exported)]
    line = _fails(capsys, 'index', *args, '--out', str(tmp_path / 'x'))
    assert (
        f'{exported / "shard-00000-of-00001.json"} holds embeddings of model sha256:'
        in line
    )
    assert 'but the checkpoint is sha256:' in line


def test_index_from_mixed_shards_fails(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / 'mixed'
    shutil.copytree(exported, mixed)
    manifest = mixed / 'shard-00000-of-00001.json'
    meta = json.loads(manifest.read_text())
    write_shard(mixed, _part(model_id='sha256:other'), rank=1, world_size=2)
    meta['world_size'] = 2
    (mixed / 'shard-00000-of-00002.json').write_text(json.dumps(meta))
    manifest.unlink()
    args = ['--embeddings', str(mixed), '--out', str(tmp_path / 'x')]
    line = _fails(capsys, 'index', *args)
    assert (
        f'{mixed / "shard-00001-of-00002.json"} holds embeddings of model sha256:other but shard-00000-of-00002.json is sha256:'
        in line
    )


def test_index_from_shards_with_a_missing_file_fails(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / 'broken'
    shutil.copytree(exported, broken)
    (broken / 'shard-00000-of-00001.embeddings.npy').unlink()
    args = ['--embeddings', str(broken), '--out', str(tmp_path / 'x')]
    line = _fails(capsys, 'index', *args)
    assert (
        line
        == f'{broken / "shard-00000-of-00001.embeddings.npy"}: file of shard shard-00000-of-00001.json is missing'
    )


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        (['--out', 'x'], 'give either --data or --embeddings'),
        (
            ['--out', 'x', '--data', 'd', '--embeddings', 'e'],
            'give either --data or --embeddings',
        ),
        (['--out', 'x', '--data', 'd'], '--data needs --ckpt'),
    ],
)
def test_index_needs_one_source(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(['index', *argv]) == 2
    assert message in _error_line(capsys.readouterr().err, 'index')


def test_export_into_a_folder_with_shards_fails(
    exported: Path, checkpoint: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ['--ckpt', str(checkpoint), '--data', str(config), '--out', str(exported)]
    line = _fails(capsys, 'export', *args)
    assert f'{exported} holds embedding shards already' in line


def test_export_of_an_image_folder_fails(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ['--ckpt', str(checkpoint), '--data', str(tmp_path)]
    line = _fails(capsys, 'export', *args, '--out', str(tmp_path / 'out'))
    assert 'export embeds the images of a datamodule config' in line
