import builtins
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, NoReturn

import faiss
import numpy as np
import pytest
import torch
from torch import Tensor

import torchgeo_macl.search.index as index_module
from torchgeo_macl import _io
from torchgeo_macl.search import EmbeddingIndex

pytestmark = pytest.mark.usefixtures('one_thread')


def clustered(
    n: int, dim: int = 32, clusters: int = 40, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Points around random centres, and queries drawn the same way."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    which = torch.randint(0, clusters, (n,), generator=g)
    x = centres[which] + 0.35 * torch.randn(n, dim, generator=g)
    q_which = torch.randint(0, clusters, (200,), generator=g)
    q = centres[q_which] + 0.35 * torch.randn(200, dim, generator=g)
    return x, q


def exact_top_k(x: Tensor, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
    xn = x / x.norm(dim=1, keepdim=True)
    qn = q / q.norm(dim=1, keepdim=True)
    return (qn @ xn.T).topk(k, dim=1)


def recall_at_k(found: Tensor, truth: Tensor) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(2).sum()
    return hits.item() / truth.numel()


def make_ids(n: int, start: int = 0) -> list[str]:
    return [f'img/{i:06d}' for i in range(start, start + n)]


def random_labels(n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 6, generator=g) < 0.3).long()


@pytest.fixture(scope='module')
def data() -> tuple[Tensor, Tensor]:
    return clustered(8000)


# ----------------------------------------------------------------------------------
# Search
# ----------------------------------------------------------------------------------


def test_flat_equals_topk() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 48, generator=g)
    q = torch.randn(70, 48, generator=g)
    index = EmbeddingIndex(48, 'flat')
    index.add(x, make_ids(3000))
    scores, positions = index.search(q, 15)
    ref_scores, ref_positions = exact_top_k(x, q, 15)
    assert positions.dtype == torch.long
    assert scores.dtype == torch.float32
    assert torch.equal(positions, ref_positions)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=1e-6)
    ids = [[index.ids[p] for p in row] for row in positions[:2, :3].tolist()]
    assert ids == [
        [f'img/{p:06d}' for p in row] for row in ref_positions[:2, :3].tolist()
    ]
    # scale and dtype of queries do not matter
    _, positions64 = index.search(q.double() * 3.0, 15)
    assert torch.equal(positions64, positions)


@pytest.mark.parametrize(
    ('kind', 'kwargs'), [('ivf', {'nprobe': 16}), ('hnsw', {'ef_search': 64})]
)
def test_approximate_recall(
    data: tuple[Tensor, Tensor], kind: str, kwargs: dict[str, int]
) -> None:
    x, q = data
    index = EmbeddingIndex(32, kind, **kwargs)  # type: ignore[arg-type]
    index.add(x, make_ids(len(x)))  # ivf: trained on this batch
    assert index.is_trained
    _, positions = index.search(q, 10)
    _, truth = exact_top_k(x, q, 10)
    assert recall_at_k(positions, truth) >= 0.95


def test_ivfpq(data: tuple[Tensor, Tensor]) -> None:
    x, q = data
    x = x[:4000]
    assert EmbeddingIndex(32, 'ivfpq')._pq_m == 4  # default: dim // 8
    assert EmbeddingIndex(100, 'ivfpq')._pq_m == 10  # largest divisor <= 12
    index = EmbeddingIndex(32, 'ivfpq', nlist=32, nprobe=8, pq_m=16, pq_nbits=6)
    assert index.nlist == 32
    index.train(x)
    index.add(x[:2500], make_ids(2500))
    index.add(x[2500:], make_ids(len(x) - 2500, 2500))
    assert len(index) == len(x)
    assert index._index.code_size == 12  # 16 codes of 6 bits per vector
    _, positions = index.search(q, 10)
    _, truth = exact_top_k(x, q, 10)
    assert recall_at_k(positions, truth) >= 0.45  # lossy codes


