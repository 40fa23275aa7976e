"""Bad and edge inputs across the package: each case names its error or its value.

Every case either raises the exact exception type with a message fragment that
names the file or value at fault, or returns a defined value. Command-line cases
check the exit code and the one line on standard error.
"""

import json
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from torchgeo_macl._compat import DatasetNotFoundError
from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
from torchgeo_macl.datasets import DLRSD, MLAID, WHDLD, make_synthetic_dlrsd
from torchgeo_macl.losses import (
    JaccardSupConLoss,
    MACLLoss,
    NTXentLoss,
    SupConLoss,
    get_loss,
)
from torchgeo_macl.main import main
from torchgeo_macl.metrics import (
    RetrievalMetrics,
    mean_average_precision_at_k,
    precision_at_k,
)
from torchgeo_macl.samplers import LabelAwareBatchSampler
from torchgeo_macl.search import EmbeddingIndex, read_image
from torchgeo_macl.tasks import RetrievalTask

DATA = Path(__file__).parent / 'data'

pytestmark = pytest.mark.usefixtures('one_thread')


def _dlrsd(tmp: Path) -> Path:
    """A copy of the fake DLRSD archive under ``tmp``; returns its root."""
    shutil.copytree(DATA / 'dlrsd' / 'DLRSD', tmp / 'DLRSD')
    return tmp


def _copy(cls: type[Any], tmp: Path) -> Path:
    shutil.copytree(DATA / cls.file_prefix / cls.directory, tmp / cls.directory)
    return tmp


def _image_path(root: Path) -> Path:
    return root / 'DLRSD' / 'Images' / 'airplane' / 'airplane00.tif'


def _mask_path(root: Path) -> Path:
    return root / 'DLRSD' / 'Labels' / 'airplane' / 'airplane00.png'


def _write_geotiff(path: Path, array: np.ndarray[Any, Any]) -> Path:
    import rasterio

    bands, height, width = array.shape
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        height=height,
        width=width,
        count=bands,
        dtype=str(array.dtype),
    ) as dst:
        dst.write(array)
    return path


# ----------------------------------------------------------------- error cases

Case = Callable[[Path], object]


