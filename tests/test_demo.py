import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
import timm

from torchgeo_macl.datasets import DLRSD
from torchgeo_macl.demo import TABLE_METRICS
from torchgeo_macl.main import main
from torchgeo_macl.search import (
    EmbeddingIndex,
    load_archive_info,
    load_task,
    model_fingerprint,
)

pytestmark = [
    pytest.mark.filterwarnings(
        'ignore::rasterio.errors.NotGeoreferencedWarning',
        'ignore:.*exceed the .* items each query can retrieve.*:UserWarning',
    ),
    pytest.mark.usefixtures('one_thread'),
]

#: Metrics of the report's table that are fractions.
UNIT_METRICS = ('mAP', 'P', 'NDCG', 'rare_mAP', 'mAP_jaccard', 'NDCG_jaccard')
#: Metrics of the report's table that are non-negative gains.
GAIN_METRICS = ('WAP', 'ACG')
DEMO_KS = (10, 20, 50, 100)
LOSSES = ('macl', 'supcon')
FIGURES = ('retrieval_grid.png', 'per_label_ap.png', 'training_curves.png')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

_create_model = timm.create_model


def _tiny_timm(name: str, *args: Any, **kwargs: Any) -> Any:
    """Create timm's tiny test ResNet whatever model name the demo asks for."""
    kwargs['pretrained'] = False
    return _create_model('test_resnet', *args, **kwargs)


@pytest.fixture(autouse=True)
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr('torchgeo_macl.tasks.retrieval.timm.create_model', _tiny_timm)


def _demo_args(out: Path, num_images: int) -> list[str]:
    # images of 40 px, trained and indexed at the default --train-size of 32 px
    return [
        'demo',
        '--out',
        str(out),
        '--num-images',
        str(num_images),
        '--image-size',
        '40',
        '--epochs',
        '1',
        '--batch-size',
        '16',
        '--no-progress',
    ]