def test_ivf_auto_nlist_and_training_errors() -> None:
    x, _ = clustered(1000, dim=8)
    index = EmbeddingIndex(8, 'ivf')
    assert index.nlist is None
    assert not index.is_trained
    index.train(x)
    assert index.nlist == 1000 // 39  # round(4 * sqrt(1000)) = 126 is capped
    with pytest.raises(ValueError, match='already trained'):
        index.train(x)
    small = EmbeddingIndex(8, 'ivf', nlist=50)
    with pytest.raises(ValueError, match='needs at least 50 vectors, got 10'):
        small.add(x[:10], make_ids(10))
    assert len(small) == 0
    with pytest.raises(ValueError, match='needs at least 256 vectors'):
        EmbeddingIndex(8, 'ivfpq', nlist=4, pq_m=2).train(x[:100])
    with pytest.raises(ValueError, match='not trained: nothing to save'):
        small.save('unused')


def test_search_errors() -> None:
    index = EmbeddingIndex(8)
    with pytest.raises(ValueError, match='index is empty'):
        index.search(torch.randn(2, 8), 1)
    index.add(torch.randn(5, 8), make_ids(5))
    with pytest.raises(ValueError, match='dimension 7 but the index has dimension 8'):
        index.search(torch.randn(2, 7), 1)
    with pytest.raises(ValueError, match='k=6 is larger than the 5'):
        index.search(torch.randn(2, 8), 6)
    with pytest.raises(ValueError, match='positive integer'):
        index.search(torch.randn(2, 8), 0)
    nan = torch.randn(2, 8)
    nan[1, 1] = float('nan')
    with pytest.raises(ValueError, match='NaN'):
        index.search(nan, 1)


def test_add_errors_and_ids() -> None:
    index = EmbeddingIndex(4)
    index.add(torch.randn(3, 4), torch.tensor([10, 11, 12]), labels=random_labels(3))
    assert index.ids == ('10', '11', '12')
    assert index.labels is not None
    with pytest.raises(ValueError, match='already in the index'):
        index.add(torch.randn(1, 4), ['11'], labels=random_labels(1))
    with pytest.raises(ValueError, match='duplicates'):
        index.add(torch.randn(2, 4), ['a', 'a'], labels=random_labels(2))
    with pytest.raises(ValueError, match='got 1 ids for 2 embeddings'):
        index.add(torch.randn(2, 4), ['a'], labels=random_labels(2))
    with pytest.raises(ValueError, match='pass labels with every batch'):
        index.add(torch.randn(1, 4), ['a'])
    with pytest.raises(ValueError, match='labels have 3 columns but the index has 6'):
        index.add(torch.randn(1, 4), ['a'], labels=torch.ones(1, 3))
    with pytest.raises(ValueError, match='multi-hot'):
        index.add(torch.randn(1, 4), ['a'], labels=torch.full((1, 6), 2))
    with pytest.raises(TypeError, match='strings'):
        index.add(torch.randn(1, 4), [1], labels=random_labels(1))  # type: ignore[list-item]
    with pytest.raises(ValueError, match='dimension 5 but the index has dimension 4'):
        index.add(torch.randn(1, 5), ['a'], labels=random_labels(1))
    assert len(index) == 3  # nothing was added by the failed calls
    unlabelled = EmbeddingIndex(4)
    unlabelled.add(torch.randn(2, 4), ['a', 'b'])
    assert unlabelled.labels is None
    with pytest.raises(ValueError, match='built without labels'):
        unlabelled.add(torch.randn(1, 4), ['c'], labels=random_labels(1))
    with pytest.raises(ValueError, match='kind must be one of'):
        EmbeddingIndex(4, 'lsh')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='pq_m=3 must divide dim=4'):
        EmbeddingIndex(4, 'ivfpq', pq_m=3)


# ----------------------------------------------------------------------------------
# Save and load
# ----------------------------------------------------------------------------------