def _dataset_cases() -> list[Any]:
    def bad_split(tmp: Path) -> object:
        return DLRSD(_dlrsd(tmp), split='training')

    def missing_root(tmp: Path) -> object:
        return DLRSD(tmp / 'nowhere')

    def fraction(value: float) -> Case:
        return lambda tmp: DLRSD(_dlrsd(tmp), min_pixel_fraction=value)

    def split_fractions(value: tuple[float, ...]) -> Case:
        return lambda tmp: DLRSD(_dlrsd(tmp), split_fractions=value)

    def truncated_image(tmp: Path) -> object:
        root = _dlrsd(tmp)
        ds = DLRSD(root, split_fractions=(0.5, 0.25, 0.25))
        path = Path(ds.image_paths[0])
        path.write_bytes(path.read_bytes()[:100])
        return ds[0]

    def image_16bit(tmp: Path) -> object:
        root = _dlrsd(tmp)
        ds = DLRSD(root, split_fractions=(0.5, 0.25, 0.25))
        path = Path(ds.image_paths[0])
        array = np.full((16, 16), 1000, dtype=np.uint16)
        Image.fromarray(array).save(path)
        return ds[0]

    def image_float(tmp: Path) -> object:
        root = _dlrsd(tmp)
        ds = DLRSD(root, split_fractions=(0.5, 0.25, 0.25))
        path = Path(ds.image_paths[0])
        Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(path)
        return ds[0]

    def resized_mask(load_masks: bool) -> Case:
        def case(tmp: Path) -> object:
            root = _dlrsd(tmp)
            ds = DLRSD(root, split_fractions=(0.5, 0.25, 0.25), load_masks=load_masks)
            assert ds.mask_paths is not None
            mask = Path(ds.mask_paths[0])
            with Image.open(mask) as img:
                img.resize((img.width // 2, img.height // 2), Image.NEAREST).save(mask)
            return ds[0]

        return case

    def bad_mask_value(tmp: Path) -> object:
        root = _dlrsd(tmp)
        mask = _mask_path(root)
        with Image.open(mask) as img:
            array = np.asarray(img).copy()
        array[0, 0] = 200
        Image.fromarray(array).save(mask)
        return DLRSD(root)

    def index_out_of_range(tmp: Path) -> object:
        ds = DLRSD(_dlrsd(tmp), split_fractions=(0.5, 0.25, 0.25))
        return ds[len(ds)]

    def corrupt_split_file(tmp: Path) -> object:
        root = _dlrsd(tmp)
        ds = DLRSD(root)
        Path(ds.split_path).write_text('{not json')
        return DLRSD(root)

    def whdld_missing(tmp: Path) -> object:
        return WHDLD(tmp)

    def mlaid_missing_csv_row(tmp: Path) -> object:
        root = _copy(MLAID, tmp)
        csvs = sorted((root / MLAID.directory).rglob('*.csv'))
        lines = csvs[0].read_text().splitlines()
        csvs[0].write_text('\n'.join(lines[:-1]) + '\n')
        return MLAID(root, split='test')

    def synthetic(**kwargs: Any) -> Case:
        return lambda tmp: make_synthetic_dlrsd(tmp / 'syn', **kwargs)

    return [
        pytest.param(bad_split, ValueError, "Invalid split 'training'", id='ds-split'),
        pytest.param(missing_root, DatasetNotFoundError, 'nowhere', id='ds-no-root'),
        pytest.param(whdld_missing, DatasetNotFoundError, 'WHDLD', id='ds-whdld-none'),
        pytest.param(fraction(-0.1), ValueError, '-0.1', id='ds-frac-neg'),
        pytest.param(fraction(math.nan), ValueError, 'nan', id='ds-frac-nan'),
        pytest.param(fraction(1.5), ValueError, '1.5', id='ds-frac-big'),
        pytest.param(
            split_fractions((0.5, 0.5, 0.5)), ValueError, '0.5', id='ds-fracs-sum'
        ),
        pytest.param(
            split_fractions((0.7, 0.3)), ValueError, '[0.7, 0.3]', id='ds-fracs-2'
        ),
        pytest.param(
            split_fractions((1.0, 0.0, 0.0)), ValueError, '0.0', id='ds-fracs-zero'
        ),
        pytest.param(truncated_image, OSError, 'Could not decode image', id='ds-trunc'),
        pytest.param(image_16bit, ValueError, '16-bit integer', id='ds-uint16'),
        pytest.param(image_float, ValueError, '32-bit float', id='ds-float32'),
        pytest.param(resized_mask(True), ValueError, 'Labels', id='ds-mask-size'),
        pytest.param(
            resized_mask(False), ValueError, 'Labels', id='ds-mask-size-nomask'
        ),
        pytest.param(bad_mask_value, ValueError, 'airplane00.png', id='ds-mask-value'),
        pytest.param(index_out_of_range, IndexError, 'out of range', id='ds-index'),
        pytest.param(corrupt_split_file, ValueError, 'split', id='ds-split-file'),
        pytest.param(
            mlaid_missing_csv_row, ValueError, 'port_102', id='ds-mlaid-csv-row'
        ),
        pytest.param(
            synthetic(noise_std=math.inf), ValueError, 'noise_std', id='syn-noise-inf'
        ),
        pytest.param(
            synthetic(num_images=10.5), TypeError, 'num_images', id='syn-float-n'
        ),
        pytest.param(
            synthetic(zipf_exponent=math.nan), ValueError, 'zipf', id='syn-zipf-nan'
        ),
        pytest.param(
            synthetic(num_images=10**12), ValueError, 'num_images', id='syn-huge'
        ),
        pytest.param(
            synthetic(image_size=0), ValueError, 'image_size', id='syn-size-0'
        ),
    ]


def _datamodule_cases() -> list[Any]:
    def dm(**kwargs: Any) -> Case:
        return lambda tmp: DLRSDRetrievalDataModule(root=str(_dlrsd(tmp)), **kwargs)

    def big_batch(tmp: Path) -> object:
        module = DLRSDRetrievalDataModule(
            root=str(_dlrsd(tmp)), batch_size=64, split_fractions=(0.5, 0.25, 0.25)
        )
        module.setup('fit')
        return module.train_dataloader()

    return [
        pytest.param(dm(batch_size=0), ValueError, 'batch_size', id='dm-batch-0'),
        pytest.param(dm(batch_size=-4), ValueError, '-4', id='dm-batch-neg'),
        pytest.param(dm(image_size=0), ValueError, 'image_size', id='dm-size-0'),
        pytest.param(dm(sampler='balanced'), ValueError, 'balanced', id='dm-sampler'),
        pytest.param(
            dm(predict_split='everything'), ValueError, 'everything', id='dm-predict'
        ),
        pytest.param(dm(num_workers=-1), ValueError, 'num_workers', id='dm-workers'),
        pytest.param(big_batch, ValueError, 'batch_size', id='dm-batch-gt-split'),
    ]


def _sampler_cases() -> list[Any]:
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [1, 0]])

    def sampler(y: Any, batch_size: int = 2, **kwargs: Any) -> Case:
        return lambda tmp: LabelAwareBatchSampler(y, batch_size, **kwargs)

    return [
        pytest.param(sampler(labels, 0), ValueError, 'batch_size', id='smp-batch-0'),
        pytest.param(sampler(labels, 8), ValueError, '8', id='smp-batch-gt-n'),
        pytest.param(sampler(labels, m=0), ValueError, 'm', id='smp-m-0'),
        pytest.param(sampler(labels, sigma=1.5), ValueError, 'sigma', id='smp-sigma'),
        pytest.param(
            sampler(labels, sigma=math.nan), ValueError, 'sigma', id='smp-sigma-nan'
        ),
        pytest.param(sampler(labels, seed=-1), ValueError, 'seed', id='smp-seed'),
        pytest.param(
            sampler(labels * 2), ValueError, 'binary', id='smp-labels-nonbinary'
        ),
        pytest.param(
            sampler(torch.zeros(4, 2)), ValueError, 'label', id='smp-labels-empty'
        ),
        pytest.param(sampler(torch.ones(4)), ValueError, '[N, C]', id='smp-labels-1d'),
        pytest.param(
            sampler(labels, num_replicas=2, rank=2), ValueError, 'rank', id='smp-rank'
        ),
    ]


