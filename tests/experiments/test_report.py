import csv
import io
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

METRICS = ('mAP', 'NDCG', 'WAP', 'ACG', 'P', 'rare_mAP', 'mAP_jaccard')


def _metrics(
    map20: float, rare: float, acg: float, base: float = 0.5
) -> dict[str, float]:
    values = {f'{m}@20': base for m in METRICS}
    values.update({'mAP@20': map20, 'rare_mAP@20': rare, 'ACG@20': acg, 'mAP@10': 0.9})
    return values


def _write(root: Path, dataset: str, method: str, seed: int, **extra: Any) -> None:
    loss, _, ablation = method.partition('+')
    record = {
        'dataset': dataset,
        'loss': loss,
        'ablation': ablation or 'full',
        'method': method,
        'seed': seed,
        'command': f'python experiments/run.py --datasets {dataset}',
        'date': f'2025-01-0{seed + 1}T10:00:00+00:00',
        'versions': {'torch': '2.0', 'torchgeo': '0.8.1', 'torchgeo-macl': '0.1.0'},
        'device': 'x86_64 CPU, 2 cores',
        'wall_time_s': 60.0,
    }
    record.update(extra)
    path = root / 'runs' / dataset / method / f'seed{seed}' / 'metrics.json'
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / 'results'
    names = ['airplane', 'sea', 'trees']
    freqs = [0.05, 0.2, 0.6]
    for seed, (m, r, a) in enumerate(
        [(0.60, 0.30, 1.5), (0.62, 0.32, 1.7), (0.64, 0.34, 1.9)]
    ):
        _write(
            root,
            'synthetic',
            'macl',
            seed,
            metrics=_metrics(m, r, a),
            label_names=names,
            label_frequencies=freqs,
            **{'per_label_AP@20': [0.1 * (seed + 1), None, 0.5]},
        )
    for seed, (m, r, a) in enumerate(
        [(0.50, 0.40, 1.0), (0.55, 0.40, 1.0), (0.60, 0.40, 1.0)]
    ):
        _write(
            root,
            'synthetic',
            'supcon',
            seed,
            metrics=_metrics(m, r, a),
            label_names=names,
            label_frequencies=freqs,
            **{'per_label_AP@20': [0.2, 0.3, 0.4]},
        )
    for seed, m in enumerate([0.58, 0.60]):
        _write(
            root,
            'synthetic',
            'macl+no_pair_reweighting',
            seed,
            metrics=_metrics(m, 0.2, 1.0),
        )
    _write(root, 'dlrsd', 'supcon', 0, metrics={'mAP@20': 0.71234})
    return root


def test_summaries(report_script: ModuleType, results: Path) -> None:
    records = report_script.load_results(results)
    assert [(r['dataset'], r['method'], r['seed']) for r in records] == [
        ('dlrsd', 'supcon', 0),
        ('synthetic', 'macl', 0),
        ('synthetic', 'macl', 1),
        ('synthetic', 'macl', 2),
        ('synthetic', 'macl+no_pair_reweighting', 0),
        ('synthetic', 'macl+no_pair_reweighting', 1),
        ('synthetic', 'supcon', 0),
        ('synthetic', 'supcon', 1),
        ('synthetic', 'supcon', 2),
    ]
    summaries = report_script.summarise(records)
    assert [(s.dataset, s.method) for s in summaries] == [
        ('dlrsd', 'supcon'),
        ('synthetic', 'macl'),
        ('synthetic', 'macl+no_pair_reweighting'),
        ('synthetic', 'supcon'),
    ]
    macl = summaries[1]
    assert macl.seeds == (0, 1, 2)
    assert macl.mean['mAP@20'] == pytest.approx(0.62)
    assert macl.std['mAP@20'] == pytest.approx(0.02)  # sample standard deviation
    assert math.isnan(summaries[0].std['mAP@20'])


def test_format_value(report_script: ModuleType) -> None:
    assert report_script.format_value('mAP@20', 0.62, 0.02) == '62.00 ± 2.00'
    assert report_script.format_value('ACG@20', 1.7, 0.2) == '1.70 ± 0.20'
    assert report_script.format_value('WAP@20', 1.953, 0.0) == '1.95 ± 0.00'
    assert report_script.format_value('WAP_jaccard@5', 0.5, 0.1) == '0.50 ± 0.10'
    assert report_script.format_value('mAP_jaccard@5', 0.5, 0.1) == '50.00 ± 10.00'
    assert report_script.format_value('mAP@20', 0.71234, math.nan) == '71.23'
    assert report_script.format_value('mAP@20', math.nan, math.nan) == '-'
    assert (
        report_script.format_value('P@10', 0.123456, 0.001, decimals=1) == '12.3 ± 0.1'
    )