#: The version token in the data file names of a save.
TOKEN = re.compile(r'\.[0-9a-f]{16}\.')


def masked(path: str | os.PathLike[str]) -> str:
    """File name with its version token replaced by ``*``."""
    return TOKEN.sub('.*.', os.path.basename(path))


def data_files(prefix: Path) -> dict[str, Path]:
    """The data files named by the sidecar of an index, by sidecar key."""
    meta = json.loads(Path(f'{prefix}.json').read_text())
    return {
        key: prefix.parent / meta[key]['file']
        for key in ('faiss', 'ids', 'labels')
        if meta[key] is not None
    }


def index_files(prefix: Path) -> list[str]:
    """Names of the sidecar and of the data files it names, sorted."""
    return sorted(
        [f'{prefix.name}.json', *(p.name for p in data_files(prefix).values())]
    )


def assert_same(loaded: EmbeddingIndex, expected: EmbeddingIndex) -> None:
    assert loaded.ids == expected.ids
    assert loaded.model_id == expected.model_id
    if expected.labels is None:
        assert loaded.labels is None
    else:
        assert loaded.labels is not None
        assert torch.equal(loaded.labels, expected.labels)
    q = torch.randn(7, expected.dim, generator=torch.Generator().manual_seed(9))
    k = min(5, len(expected))
    scores, positions = loaded.search(q, k)
    expected_scores, expected_positions = expected.search(q, k)
    assert torch.equal(positions, expected_positions)
    assert torch.equal(scores, expected_scores)


def labelled_index(n: int, seed: int, start: int = 0) -> EmbeddingIndex:
    g = torch.Generator().manual_seed(seed)
    index = EmbeddingIndex(16, model_id='m1')
    index.add(
        torch.randn(n, 16, generator=g),
        make_ids(n, start),
        labels=random_labels(n, seed),
    )
    return index


@pytest.mark.parametrize('kind', ['flat', 'ivf', 'hnsw', 'ivfpq'])
def test_save_load_identical(
    tmp_path: Path, data: tuple[Tensor, Tensor], kind: str
) -> None:
    x, q = data
    x = x[:3000]
    labels = random_labels(len(x))
    kwargs = {'nlist': 32, 'nprobe': 5} if kind in ('ivf', 'ivfpq') else {}
    if kind == 'ivfpq':
        kwargs['pq_nbits'] = 6
    index = EmbeddingIndex(32, kind, model_id='resnet50-abc123', **kwargs)  # type: ignore[arg-type]
    index.add(x, make_ids(len(x)), labels=labels)
    scores, positions = index.search(q, 10)
    index.save(tmp_path / 'archive')
    names = sorted(os.listdir(tmp_path))
    assert names == index_files(tmp_path / 'archive')
    assert [masked(name) for name in names] == [
        'archive.*.faiss',
        'archive.*.ids.json',
        'archive.*.labels.npy',
        'archive.json',
    ]
    assert len({name.split('.')[1] for name in names[:3]}) == 1  # one version
    meta = json.loads((tmp_path / 'archive.json').read_text())
    assert meta['format_version'] == 2
    loaded = EmbeddingIndex.load(
        tmp_path / 'archive', expected_model_id='resnet50-abc123'
    )
    assert loaded.kind == kind
    assert loaded.dim == 32
    assert len(loaded) == len(x)
    assert loaded.model_id == 'resnet50-abc123'
    assert loaded.ids == index.ids
    assert loaded.nprobe == index.nprobe
    assert loaded.labels is not None
    assert torch.equal(loaded.labels, labels)
    loaded_scores, loaded_positions = loaded.search(q, 10)
    assert torch.equal(loaded_positions, positions)
    assert torch.equal(loaded_scores, scores)
    # still usable: add after loading
    loaded.add(x[:2] * 2, ['extra/0', 'extra/1'], labels=labels[:2])
    assert len(loaded) == len(x) + 2