def _loss_cases() -> list[Any]:
    x = torch.randn(4, 2, 8)
    y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])

    def call(loss: Any, features: Any, labels: Any) -> Case:
        return lambda tmp: loss(features, labels)

    def make(factory: Callable[[], object]) -> Case:
        return lambda tmp: factory()

    nan = x.clone()
    nan[0, 0, 0] = math.nan
    return [
        pytest.param(
            make(lambda: SupConLoss(temperature=math.inf)),
            ValueError,
            'inf',
            id='loss-temp-inf',
        ),
        pytest.param(
            make(lambda: SupConLoss(temperature=0.0)), ValueError, '0.0', id='loss-t0'
        ),
        pytest.param(
            make(lambda: MACLLoss(tau_min=-1.0)), ValueError, '-1', id='macl-t-neg'
        ),
        pytest.param(
            make(lambda: get_loss('supcn')), ValueError, 'supcn', id='loss-unknown'
        ),
        pytest.param(
            make(lambda: get_loss('supcon', tau=0.1)),
            TypeError,
            'tau',
            id='loss-bad-kwarg',
        ),
        pytest.param(
            make(lambda: MACLLoss(label_frequencies=[0.5, 0.0])),
            ValueError,
            'label_frequencies',
            id='macl-freq-0',
        ),
        pytest.param(
            call(SupConLoss(), nan, y), ValueError, 'NaN', id='loss-nan-features'
        ),
        pytest.param(
            call(SupConLoss(), x, y * 3), ValueError, 'binary', id='loss-labels-3'
        ),
        pytest.param(
            call(SupConLoss(), x[:, 0], y), ValueError, '[B, V, D]', id='loss-2d'
        ),
        pytest.param(
            call(SupConLoss(), x, y[:3]), ValueError, 'labels hold 3', id='loss-rows'
        ),
        pytest.param(
            call(SupConLoss(), x.long(), y), TypeError, 'floating', id='loss-int'
        ),
        pytest.param(
            call(SupConLoss(), x[:0], y[:0]), ValueError, 'empty', id='loss-empty'
        ),
        pytest.param(
            call(MACLLoss(label_frequencies=[0.5, 0.5, 0.5]), x, y),
            ValueError,
            '3 entries',
            id='macl-width',
        ),
        pytest.param(
            call(JaccardSupConLoss(), x, y.float().numpy()),
            TypeError,
            'ndarray',
            id='jaccard-numpy',
        ),
    ]