def test_markdown_and_csv_tables(
    report_script: ModuleType, results: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'out'
    written = report_script.write_report(results, out, name='bench', plots=False)
    assert [p.name for p in written] == ['bench.md', 'bench.csv']
    md = (out / 'bench.md').read_text()
    header = '| Method | Seeds | mAP@20 | NDCG@20 | WAP@20 | ACG@20 | P@20 | rare_mAP@20 | mAP_jaccard@20 |'
    assert md.count(header) == 3
    # methods table: best mean of each column in bold (ties are all bold)
    assert (
        '| macl | 3 | **62.00 ± 2.00** | **50.00 ± 0.00** | **0.50 ± 0.00** | '
        '**1.70 ± 0.20** | **50.00 ± 0.00** | 32.00 ± 2.00 | **50.00 ± 0.00** |'
    ) in md
    assert (
        '| supcon | 3 | 55.00 ± 5.00 | **50.00 ± 0.00** | **0.50 ± 0.00** | '
        '1.00 ± 0.00 | **50.00 ± 0.00** | **40.00 ± 0.00** | **50.00 ± 0.00** |'
    ) in md
    # ablation table: the full MACL and its ablation
    assert '### Ablation of macl' in md
    assert '| macl (full) | 3 | **62.00 ± 2.00** |' in md
    assert '| macl+no_pair_reweighting | 2 | 59.00 ± 1.41 |' in md
    # a single seed shows the mean only; metrics a run lacks show '-'
    assert '| supcon | 1 | **71.23** | - | - | - | - | - | - |' in md
    assert md.index('## dlrsd') < md.index('## synthetic')
    assert '- command: `python experiments/run.py --datasets synthetic`' in md
    assert '- dates (UTC): 2025-01-01T10:00:00+00:00 to 2025-01-03T10:00:00+00:00' in md

    rows = list(csv.DictReader(io.StringIO((out / 'bench.csv').read_text())))
    assert [(r['dataset'], r['table'], r['method']) for r in rows] == [
        ('dlrsd', 'methods', 'supcon'),
        ('synthetic', 'methods', 'macl'),
        ('synthetic', 'methods', 'supcon'),
        ('synthetic', 'macl ablation', 'macl'),
        ('synthetic', 'macl ablation', 'macl+no_pair_reweighting'),
    ]
    macl = rows[1]
    assert macl['seeds'] == '0 1 2'
    assert macl['mAP@20 mean'] == '0.620000'
    assert macl['mAP@20 std'] == '0.020000'
    assert macl['mAP@20 best'] == '1'
    assert macl['rare_mAP@20 best'] == '0'
    assert rows[2]['rare_mAP@20 best'] == '1'
    assert rows[0]['mAP@20 std'] == ''
    assert rows[0]['NDCG@20 mean'] == ''


def test_other_cutoff_and_columns(
    report_script: ModuleType, results: Path, tmp_path: Path
) -> None:
    report_script.write_report(
        results, tmp_path, name='k10', k=10, metrics=['mAP'], plots=False
    )
    md = (tmp_path / 'k10.md').read_text()
    assert '| Method | Seeds | mAP@10 |' in md
    assert '| macl | 3 | **90.00 ± 0.00** |' in md


def test_plots_and_determinism(
    report_script: ModuleType, results: Path, tmp_path: Path
) -> None:
    first = report_script.write_report(results, tmp_path / 'a', name='r')
    second = report_script.write_report(results, tmp_path / 'b', name='r')
    names = sorted(p.name for p in first)
    assert names == [
        'r.csv',
        'r.md',
        'r_dlrsd_mAP20.png',
        'r_synthetic_mAP20.png',
        'r_synthetic_macl_ablation_mAP20.png',
        'r_synthetic_per_label_AP20.png',
    ]
    for a, b in zip(sorted(first), sorted(second), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        if a.suffix == '.png':
            assert a.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    md = (tmp_path / 'a' / 'r.md').read_text()
    assert '![r_synthetic_per_label_AP20.png](r_synthetic_per_label_AP20.png)' in md


def test_per_label_values(report_script: ModuleType, results: Path) -> None:
    records = [
        r
        for r in report_script.load_results(results)
        if r['dataset'] == 'synthetic' and '+' not in r['method']
    ]
    names, freqs, values = report_script.per_label_values(records, 20)
    assert names == ['airplane', 'sea', 'trees']
    assert freqs == pytest.approx([0.05, 0.2, 0.6])
    assert values['macl'][0] == pytest.approx(0.2)
    assert math.isnan(values['macl'][1])  # no query carried the label
    assert values['supcon'] == pytest.approx([0.2, 0.3, 0.4])
    assert report_script.per_label_values(records, 50) is None


def test_bad_inputs(
    report_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_script.main(['--results', str(tmp_path / 'none')]) == 1
    assert 'does not exist' in capsys.readouterr().err
    assert report_script.main(['--results', str(tmp_path)]) == 1
    assert 'no metrics.json' in capsys.readouterr().err

    bad = tmp_path / 'x' / 'metrics.json'
    bad.parent.mkdir()
    bad.write_text('{not json')
    with pytest.raises(ValueError, match=r'cannot read .*x/metrics\.json'):
        report_script.load_results(tmp_path)
    bad.write_text(json.dumps({'dataset': 'd', 'seed': 0, 'loss': 'macl'}))
    with pytest.raises(ValueError, match='lacks metrics'):
        report_script.load_results(tmp_path)
    bad.write_text(
        json.dumps({'dataset': 'd', 'seed': 0, 'method': 'm', 'metrics': {}})
    )
    twin = tmp_path / 'y' / 'metrics.json'
    twin.parent.mkdir()
    twin.write_text(bad.read_text())
    with pytest.raises(ValueError, match='both hold d/m seed 0'):
        report_script.load_results(tmp_path)


def test_main_writes_files(
    report_script: ModuleType,
    results: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = report_script.main(
        ['--results', str(results), '--out', str(tmp_path), '--name', 'x', '--no-plots']
    )
    assert code == 0
    assert (tmp_path / 'x.md').is_file()
    assert (tmp_path / 'x.csv').is_file()
    assert capsys.readouterr().out.split() == [
        str(tmp_path / 'x.md'),
        str(tmp_path / 'x.csv'),
    ]