def test_save_without_labels_and_overwrite(tmp_path: Path) -> None:
    x = torch.randn(20, 8)
    labelled = EmbeddingIndex(8)
    labelled.add(x, make_ids(20), labels=random_labels(20))
    labelled.save(tmp_path / 'a.faiss')  # the suffix is dropped
    plain = EmbeddingIndex(8)
    plain.add(x[:5], make_ids(5))
    plain.save(tmp_path / 'a')  # overwrites, removes the files of the first save
    assert sorted(masked(name) for name in os.listdir(tmp_path)) == [
        'a.*.faiss',
        'a.*.ids.json',
        'a.json',
    ]
    loaded = EmbeddingIndex.load(str(tmp_path / 'a.json'))
    assert len(loaded) == 5
    assert loaded.labels is None
    assert loaded.model_id is None
    # ids that need escaping survive
    odd = EmbeddingIndex(8)
    odd.add(x[:3], ['é/ü', 'a"b\\c', 'line\nbreak'])
    odd.save(tmp_path / 'a')
    assert EmbeddingIndex.load(tmp_path / 'a').ids == ('é/ü', 'a"b\\c', 'line\nbreak')


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(20, 8)
    index = EmbeddingIndex(8)
    index.add(x, make_ids(20))
    index.save(tmp_path / 'a')
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    bigger = EmbeddingIndex(8)
    bigger.add(torch.randn(30, 8), make_ids(30))

    def fail(*args: object) -> None:
        raise OSError('disk full')

    monkeypatch.setattr(faiss, 'write_index', fail)
    with pytest.raises(OSError, match='disk full'):
        bigger.save(tmp_path / 'a')
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before  # old files intact, no temporary files left


class Crash(BaseException):
    """The process was killed: nothing after it reaches the disk."""


