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
    # (mAP@20, rare_mAP@20, ACG@20) of seeds 0, 1, 2
    seeds = {
        'macl': [(0.60, 0.30, 1.5), (0.62, 0.32, 1.7), (0.64, 0.34, 1.9)],
        'supcon': [(0.50, 0.40, 1.0), (0.55, 0.40, 1.0), (0.60, 0.40, 1.0)],
    }
    for method, values in seeds.items():
        for seed, (m, r, a) in enumerate(values):
            per_label = (
                [0.1 * (seed + 1), None, 0.5] if method == 'macl' else [0.2, 0.3, 0.4]
            )
            _write(
                root,
                'synthetic',
                method,
                seed,
                metrics=_metrics(m, r, a),
                label_names=names,
                label_frequencies=freqs,
                **{'per_label_AP@20': per_label},
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
    assert [p.name for p in written] == ['bench.md', 'bench.csv', 'bench_paired.csv']
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
    # runs without a recorded query split query the test split
    assert '- queries: test split; database: train + val split' in md
    record = {'config': {'data': {'init_args': {'query_split': 'val'}}}}
    assert (
        report_script._protocol(record) == 'queries: val split; database: train split'
    )

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
        'r_paired.csv',
        'r_synthetic_mAP20.png',
        'r_synthetic_macl_ablation_mAP20.png',
        'r_synthetic_per_label_AP20.png',
        'r_synthetic_rarest8_AP20.png',
    ]
    for a, b in zip(sorted(first), sorted(second), strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        if a.suffix == '.png':
            assert a.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    md = (tmp_path / 'a' / 'r.md').read_text()
    assert '![r_synthetic_per_label_AP20.png](r_synthetic_per_label_AP20.png)' in md
    assert '![r_synthetic_rarest8_AP20.png](r_synthetic_rarest8_AP20.png)' in md


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


def test_per_label_stats(report_script: ModuleType, results: Path) -> None:
    records = [
        r
        for r in report_script.load_results(results)
        if r['dataset'] == 'synthetic' and '+' not in r['method']
    ]
    names, freqs, means, stds = report_script.per_label_stats(records, 20)
    assert (names, freqs, means) == report_script.per_label_values(records, 20)
    assert stds['macl'][0] == pytest.approx(0.1)  # 0.1, 0.2, 0.3 over the seeds
    assert math.isnan(stds['macl'][1])
    assert stds['macl'][2] == pytest.approx(0.0)
    assert stds['supcon'] == pytest.approx([0.0, 0.0, 0.0])
    assert report_script.per_label_stats(records, 50) is None


def test_rarest_labels(report_script: ModuleType) -> None:
    nan = math.nan
    freqs = [0.05, 0.2, 0.6, 0.01, nan, 0.05]
    values = {'a': [nan, 0.3, 0.4, nan, 0.5, 0.1], 'b': [0.1, nan, 0.2, nan, 0.5, nan]}
    # label 3 has no AP and label 4 no frequency; ties keep the label order
    assert report_script.rarest_labels(freqs, values, 3) == [0, 5, 1]
    assert report_script.rarest_labels(freqs, values, 10) == [0, 5, 1, 2]
    assert report_script.rarest_labels(freqs, values, 0) == []
    assert report_script.rarest_labels([nan] * 6, values, 3) == []


def test_rarest_plot(
    report_script: ModuleType,
    results: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks: dict[str, list[str]] = {}
    save = report_script._save

    def record_ticks(fig: Any, path: Path) -> None:
        ticks[path.name] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        save(fig, path)

    monkeypatch.setattr(report_script, '_save', record_ticks)
    written = report_script.write_report(results, tmp_path, name='r', rarest=2)
    path = tmp_path / 'r_synthetic_rarest2_AP20.png'
    assert path in written
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # rarest first; 'sea' has an AP for supcon only, which is enough
    assert ticks[path.name] == ['airplane (5%)', 'sea (20%)']
    # the plot of every label is unchanged: most frequent first
    assert ticks['r_synthetic_per_label_AP20.png'] == [
        'trees (60%)',
        'sea (20%)',
        'airplane (5%)',
    ]
    md = (tmp_path / 'r.md').read_text()
    assert '![r_synthetic_rarest2_AP20.png](r_synthetic_rarest2_AP20.png)' in md

    report_script.write_report(results, tmp_path / 'none', name='r', rarest=0)
    assert not list((tmp_path / 'none').glob('*rarest*'))


@pytest.fixture
def paired_results(tmp_path: Path) -> Path:
    """MACL against three baselines with different seeds.

    macl and supcon ran seeds 0-2, jaccard_supcon seeds 1-3 and bce seed 2 only;
    supcon seed 0 lacks P@20.
    """
    root = tmp_path / 'paired'
    runs: dict[str, dict[int, tuple[float, float, float | None]]] = {
        'macl': {0: (0.60, 1.5, 0.4), 1: (0.62, 1.7, 0.4), 2: (0.64, 1.9, 0.4)},
        'supcon': {0: (0.50, 1.0, None), 1: (0.55, 1.0, 0.3), 2: (0.60, 1.0, 0.2)},
        'jaccard_supcon': {
            1: (0.58, 2.0, 0.5),
            2: (0.60, 2.0, 0.5),
            3: (0.90, 0.5, 0.5),
        },
        'bce': {2: (0.30, 2.5, 0.45)},
        # neither an ablation of MACL nor one of a baseline is a baseline
        'macl+no_pair_reweighting': {0: (0.99, 9.0, 0.9)},
        'jaccard_supcon+no_graded_overlap': {0: (0.99, 9.0, 0.9)},
    }
    for method, seeds in runs.items():
        for seed, (map20, acg, p20) in seeds.items():
            metrics: dict[str, float] = {'mAP@20': map20, 'ACG@20': acg}
            if p20 is not None:
                metrics['P@20'] = p20
            _write(root, 'synthetic', method, seed, metrics=metrics)
    _write(root, 'alone', 'macl', 0, metrics={'mAP@20': 0.5})
    return root


def test_paired_differences(report_script: ModuleType, paired_results: Path) -> None:
    records = report_script.load_results(paired_results)
    rows = report_script.paired_differences(
        records, 'macl', report_script.BASELINES, ['mAP', 'ACG', 'P'], 20
    )
    assert all(r.dataset == 'synthetic' and r.method == 'macl' for r in rows)
    got = {(r.baseline, r.metric): r for r in rows}
    assert list(got) == [
        (b, m)
        for b in ('supcon', 'jaccard_supcon', 'bce')
        for m in ('mAP@20', 'ACG@20', 'P@20')
    ]
    expected = {
        # macl - supcon on seeds 0, 1, 2: 0.10, 0.07, 0.04
        ('supcon', 'mAP@20'): ((0, 1, 2), 0.07, 0.03),
        ('supcon', 'ACG@20'): ((0, 1, 2), 0.7, 0.2),
        # supcon seed 0 lacks P@20: 0.10, 0.20 on seeds 1, 2
        ('supcon', 'P@20'): ((1, 2), 0.15, math.sqrt(0.005)),
        # only seeds 1 and 2 are shared with jaccard_supcon
        ('jaccard_supcon', 'mAP@20'): ((1, 2), 0.04, 0.0),
        ('jaccard_supcon', 'ACG@20'): ((1, 2), -0.2, math.sqrt(0.02)),
        ('jaccard_supcon', 'P@20'): ((1, 2), -0.1, 0.0),
        # a single shared seed: no standard deviation
        ('bce', 'mAP@20'): ((2,), 0.34, math.nan),
        ('bce', 'ACG@20'): ((2,), -0.6, math.nan),
        ('bce', 'P@20'): ((2,), -0.05, math.nan),
    }
    for key, (seeds, mean, std) in expected.items():
        row = got[key]
        assert row.seeds == seeds, key
        assert row.n == len(seeds), key
        assert row.mean == pytest.approx(mean), key
        if math.isnan(std):
            assert math.isnan(row.std), key
        else:
            assert row.std == pytest.approx(std, abs=1e-12), key
    assert got[('supcon', 'P@20')].shared_seeds == (0, 1, 2)
    assert got[('jaccard_supcon', 'mAP@20')].shared_seeds == (1, 2)
    # best baseline: highest mean over its own seeds (jaccard_supcon's mAP@20 is
    # 0.693 thanks to seed 3, which is not paired), not the best paired difference
    best = {r.metric: r.baseline for r in rows if r.best}
    assert best == {
        'mAP@20': 'jaccard_supcon',
        'ACG@20': 'bce',
        'P@20': 'jaccard_supcon',
    }

    # another compared method, other baselines; no baseline at all: no rows
    rows = report_script.paired_differences(
        records, 'supcon', ['supcon', 'bce'], ['mAP'], 20
    )
    assert [(r.baseline, r.seeds, r.best) for r in rows] == [('bce', (2,), True)]
    assert rows[0].mean == pytest.approx(0.30)
    assert (
        report_script.paired_differences(records, 'macl', ['ntxent'], ['mAP'], 20) == []
    )
    assert (
        report_script.paired_differences(records, 'ntxent', ['supcon'], ['mAP'], 20)
        == []
    )


def test_paired_markdown_and_csv(
    report_script: ModuleType, paired_results: Path, tmp_path: Path
) -> None:
    written = report_script.write_report(
        paired_results, tmp_path, name='p', metrics=['mAP', 'ACG', 'P'], plots=False
    )
    assert [p.name for p in written] == ['p.md', 'p.csv', 'p_paired.csv']
    md = (tmp_path / 'p.md').read_text()
    heading = '### Paired difference of macl to the baselines (same seeds)'
    assert md.count(heading) == 1
    assert md.index('## synthetic') < md.index(heading)
    table = md[md.index(heading) :].split('\n\n')[2]
    assert table.splitlines() == [
        '| Baseline | Seeds | mAP@20 | ACG@20 | P@20 |',
        '|:--|--:|--:|--:|--:|',
        '| supcon | 3 | +7.00 ± 3.00 | +0.70 ± 0.20 | +15.00 ± 7.07 (n=2) |',
        '| jaccard_supcon | 2 | +4.00 ± 0.00 | -0.20 ± 0.14 | -10.00 ± 0.00 |',
        '| bce | 1 | +34.00 | -0.60 | -5.00 |',
        (
            '| best baseline | 1 to 2 | +4.00 ± 0.00 (jaccard_supcon, n=2) | '
            '-0.60 (bce, n=1) | -10.00 ± 0.00 (jaccard_supcon, n=2) |'
        ),
    ]

    rows = list(csv.DictReader(io.StringIO((tmp_path / 'p_paired.csv').read_text())))
    assert list(rows[0]) == [
        'dataset',
        'method',
        'baseline',
        'metric',
        'n',
        'mean',
        'std',
        'best',
    ]
    assert len(rows) == 9
    assert rows[0] == {
        'dataset': 'synthetic',
        'method': 'macl',
        'baseline': 'supcon',
        'metric': 'mAP@20',
        'n': '3',
        'mean': '0.070000',
        'std': '0.030000',
        'best': '0',
    }
    by = {(r['baseline'], r['metric']): r for r in rows}
    assert by[('jaccard_supcon', 'mAP@20')]['n'] == '2'
    assert by[('jaccard_supcon', 'mAP@20')]['best'] == '1'
    assert by[('bce', 'ACG@20')]['mean'] == '-0.600000'
    assert by[('bce', 'ACG@20')]['std'] == ''
    assert by[('bce', 'ACG@20')]['best'] == '1'


def test_paired_section_placement_and_absence(
    report_script: ModuleType, results: Path, paired_results: Path, tmp_path: Path
) -> None:
    # all baselines on the same seeds: one seed count, the best baseline named
    report_script.write_report(results, tmp_path / 'a', name='r', plots=False)
    md = (tmp_path / 'a' / 'r.md').read_text()
    assert md.count('### Paired difference of macl') == 1
    assert (
        '| supcon | 3 | +7.00 ± 3.00 | +0.00 ± 0.00 | +0.00 ± 0.00 | +0.70 ± 0.20 | '
        '+0.00 ± 0.00 | -8.00 ± 2.00 | +0.00 ± 0.00 |'
    ) in md
    assert '| best baseline | 3 | +7.00 ± 3.00 (supcon) |' in md
    # dlrsd (no macl) comes first and has no section
    assert md.index('### Paired difference') > md.index('## synthetic')

    # no baseline: no section and no CSV
    report_script.write_report(
        results, tmp_path / 'b', name='r', plots=False, baselines=['ntxent']
    )
    assert 'Paired difference' not in (tmp_path / 'b' / 'r.md').read_text()
    assert not (tmp_path / 'b' / 'r_paired.csv').exists()

    # another compared method through the command line
    code = report_script.main(
        [
            '--results',
            str(paired_results),
            '--out',
            str(tmp_path / 'c'),
            '--name',
            'r',
            '--no-plots',
            '--metrics',
            'mAP',
            '--compare-method',
            'bce',
            '--baselines',
            'supcon',
        ]
    )
    assert code == 0
    md = (tmp_path / 'c' / 'r.md').read_text()
    assert '### Paired difference of bce to the baselines (same seeds)' in md
    assert '| supcon | 1 | -30.00 |' in md
    assert '| best baseline | 1 | -30.00 (supcon) |' in md
    assert 'Paired difference of macl' not in md


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
        str(tmp_path / 'x_paired.csv'),
    ]