def _metric_cases() -> list[Any]:
    q = torch.randn(3, 4)
    yq = torch.tensor([[1, 0], [0, 1], [1, 1]])

    def p_at(k: int, **kwargs: Any) -> Case:
        return lambda tmp: precision_at_k(q, yq, q, yq, k, **kwargs)

    def nan_embeddings(tmp: Path) -> object:
        bad = q.clone()
        bad[1, 1] = math.nan
        return mean_average_precision_at_k(bad, yq, q, yq, 2)

    def mismatched_dim(tmp: Path) -> object:
        return precision_at_k(q, yq, torch.randn(3, 5), yq, 1)

    def mismatched_labels(tmp: Path) -> object:
        return precision_at_k(q, yq, q, yq[:, :1], 1)

    def empty_metric(tmp: Path) -> object:
        return RetrievalMetrics(ks=(1,)).compute()

    return [
        pytest.param(p_at(0), ValueError, 'k', id='met-k-0'),
        pytest.param(p_at(10), ValueError, 'k=10 is larger', id='met-k-gt-db'),
        pytest.param(p_at(1, relevance='all'), ValueError, 'all', id='met-relevance'),
        pytest.param(p_at(1, reduction='sum'), ValueError, 'sum', id='met-reduction'),
        pytest.param(
            p_at(1, relevance='jaccard', jaccard_threshold=1.5),
            ValueError,
            '1.5',
            id='met-jaccard',
        ),
        pytest.param(nan_embeddings, ValueError, 'finite', id='met-nan'),
        pytest.param(mismatched_dim, ValueError, '5', id='met-dim'),
        pytest.param(mismatched_labels, ValueError, 'label', id='met-labels'),
        pytest.param(empty_metric, ValueError, 'without any', id='met-empty'),
        pytest.param(
            lambda tmp: RetrievalMetrics(ks=(0,)), ValueError, 'ks', id='met-ks-0'
        ),
    ]