class FaultInjector:
    """Records the file system steps of a save and makes step ``fail_at`` fail.

    With ``kill`` the failing step and every later one raise :class:`Crash` and the
    files are left as a killed process leaves them (a file being written or not yet
    flushed is cut short); otherwise the failing step raises ``OSError`` and the
    save goes on as it would after any error.
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, fail_at: int = -1, kill: bool = False
    ) -> None:
        self.steps: list[tuple[str, str]] = []
        self.fail_at = fail_at
        self.kill = kill
        self.dead = False
        self.paths: dict[int, str] = {}
        self.real_write_index = faiss.write_index
        self.real_fsync = os.fsync
        self.real_replace = os.replace
        self.real_remove = os.remove
        monkeypatch.setattr(faiss, 'write_index', self.write_index)
        monkeypatch.setattr(index_module, 'open', self.open, raising=False)
        monkeypatch.setattr(_io, 'open', self.open, raising=False)
        monkeypatch.setattr(os, 'fsync', self.fsync)
        monkeypatch.setattr(os, 'replace', self.replace)
        monkeypatch.setattr(os, 'remove', self.remove)

    def step(self, op: str, target: str) -> bool:
        """Record a step; whether it is the one to fail."""
        if self.dead:
            raise Crash(op)
        self.steps.append((op, target))
        return len(self.steps) - 1 == self.fail_at

    def fail(self, op: str) -> NoReturn:
        if self.kill:
            self.dead = True
            raise Crash(op)
        raise OSError(f'injected failure of {op}')

    @staticmethod
    def cut_short(path: str) -> None:
        os.truncate(path, os.path.getsize(path) // 2)

    def write_index(self, index: Any, path: str) -> None:
        if self.step('write_index', masked(path)):
            if self.kill:
                self.real_write_index(index, path)
                self.cut_short(path)
            self.fail('write_index')
        self.real_write_index(index, path)

    def open(self, path: str, mode: str = 'r', *args: Any, **kwargs: Any) -> Any:
        if self.step('open', masked(path)):
            if self.kill and 'x' in mode:
                builtins.open(path, mode).close()  # created, nothing written
            self.fail('open')
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115
        self.paths[f.fileno()] = path
        return f

    def fsync(self, fd: int) -> None:
        path = self.paths.get(fd)
        is_file = path is not None and stat.S_ISREG(os.fstat(fd).st_mode)
        if self.step('fsync', 'file' if is_file else 'directory'):
            if self.kill and path is not None and is_file:
                self.cut_short(path)  # what was not flushed is lost
            self.fail('fsync')
        self.real_fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        if self.step('replace', f'{masked(src)} -> {masked(dst)}'):
            self.fail('replace')
        self.real_replace(src, dst)

    def remove(self, path: str) -> None:
        if self.step('remove', masked(path)):
            self.fail('remove')
        self.real_remove(path)


#: The file system steps of saving a labelled index over an earlier one.
SAVE_STEPS = [
    ('write_index', 'idx.*.faiss'),
    ('open', 'idx.*.faiss'),  # read back for its SHA-256
    ('fsync', 'file'),
    ('open', 'idx.*.ids.json'),
    ('fsync', 'file'),
    ('open', 'idx.*.labels.npy'),
    ('fsync', 'file'),
    ('open', 'idx.*.json.tmp'),
    ('fsync', 'file'),
    ('fsync', 'directory'),
    ('replace', 'idx.*.json.tmp -> idx.json'),  # the switch
    ('fsync', 'directory'),
    ('remove', 'idx.*.faiss'),  # files of the earlier save
    ('remove', 'idx.*.ids.json'),
    ('remove', 'idx.*.labels.npy'),
]
SWITCH = SAVE_STEPS.index(('replace', 'idx.*.json.tmp -> idx.json'))

#: Files next to an index that a save must leave alone.
USER_FILES = (
    'idx.txt',
    'idx.archive.json',
    'idx.archive.jsonab12cd_9.tmp',
    'idx2.json',
    'idx2.0123456789abcdef.faiss',
    'xidx.faiss',
    # an index whose path prefix looks like a version of ``idx``
    'idx.0123456789abcdef.json',
    'idx.0123456789abcdef.faiss',
)


def test_save_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labelled_index(40, seed=0).save(tmp_path / 'idx')
    with monkeypatch.context() as m:
        injector = FaultInjector(m)
        labelled_index(30, seed=1).save(tmp_path / 'idx')
    assert injector.steps == SAVE_STEPS


@pytest.mark.parametrize('kill', [True, False], ids=['killed', 'error'])
@pytest.mark.parametrize('step', range(len(SAVE_STEPS)))
def test_save_interrupted_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int, kill: bool
) -> None:
    prefix = tmp_path / 'idx'
    old = labelled_index(40, seed=0)
    new = labelled_index(30, seed=1, start=1000)
    old.save(prefix)
    for name in USER_FILES:
        (tmp_path / name).write_text(f'a file of the user: {name}')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    with monkeypatch.context() as m:
        injector = FaultInjector(m, fail_at=step, kill=kill)
        try:
            new.save(prefix)
        except (Crash, OSError):
            failed = True
        else:
            failed = False
    assert injector.steps[step] == SAVE_STEPS[step]
    if kill:
        assert failed
        switched = step > SWITCH
    else:
        # after the switch, and where directories cannot be synced, errors are
        # ignored: the save is complete
        assert failed == (step <= SWITCH and SAVE_STEPS[step][1] != 'directory')
        switched = not failed

    # a reader sees the complete old index or the complete new one
    for verify in (True, False):
        loaded = EmbeddingIndex.load(prefix, verify_checksums=verify)
        assert_same(loaded, new if switched else old)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    if failed and not kill:
        assert after == before  # a failed save cleans up after itself
    if kill:
        assert set(after) - set(index_files(prefix)) - set(USER_FILES)  # leftovers

    # the next save removes the leftovers, and only them
    new.save(prefix)
    assert sorted(os.listdir(tmp_path)) == sorted([*index_files(prefix), *USER_FILES])
    for name in USER_FILES:
        assert (tmp_path / name).read_text() == f'a file of the user: {name}'
    assert_same(EmbeddingIndex.load(prefix), new)


def test_load_while_a_save_replaces_the_files(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = labelled_index(25, seed=3, start=500)
    read_index = faiss.read_index
    read: list[str] = []

    def read_during_save(path: str) -> Any:
        if not read:
            newer.save(saved)  # removes the files of the sidecar just read
        read.append(masked(path))
        return read_index(path)

    monkeypatch.setattr(faiss, 'read_index', read_during_save)
    assert_same(EmbeddingIndex.load(saved), newer)
    assert read == ['idx.*.faiss', 'idx.*.faiss']


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_save_permissions_follow_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        labelled_index(10, seed=0).save(tmp_path / 'new' / 'idx')
        with open(tmp_path / 'reference', 'w') as f:
            f.write('written by open')
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / 'reference').stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / 'new').stat().st_mode) == 0o777 & ~umask
    files = list((tmp_path / 'new').iterdir())
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name


@pytest.mark.parametrize('suffix', ['/', '/.json', '/.faiss', '/.'])
def test_save_refuses_a_directory(tmp_path: Path, suffix: str) -> None:
    index = labelled_index(10, seed=0)
    path = f'{tmp_path / "out"}{suffix}'
    with pytest.raises(ValueError, match='names a directory, not a path prefix'):
        index.save(path)
    with pytest.raises(ValueError, match=re.escape(repr(path))):
        EmbeddingIndex.load(path)
    (tmp_path / 'existing').mkdir()
    with pytest.raises(
        ValueError, match=r"prefix '.*existing' is an existing directory"
    ):
        index.save(tmp_path / 'existing')
    assert sorted(os.listdir(tmp_path)) == ['existing']
    assert not os.listdir(tmp_path / 'existing')
    with pytest.raises(
        FileNotFoundError, match=r"existing\.json' not found \(.* is a directory"
    ):
        EmbeddingIndex.load(tmp_path / 'existing')


def save_format_1(index: EmbeddingIndex, prefix: Path) -> None:
    """Write ``index`` as earlier versions did (format 1)."""
    faiss.write_index(index._index, f'{prefix}.faiss')
    sidecar: dict[str, Any] = {
        'format': 'torchgeo_macl.EmbeddingIndex',
        'format_version': 1,
        'kind': index.kind,
        'dim': index.dim,
        'count': len(index),
        'metric': 'inner_product_l2_normalised',
        'model_id': index.model_id,
        'params': index._params(),
        'faiss': {
            'file': f'{prefix.name}.faiss',
            'sha256': hashlib.sha256(Path(f'{prefix}.faiss').read_bytes()).hexdigest(),
        },
        'labels': None,
        'ids': list(index.ids),
    }
    if index.labels is not None:
        labels = index.labels.numpy().astype(np.uint8)
        np.save(f'{prefix}.labels.npy', labels, allow_pickle=False)
        sidecar['labels'] = {
            'file': f'{prefix.name}.labels.npy',
            'shape': list(labels.shape),
            'dtype': 'uint8',
            'sha256': hashlib.sha256(
                Path(f'{prefix}.labels.npy').read_bytes()
            ).hexdigest(),
        }
    Path(f'{prefix}.json').write_text(json.dumps(sidecar))


def test_load_format_1_and_save_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / 'idx'
    old = EmbeddingIndex(16, 'hnsw', model_id='m1')
    old.add(torch.randn(40, 16), make_ids(40), labels=random_labels(40))
    save_format_1(old, prefix)
    # temporary files of an interrupted format 1 save, and a file of the user
    leftovers = ['.idx.faiss.ab12cd_9.tmp', '.idx.json.x7k2m9q4.tmp']
    for name in [*leftovers, 'idx.txt']:
        (tmp_path / name).write_text('x')
    assert_same(EmbeddingIndex.load(prefix, expected_model_id='m1'), old)
    assert_same(EmbeddingIndex.load(f'{prefix}.faiss'), old)

    labels = Path(f'{prefix}.labels.npy')
    good = labels.read_bytes()
    labels.write_bytes(good[:-10])
    with pytest.raises(ValueError, match=r'labels file .*idx\.labels\.npy.*SHA-256'):
        EmbeddingIndex.load(prefix)
    labels.write_bytes(good)
    os.remove(f'{prefix}.faiss')
    with pytest.raises(FileNotFoundError, match=r'faiss index file .*idx\.faiss'):
        EmbeddingIndex.load(prefix)
    save_format_1(old, prefix)

    # a save killed before the switch leaves the format 1 index as it was
    new = labelled_index(30, seed=1, start=1000)
    with monkeypatch.context() as m:
        FaultInjector(m, fail_at=SWITCH, kill=True)
        with pytest.raises(Crash):
            new.save(prefix)
    assert_same(EmbeddingIndex.load(prefix), old)

    # a complete save writes format 2 and removes the format 1 files and leftovers
    new.save(prefix)
    assert sorted(os.listdir(tmp_path)) == sorted([*index_files(prefix), 'idx.txt'])
    assert json.loads(Path(f'{prefix}.json').read_text())['format_version'] == 2
    assert_same(EmbeddingIndex.load(prefix), new)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = EmbeddingIndex(16, model_id='m1')
    index.add(torch.randn(40, 16), make_ids(40), labels=random_labels(40))
    index.save(tmp_path / 'idx')
    return tmp_path / 'idx'


def edit_sidecar(prefix: Path, **changes: object) -> None:
    path = prefix.with_name(prefix.name + '.json')
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def test_load_missing_files(saved: Path) -> None:
    files = data_files(saved)
    os.remove(files['labels'])
    with pytest.raises(
        FileNotFoundError,
        match=r'labels file .*idx\.[0-9a-f]{16}\.labels\.npy.* not found '
        r'\(listed in .*idx\.json',
    ):
        EmbeddingIndex.load(saved)
    os.remove(files['ids'])
    with pytest.raises(
        FileNotFoundError, match=r'ids file .*idx\.[0-9a-f]{16}\.ids\.json.* not found'
    ):
        EmbeddingIndex.load(saved)
    os.remove(files['faiss'])
    with pytest.raises(
        FileNotFoundError,
        match=r'faiss index file .*idx\.[0-9a-f]{16}\.faiss.* not found',
    ):
        EmbeddingIndex.load(saved)
    os.remove(f'{saved}.json')
    with pytest.raises(FileNotFoundError, match=r'sidecar .*idx\.json'):
        EmbeddingIndex.load(saved)


def test_load_corrupt_faiss(saved: Path) -> None:
    path = data_files(saved)['faiss']
    data = path.read_bytes()
    path.write_bytes(b'not a faiss index' + data[17:])
    with pytest.raises(ValueError, match=r'idx\.[0-9a-f]{16}\.faiss.*SHA-256 differs'):
        EmbeddingIndex.load(saved)
    with pytest.raises(
        ValueError, match=r'cannot read faiss index file .*idx\.[0-9a-f]{16}\.faiss'
    ):
        EmbeddingIndex.load(saved, verify_checksums=False)
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(
        ValueError, match=r'cannot read faiss index file .*idx\.[0-9a-f]{16}\.faiss'
    ):
        EmbeddingIndex.load(saved, verify_checksums=False)


def test_load_detects_edited_ids(saved: Path) -> None:
    path = data_files(saved)['ids']
    ids = json.loads(path.read_text())
    path.write_text(json.dumps(ids[::-1]))  # reordered by hand
    with pytest.raises(
        ValueError,
        match=r'ids file .*idx\.[0-9a-f]{16}\.ids\.json.* does not match its sidecar '
        r'.*idx\.json.* \(SHA-256 differs\)',
    ):
        EmbeddingIndex.load(saved)
    # without the check, the edited ids are taken as they are
    assert EmbeddingIndex.load(saved, verify_checksums=False).ids == tuple(ids[::-1])
    path.write_text(json.dumps(ids[:39]))
    with pytest.raises(ValueError, match=r'lists 39 ids, but its sidecar .* count 40'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    path.write_text(json.dumps([*ids[:39], ids[0]]))
    with pytest.raises(ValueError, match=r'ids file .* lists duplicate ids'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    path.write_text('["truncated", ')
    with pytest.raises(ValueError, match=r'cannot read ids file .*ids\.json'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    # ids written into the sidecar itself are refused
    edit_sidecar(saved, ids=ids[::-1])
    with pytest.raises(ValueError, match='ids must be an object with a file'):
        EmbeddingIndex.load(saved)


def test_load_sidecar_mismatch(saved: Path, tmp_path: Path) -> None:
    other = EmbeddingIndex(16, model_id='m1')
    other.add(torch.randn(25, 16), make_ids(25))
    other.save(tmp_path / 'other')
    faiss_path = data_files(saved)['faiss']
    original = faiss_path.read_bytes()
    # the faiss file of another save: caught by the checksum, then by the count
    faiss_path.write_bytes(data_files(tmp_path / 'other')['faiss'].read_bytes())
    with pytest.raises(ValueError, match='SHA-256 differs'):
        EmbeddingIndex.load(saved)
    with pytest.raises(ValueError, match=r'has count 25, but its sidecar .* says 40'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    faiss_path.write_bytes(original)
    EmbeddingIndex.load(saved)  # consistent again
    edit_sidecar(saved, dim=8)
    with pytest.raises(
        ValueError, match=r'has dimension 16, but its sidecar .* says 8'
    ):
        EmbeddingIndex.load(saved)
    edit_sidecar(saved, dim=16, kind='hnsw')
    with pytest.raises(
        ValueError, match="holds a IndexFlatIP, but the sidecar says kind 'hnsw'"
    ):
        EmbeddingIndex.load(saved)
    edit_sidecar(saved, kind='flat', format_version=99)
    with pytest.raises(ValueError, match='format_version 99 is not supported'):
        EmbeddingIndex.load(saved)
    edit_sidecar(saved, format_version=2)
    meta = json.loads(Path(f'{saved}.json').read_text())
    for name in ('../idx.faiss', '/tmp/idx.faiss', '', '..'):
        edit_sidecar(saved, faiss={**meta['faiss'], 'file': name})
        with pytest.raises(ValueError, match=r'faiss\.file must name a file next to'):
            EmbeddingIndex.load(saved)
    edit_sidecar(saved, faiss=meta['faiss'])
    labels = data_files(saved)['labels']
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r'labels file .*SHA-256 differs'):
        EmbeddingIndex.load(saved)
    with pytest.raises(ValueError, match='cannot read labels file'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    Path(f'{saved}.json').write_text('{"truncated": ')
    with pytest.raises(ValueError, match='not valid JSON'):
        EmbeddingIndex.load(saved)


def test_load_model_id(saved: Path) -> None:
    assert EmbeddingIndex.load(saved, expected_model_id='m1').model_id == 'm1'
    with pytest.raises(ValueError, match="built with model 'm1', expected 'm2'"):
        EmbeddingIndex.load(saved, expected_model_id='m2')


def test_load_wrong_query_dim(saved: Path) -> None:
    loaded = EmbeddingIndex.load(saved)
    with pytest.raises(ValueError, match='dimension 32 but the index has dimension 16'):
        loaded.search(torch.randn(3, 32), 5)