def _table(report: str) -> dict[str, list[float]]:
    """Rows of the metrics table: metric@k -> one value per loss."""
    rows = {}
    for line in report.splitlines():
        match = re.fullmatch(r'\| (\w+@\d+) \|(.*)\|', line)
        if match:
            cells = [c.strip().strip('*') for c in match[2].split('|')]
            rows[match[1]] = [float(c) for c in cells]
    return rows


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'demo'
    # 240 images: a validation split of more than 20 images (model selection by
    # val mAP@20) and a database of more than 100 (every cut-off of the table)
    assert main(_demo_args(out, 240)) == 0
    stdout = capsys.readouterr().out
    assert f'[demo] report: {out / "report.md"}' in stdout
    for loss in LOSSES:
        assert re.search(rf'\[demo\] {loss}: mAP@20 = \d\.\d{{4}}', stdout)

    data = out / 'data'
    database = sum(
        len(DLRSD(root=str(data), split=s, split_seed=0)) for s in ('train', 'val')
    )
    ks = [k for k in DEMO_KS if k <= database]
    assert ks == list(DEMO_KS)

    # report: every metric of the table at every cut-off, and the figures
    report = (out / 'report.md').read_text()
    assert report.startswith('# torchgeo-macl demo\n')
    assert '| metric | MACL | SUPCON |' in report
    table = _table(report)
    # the table has every fraction and every gain, none missing
    assert sorted(TABLE_METRICS) == sorted(UNIT_METRICS + GAIN_METRICS)
    expected = [f'{name}@{k}' for name in TABLE_METRICS for k in ks]
    assert list(table) == expected
    for figure in FIGURES:
        assert f']({figure})' in report

    # metrics.json: both losses, finite values, fractions in [0, 1]; the table
    # shows the same numbers
    metrics = json.loads((out / 'metrics.json').read_text())
    assert sorted(metrics) == sorted(LOSSES)
    for i, loss in enumerate(LOSSES):
        values = metrics[loss]
        for key in expected:
            assert math.isfinite(values[key]), (loss, key)
            assert values[key] >= 0, (loss, key)
            assert table[key][i] == pytest.approx(values[key], abs=5e-5)
        for name in UNIT_METRICS:
            for k in ks:
                assert 0 <= values[f'{name}@{k}'] <= 1, (loss, name, k)
        assert all(math.isfinite(v) for v in values.values())

    # figures are valid PNGs
    for figure in FIGURES:
        path = out / figure
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        pixels = plt.imread(path)
        assert pixels.ndim == 3
        assert pixels.shape[0] > 50
        assert pixels.shape[1] > 50
        assert pixels.std() > 0
    assert not list(out.glob('*.tmp'))
    assert not list(out.glob('*.png.*'))

    # the faiss index of the first loss and its archive sidecar
    prefix = out / 'index' / 'macl'
    for suffix in ('.json', '.archive.json'):
        assert Path(f'{prefix}{suffix}').is_file()
    assert len(list(prefix.parent.glob(f'{prefix.name}.*.faiss'))) == 1
    index = EmbeddingIndex.load(prefix)
    assert len(index) == database
    assert index.kind == 'flat'
    info = load_archive_info(prefix)
    checkpoint = out / 'runs' / 'macl' / 'final.ckpt'
    assert Path(info.checkpoint) == checkpoint
    fingerprint = model_fingerprint(load_task(checkpoint))
    assert index.model_id == info.model_id == fingerprint
    assert info.classes == list(DLRSD.classes)
    assert sorted(info.sources) == sorted(index.ids)
    assert all(Path(p).is_file() for p in info.sources.values())
    for loss in LOSSES:
        assert (out / 'runs' / loss / 'final.ckpt').is_file()
        assert (out / 'runs' / loss / 'metrics.csv').is_file()
    assert model_fingerprint(load_task(out / 'runs' / 'supcon' / 'final.ckpt')) != (
        fingerprint
    )

    # the demo's index answers the search command with its own checkpoint; an
    # archive image given as a file comes back first, embedded as when indexing
    query = min(info.sources.values())
    query_id = next(i for i, p in info.sources.items() if p == query)
    args = ['search', '--index', str(prefix), '--ckpt', str(checkpoint), query]
    assert main([*args, '-k', '3']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'query: {query}'
    top = lines[2].split()
    assert top[0] == '1'
    assert float(top[1]) == pytest.approx(1.0, abs=1e-3)
    assert top[2] == query_id


def test_demo_too_small_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'demo'
    assert main(_demo_args(out, 80)) == 1
    err = capsys.readouterr().err
    assert err.startswith('torchgeo-macl demo: error: num_images=80 is too small')
    assert 'mAP@20' in err
    assert not (out / 'runs').exists()
    assert not (out / 'report.md').exists()


def test_demo_refuses_a_folder_of_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'report.md').write_text('my own report')
    assert main(_demo_args(out, 240)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'torchgeo-macl demo: error: {out} holds files the demo')
    assert (out / 'report.md').read_text() == 'my own report'
    assert sorted(p.name for p in out.iterdir()) == ['report.md']


def test_demo_output_is_reused_when_it_matches(tmp_path: Path) -> None:
    from torchgeo_macl.demo import DEMO_MARKER, DemoConfig, prepare_output

    cfg = DemoConfig(out=tmp_path / 'demo', num_images=30, image_size=16)
    data = prepare_output(cfg)
    image = next((data / 'DLRSD' / 'Images').rglob('*.tif'))
    written = image.stat().st_mtime_ns
    assert json.loads((cfg.out / DEMO_MARKER).read_text())['archive'] == {
        'num_images': 30,
        'image_size': 16,
        'seed': 0,
    }
    # a rerun with the same settings keeps the archive
    assert prepare_output(cfg) == data
    assert image.stat().st_mtime_ns == written
    # other settings write it again
    other = DemoConfig(out=cfg.out, num_images=30, image_size=16, seed=1)
    prepare_output(other)
    assert json.loads((cfg.out / DEMO_MARKER).read_text())['archive']['seed'] == 1
    assert len(list((data / 'DLRSD' / 'Images').rglob('*.tif'))) == 30