def _search_cases() -> list[Any]:
    cases: list[Any] = []

    def case(
        fragment: str, case_id: str, error: type[Exception] = ValueError
    ) -> Callable[[Case], Case]:
        """Register the decorated call: it raises ``error`` naming ``fragment``."""

        def register(call: Case) -> Case:
            cases.append(pytest.param(call, error, fragment, id=case_id))
            return call

        return register

    def flat(tmp: Path) -> EmbeddingIndex:
        index = EmbeddingIndex(4)
        index.add(torch.eye(4), ['a', 'b', 'c', 'd'])
        return index

    @case('dim', 'idx-dim-0')
    def dim_0(tmp: Path) -> object:
        return EmbeddingIndex(0)

    @case('annoy', 'idx-kind')
    def unknown_kind(tmp: Path) -> object:
        return EmbeddingIndex(4, 'annoy')

    @case("'a'", 'idx-dup-ids')
    def dup_ids(tmp: Path) -> object:
        EmbeddingIndex(4).add(torch.eye(4), ['a', 'a', 'c', 'd'])
        return None

    @case('3', 'idx-wrong-dim')
    def wrong_dim(tmp: Path) -> object:
        EmbeddingIndex(4).add(torch.eye(3), ['a', 'b', 'c'])
        return None

    @case('finite', 'idx-nan')
    def nan_vectors(tmp: Path) -> object:
        vectors = torch.eye(4)
        vectors[0, 0] = math.nan
        EmbeddingIndex(4).add(vectors, ['a', 'b', 'c', 'd'])
        return None

    @case('k', 'idx-k-0')
    def search_k0(tmp: Path) -> object:
        return flat(tmp).search(torch.eye(4), 0)

    @case('k=6 is larger', 'idx-k-gt-n')
    def search_k6(tmp: Path) -> object:
        return flat(tmp).search(torch.eye(4), 6)

    @case('nothing', 'idx-missing', FileNotFoundError)
    def load_missing(tmp: Path) -> object:
        return EmbeddingIndex.load(tmp / 'nothing')

    @case('SHA-256', 'idx-reordered-ids')
    def reordered_ids(tmp: Path) -> object:
        prefix = tmp / 'idx'
        flat(tmp).save(prefix)
        meta = json.loads((tmp / 'idx.json').read_text())
        ids_file = tmp / meta['files']['ids']['name'] if 'files' in meta else None
        if ids_file is None or not ids_file.exists():
            ids_file = next(p for p in tmp.iterdir() if 'ids' in p.name)
        text = ids_file.read_text()
        ids_file.write_text(text.replace('"a"', '"X"').replace('"b"', '"a"'))
        ids_file.write_text(ids_file.read_text().replace('"X"', '"b"'))
        return EmbeddingIndex.load(prefix)

    @case('/', 'idx-slash-prefix')
    def slash_prefix(tmp: Path) -> object:
        flat(tmp).save(str(tmp) + '/')
        return None

    @case('uint16', 'img-geotiff-uint16')
    def read_uint16(tmp: Path) -> object:
        path = _write_geotiff(
            tmp / 'q16.tif', np.full((3, 8, 8), 4000, dtype=np.uint16)
        )
        return read_image(path, 3, eight_bit=True)

    @case('float32', 'img-geotiff-float32')
    def read_float32(tmp: Path) -> object:
        path = _write_geotiff(tmp / 'qf.tif', np.full((3, 8, 8), 0.5, dtype=np.float32))
        return read_image(path, 3, eight_bit=True)

    @case('q16.png', 'img-png-16bit')
    def read_png16(tmp: Path) -> object:
        path = tmp / 'q16.png'
        Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(path)
        return read_image(path, eight_bit=True)

    @case('4 bands', 'img-bands')
    def read_bands(tmp: Path) -> object:
        path = _write_geotiff(tmp / 'q4.tif', np.zeros((4, 8, 8), dtype=np.uint8))
        return read_image(path, 3)

    @case('bad.png', 'img-garbage')
    def read_garbage(tmp: Path) -> object:
        path = tmp / 'bad.png'
        path.write_bytes(b'not an image')
        return read_image(path)

    @case('none.tif', 'img-missing', FileNotFoundError)
    def read_missing(tmp: Path) -> object:
        return read_image(tmp / 'none.tif')

    return cases


