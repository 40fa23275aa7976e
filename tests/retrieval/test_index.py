import json
import os
from collections.abc import Iterator
from pathlib import Path

import faiss
import pytest
import torch
from torch import Tensor

from torchgeo_macl.retrieval import EmbeddingIndex


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


@pytest.fixture(autouse=True, scope='module')
def single_faiss_thread() -> Iterator[None]:
    # OpenMP teams stall when the cores are shared with other work; one thread
    # keeps these small indexes fast and their timings steady.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


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
    ids = index.ids_for(positions[:2, :3])
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
    with pytest.raises(ValueError, match='out of range'):
        index.ids_for(torch.tensor([[5]]))
    assert index.ids_for(torch.tensor([[-1, 4]])) == [[None, 'img/000004']]


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
    assert sorted(os.listdir(tmp_path)) == [
        'archive.faiss',
        'archive.json',
        'archive.labels.npy',
    ]
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
    plain.save(tmp_path / 'a')  # overwrites, removes the stale labels
    assert sorted(os.listdir(tmp_path)) == ['a.faiss', 'a.json']
    loaded = EmbeddingIndex.load(str(tmp_path / 'a.json'))
    assert len(loaded) == 5
    assert loaded.labels is None
    assert loaded.model_id is None


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
    os.remove(f'{saved}.labels.npy')
    with pytest.raises(FileNotFoundError, match=r'labels file .*idx\.labels\.npy'):
        EmbeddingIndex.load(saved)
    os.remove(f'{saved}.json')
    with pytest.raises(FileNotFoundError, match=r'sidecar .*idx\.json'):
        EmbeddingIndex.load(saved)
    Path(saved.with_name('nothing.json')).write_text('{}')
    with pytest.raises(FileNotFoundError, match=r'faiss index file .*nothing\.faiss'):
        EmbeddingIndex.load(saved.with_name('nothing'))


def test_load_corrupt_faiss(saved: Path) -> None:
    path = Path(f'{saved}.faiss')
    data = path.read_bytes()
    path.write_bytes(b'not a faiss index' + data[17:])
    with pytest.raises(ValueError, match=r'idx\.faiss.*SHA-256 differs'):
        EmbeddingIndex.load(saved)
    with pytest.raises(ValueError, match=r'cannot read faiss index file .*idx\.faiss'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match=r'cannot read faiss index file .*idx\.faiss'):
        EmbeddingIndex.load(saved, verify_checksums=False)


def test_load_sidecar_mismatch(saved: Path, tmp_path: Path) -> None:
    other = EmbeddingIndex(16, model_id='m1')
    other.add(torch.randn(25, 16), make_ids(25))
    other.save(tmp_path / 'other')
    original = Path(f'{saved}.faiss').read_bytes()
    # the faiss file of another save: caught by the checksum, then by the count
    Path(f'{saved}.faiss').write_bytes(Path(f'{tmp_path}/other.faiss').read_bytes())
    with pytest.raises(ValueError, match='SHA-256 differs'):
        EmbeddingIndex.load(saved)
    with pytest.raises(ValueError, match=r'has count 25, but its sidecar .* says 40'):
        EmbeddingIndex.load(saved, verify_checksums=False)
    Path(f'{saved}.faiss').write_bytes(original)
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
    edit_sidecar(saved, kind='flat', ids=make_ids(39))
    with pytest.raises(ValueError, match='lists 39 ids for count 40'):
        EmbeddingIndex.load(saved)
    edit_sidecar(saved, ids=make_ids(40), format_version=99)
    with pytest.raises(ValueError, match='format_version 99 is not supported'):
        EmbeddingIndex.load(saved)
    edit_sidecar(saved, format_version=1)
    labels = Path(f'{saved}.labels.npy')
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


# ----------------------------------------------------------------------------------
# Merging shards
# ----------------------------------------------------------------------------------


def test_merge_flat_shards() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(500, 16, generator=g)
    q = torch.randn(20, 16, generator=g)
    labels = random_labels(500)
    whole = EmbeddingIndex(16, model_id='m')
    whole.add(x, make_ids(500), labels=labels)
    shards = []
    for start in range(0, 500, 200):
        shard = EmbeddingIndex(16, model_id='m')
        stop = min(start + 200, 500)
        shard.add(
            x[start:stop], make_ids(stop - start, start), labels=labels[start:stop]
        )
        shards.append(shard)
    merged = EmbeddingIndex.merge(shards)
    assert merged.ids == whole.ids
    assert merged.labels is not None
    assert torch.equal(merged.labels, labels)
    assert [len(s) for s in shards] == [200, 200, 100]  # inputs unchanged
    a, pa = merged.search(q, 10)
    b, pb = whole.search(q, 10)
    assert torch.equal(pa, pb)
    assert torch.equal(a, b)


def test_merge_ivf_shards(tmp_path: Path, data: tuple[Tensor, Tensor]) -> None:
    x, q = data
    empty = EmbeddingIndex(32, 'ivf', nlist=32, nprobe=4)
    empty.train(x)
    empty.save(tmp_path / 'trained')
    whole = EmbeddingIndex.load(tmp_path / 'trained')
    whole.add(x, make_ids(len(x)))
    shards = []
    for start in range(0, len(x), 3000):
        shard = EmbeddingIndex.load(tmp_path / 'trained')
        part = x[start : start + 3000]
        shard.add(part, make_ids(len(part), start))
        shards.append(shard)
    merged = EmbeddingIndex.merge(shards)
    assert merged.ids == whole.ids
    assert merged.nprobe == 4
    a, pa = merged.search(q, 10)
    b, pb = whole.search(q, 10)
    assert torch.equal(pa, pb)
    torch.testing.assert_close(a, b)
    separate = EmbeddingIndex(32, 'ivf', nlist=32)
    separate.add(x[:2000] + 1.0, make_ids(2000, 10**6))
    with pytest.raises(ValueError, match='trained separately'):
        EmbeddingIndex.merge([shards[0], separate])


def test_merge_hnsw_and_errors(data: tuple[Tensor, Tensor]) -> None:
    x, q = data
    x = x[:3000]
    a = EmbeddingIndex(32, 'hnsw')
    a.add(x[:1500], make_ids(1500))
    b = EmbeddingIndex(32, 'hnsw')
    b.add(x[1500:], make_ids(1500, 1500))
    merged = EmbeddingIndex.merge([a, b])
    assert len(merged) == 3000
    _, positions = merged.search(q, 10)
    _, truth = exact_top_k(x, q, 10)
    assert recall_at_k(positions, truth) >= 0.95
    with pytest.raises(ValueError, match='share ids'):
        EmbeddingIndex.merge([a, a])
    with pytest.raises(ValueError, match='different kind'):
        EmbeddingIndex.merge([a, EmbeddingIndex(32, 'flat')])
    with pytest.raises(ValueError, match='different model_id'):
        EmbeddingIndex.merge([a, EmbeddingIndex(32, 'hnsw', model_id='x')])
    with pytest.raises(ValueError, match='at least one'):
        EmbeddingIndex.merge([])