def _task_cases() -> list[Any]:
    def task(**kwargs: Any) -> Case:
        return lambda tmp: RetrievalTask(
            **{'model': 'test_resnet', 'embed_dim': 8, 'proj_hidden_dim': 16, **kwargs}
        )

    return [
        pytest.param(task(loss='supcn'), ValueError, 'supcn', id='task-loss'),
        pytest.param(task(embed_dim=0), ValueError, 'embed_dim', id='task-embed-0'),
        pytest.param(task(image_size=0), ValueError, 'image_size', id='task-size-0'),
        pytest.param(
            task(model='no_such_net'), ValueError, 'no_such_net', id='task-model'
        ),
        pytest.param(
            task(loss_kwargs={'temperature': -1.0}),
            ValueError,
            'temperature',
            id='task-kw',
        ),
        pytest.param(
            task(weights='/no/such/weights.pth'),
            FileNotFoundError,
            'weights.pth',
            id='task-weights',
        ),
        pytest.param(task(lr=-1.0), ValueError, 'lr', id='task-lr'),
        pytest.param(task(ks=[0]), ValueError, 'ks', id='task-ks'),
        pytest.param(
            task(crop_scale=(0.8, 0.2)), ValueError, 'crop_scale', id='task-crop'
        ),
    ]


ERROR_CASES = [
    *_dataset_cases(),
    *_datamodule_cases(),
    *_sampler_cases(),
    *_loss_cases(),
    *_metric_cases(),
    *_search_cases(),
    *_task_cases(),
]


@pytest.mark.parametrize(('case', 'error', 'fragment'), ERROR_CASES)
def test_bad_input_raises(
    case: Case, error: type[BaseException], fragment: str, tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        case(tmp_path)
    assert type(info.value) is error, repr(info.value)
    assert fragment in str(info.value)


# ---------------------------------------------------------- defined-value cases


def _labels4() -> torch.Tensor:
    return torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])


def _grad_of(features: torch.Tensor, name: str = 'supcon') -> tuple[float, float]:
    x = features.clone().requires_grad_()
    kwargs = {'label_frequencies': [0.5, 0.5]} if name == 'macl' else {}
    loss = get_loss(name, **kwargs)(x, _labels4())
    loss.backward()
    assert x.grad is not None
    return float(loss), float(x.grad.abs().max())


@pytest.mark.parametrize('name', ['supcon', 'macl', 'mulsupcon', 'jaccard_supcon'])
@pytest.mark.parametrize('value', [1e-40, 0.0], ids=['subnormal', 'zero'])
def test_tiny_features_have_finite_loss_and_gradient(name: str, value: float) -> None:
    features = torch.full((4, 2, 8), value)
    loss, grad = _grad_of(features, name)
    assert math.isfinite(loss)
    assert grad == 0.0  # no direction: the vectors count as zero


def test_small_but_normal_features_keep_their_gradient() -> None:
    features = torch.randn(4, 2, 8)
    loss, _ = _grad_of(features)
    small_loss, small_grad = _grad_of(features * 1e-30)
    assert small_loss == pytest.approx(loss, rel=1e-5)
    assert math.isfinite(small_grad)
    assert small_grad > 0


@pytest.mark.parametrize(
    'make',
    [SupConLoss, NTXentLoss, lambda: MACLLoss(label_frequencies=[0.5, 0.5])],
    ids=['supcon', 'ntxent', 'macl'],
)
def test_batch_of_one_is_zero_and_warns_once(make: Callable[[], Any]) -> None:
    loss = make()
    x = torch.randn(1, 2, 8, requires_grad=True)
    y = torch.tensor([[1, 0]])
    with pytest.warns(UserWarning, match='a batch of 1 image'):
        value = loss(x, y)
    assert float(value) == 0.0
    value.backward()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert float(loss(x, y)) == 0.0


def test_batch_of_two_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        value = SupConLoss()(torch.randn(2, 2, 8), torch.tensor([[1, 0], [1, 0]]))
    assert float(value) > 0


def test_task_batch_of_one_warns() -> None:
    task = RetrievalTask(
        model='test_resnet', embed_dim=8, proj_hidden_dim=16, loss='supcon'
    )
    batch = {'image': torch.rand(1, 3, 32, 32) * 255, 'label': torch.tensor([[1, 0]])}
    with pytest.warns(UserWarning, match='a batch of 1 image'):
        loss = task.training_step(batch, 0)
    assert float(loss) == 0.0


def test_8bit_geotiff_query_is_read_in_0_255(tmp_path: Path) -> None:
    array = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    image = read_image(_write_geotiff(tmp_path / 'q.tif', array), 3)
    assert image.dtype == torch.float32
    assert float(image.max()) == 191.0


def test_masks_of_their_image_size_load_without_masks(tmp_path: Path) -> None:
    ds = DLRSD(_dlrsd(tmp_path), split_fractions=(0.5, 0.25, 0.25), load_masks=False)
    sample = ds[0]
    assert 'mask' not in sample
    assert sample['image'].shape == (3, 16, 16)


# ------------------------------------------------------------- command line


def _one_line(err: str, command: str) -> str:
    # progress bars share standard error: the report is the one other line
    lines = [
        line
        for line in err.strip().splitlines()
        if 'it/s]' not in line and 's/it]' not in line
    ]
    assert len(lines) == 1, err
    assert lines[0].startswith(f'torchgeo-macl {command}: error: '), err
    assert 'Traceback' not in err
    return lines[0]


@pytest.fixture(scope='module')
def checkpoint(
    tiny_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny untrained RetrievalTask checkpoint trained at 32 px."""
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.ckpt'
    return tiny_checkpoint(path, image_size=32)


@pytest.fixture(scope='module')
def folder_index(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the fake DLRSD images, built from the image folder."""
    out = tmp_path_factory.mktemp('index') / 'idx'
    images = DATA / 'dlrsd' / 'DLRSD' / 'Images'
    argv = ['index', '--ckpt', str(checkpoint), '--data', str(images)]
    assert main([*argv, '--out', str(out)]) == 0
    return out


def _cli_cases() -> list[Any]:
    def index(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
        return lambda tmp, ckpt, idx: ['index', '--ckpt', str(ckpt), *extra]

    def search(*queries: str, **kwargs: str) -> Callable[[Path, Path, Path], list[str]]:
        def argv(tmp: Path, ckpt: Path, idx: Path) -> list[str]:
            options = [f'-{k}={v}' for k, v in kwargs.items()]
            files = [q.replace('TMP', str(tmp)) for q in queries]
            return [
                'search',
                '--index',
                str(idx),
                '--ckpt',
                str(ckpt),
                *options,
                *files,
            ]

        return argv

    def images(tmp: Path, ckpt: Path, idx: Path) -> list[str]:
        folder = tmp / 'imgs'
        folder.mkdir()
        _write_geotiff(folder / 'a.tif', np.zeros((3, 32, 32), dtype=np.uint16))
        return [
            'index',
            '--ckpt',
            str(ckpt),
            '--data',
            str(folder),
            '--out',
            str(tmp / 'o'),
        ]

    def other(argv: list[str]) -> Callable[[Path, Path, Path], list[str]]:
        return lambda tmp, ckpt, idx: [a.replace('TMP', str(tmp)) for a in argv]

    return [
        pytest.param(
            other(['index', '--ckpt', 'TMP/none.ckpt', '--data', 'x', '--out', 'y']),
            1,
            'none.ckpt',
            id='cli-index-no-ckpt',
        ),
        pytest.param(
            index('--data', 'TMP/nowhere.yaml', '--out', 'TMP/o'),
            1,
            'nowhere.yaml',
            id='cli-index-no-data',
        ),
        pytest.param(
            index('--data', 'x', '--out', 'y', '--batch-size', '0'),
            2,
            'got 0',
            id='cli-index-batch-0',
        ),
        pytest.param(
            index('--data', 'x', '--out', 'y', '--kind', 'annoy'),
            2,
            'annoy',
            id='cli-index-kind',
        ),
        pytest.param(images, 1, 'uint16', id='cli-index-uint16'),
        pytest.param(search('TMP/none.tif'), 1, 'none.tif', id='cli-search-nofile'),
        pytest.param(search('TMP/q16.tif'), 1, 'uint16', id='cli-search-uint16'),
        pytest.param(search('TMP/qf.tif'), 1, 'float32', id='cli-search-float32'),
        pytest.param(search('TMP/q4.tif'), 1, '4 bands', id='cli-search-bands'),
        pytest.param(search('TMP/bad.png'), 1, 'bad.png', id='cli-search-garbage'),
        pytest.param(search('a', k='0'), 2, 'got 0', id='cli-search-k-0'),
        pytest.param(
            other(['search', '--index', 'TMP/none', '--ckpt', 'TMP/c.ckpt', 'q']),
            1,
            'c.ckpt',
            id='cli-search-no-index',
        ),
        pytest.param(
            other(['demo', '--out', 'TMP/d', '--num-images', '5']),
            1,
            '5',
            id='cli-demo-too-few',
        ),
        pytest.param(
            other(['demo', '--out', 'TMP/user']),
            1,
            'user holds files',
            id='cli-demo-user',
        ),
        pytest.param(
            other(['demo', '--out', 'TMP/file.txt']), 1, 'file.txt', id='cli-demo-file'
        ),
        pytest.param(
            other(['demo', '--out', 'TMP/d', '--epochs', '-1']),
            2,
            'got -1',
            id='cli-demo-epochs',
        ),
    ]


@pytest.mark.parametrize(('argv', 'code', 'fragment'), _cli_cases())
def test_cli_user_error(
    argv: Callable[[Path, Path, Path], list[str]],
    code: int,
    fragment: str,
    checkpoint: Path,
    folder_index: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv('TORCHGEO_MACL_DEBUG', raising=False)
    _write_geotiff(tmp_path / 'q16.tif', np.zeros((3, 32, 32), dtype=np.uint16))
    _write_geotiff(tmp_path / 'qf.tif', np.zeros((3, 32, 32), dtype=np.float32))
    _write_geotiff(tmp_path / 'q4.tif', np.zeros((4, 32, 32), dtype=np.uint8))
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    (tmp_path / 'user').mkdir()
    (tmp_path / 'user' / 'notes.txt').write_text('mine')
    (tmp_path / 'file.txt').write_text('mine')
    args = argv(tmp_path, checkpoint, folder_index)
    capsys.readouterr()
    if code == 2:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
    else:
        assert main(args) == code
    assert fragment in _one_line(capsys.readouterr().err, args[0])
    assert (tmp_path / 'user' / 'notes.txt').read_text() == 'mine'
    assert (tmp_path / 'file.txt').read_text() == 'mine'


@pytest.mark.usefixtures('script_argv')
@pytest.mark.parametrize(
    ('option', 'fragment'),
    [
        ('--model.init_args.lr=-1', 'lr must be finite and > 0'),
        ('--model.init_args.embed_dim=0', 'embed_dim must be >= 1'),
        ('--model.init_args.loss=supcn', 'supcn'),
        ('--data.init_args.batch_size=0', 'batch_size must be positive'),
        ('--data.init_args.num_workers=-2', 'num_workers must be >= 0'),
    ],
)
def test_fit_user_error_is_one_line(
    option: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ['fit', '--config', str(Path(__file__).parent / 'conf' / 'dlrsd.yaml')]
    code = main([*argv, option, '--trainer.max_epochs=1'])
    assert code in (1, 2)
    assert fragment in _one_line(capsys.readouterr().err, 'fit')


@pytest.fixture
def script_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI reads ``sys.argv``: leave only the console script's name there."""
    import sys

    monkeypatch.setattr(sys, 'argv', ['torchgeo-macl'])
