import json
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

#: Rows of each section in a run with the --quick sizes.
ROWS = {'task': 5, 'loss': 2, 'metrics': 1, 'index': 2}


def _run(
    script: ModuleType, out: Path, *extra: str
) -> tuple[int, list[tuple[str, str]]]:
    """Run the script's main, recording the renames it makes."""
    renames: list[tuple[str, str]] = []
    replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        replace(src, dst)

    argv = ['--quick', '--device', 'cpu', *extra]
    argv += ['--out-json', str(out / 'check.json'), '--out-md', str(out / 'check.md')]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, 'replace', recording_replace)
        code = script.main(argv)
    return code, renames


@pytest.fixture(scope='module')
def quick_run(
    device_check: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Path, list[tuple[str, str]]]:
    out = tmp_path_factory.mktemp('device_check')
    code, renames = _run(device_check, out)
    return code, out, renames


def test_quick_run_succeeds(quick_run: tuple[int, Path, list[Any]]) -> None:
    code, out, _ = quick_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ['check.json', 'check.md']


def test_json_has_every_section_with_positive_figures(
    quick_run: tuple[int, Path, list[Any]],
) -> None:
    _, out, _ = quick_run
    report = json.loads((out / 'check.json').read_text())
    meta = report['meta']
    assert meta['quick'] is True
    assert meta['device'] == 'cpu'
    for key in ('date', 'device_name', 'torch', 'torchgeo', 'faiss'):
        assert meta[key]
    assert list(report['sections']) == list(ROWS)
    for name, section in report['sections'].items():
        assert section['error'] is None, name
        assert len(section['rows']) == ROWS[name], name
        for row in section['rows']:
            for key in ('value', 'anchor_value', 'ratio'):
                assert math.isfinite(row[key]), (name, row)
                assert row[key] > 0, (name, row)
            assert row['ratio'] == pytest.approx(row['value'] / row['anchor_value'])
            # peak memory is only measured on CUDA
            assert row['peak_mib'] is None
            assert row['anchor_peak_mib'] is None
    task = report['sections']['task']['rows']
    assert task[0]['method'] == 'RetrievalTask (MACL)'
    assert task[0]['anchor'] == 'SimCLR'
    assert task[0]['unit'] == 'img/s'
    # views and loss take a share of the step they are part of
    assert all(0 < row['ratio'] < 1 for row in task[1:])
    loss = report['sections']['loss']['rows']
    assert [row['measurement'].split(',')[0] for row in loss] == [
        'loss fwd+bwd (B=64',
        'loss fwd+bwd (B=128',
    ]


def test_markdown_has_a_row_per_measurement(
    quick_run: tuple[int, Path, list[Any]],
) -> None:
    _, out, _ = quick_run
    report = json.loads((out / 'check.json').read_text())
    text = (out / 'check.md').read_text()
    assert 'quick: yes' in text
    assert f'torch {report["meta"]["torch"]}' in text
    assert f'torchgeo {report["meta"]["torchgeo"]}' in text
    assert f'faiss {report["meta"]["faiss"]}' in text
    table = [line for line in text.splitlines() if line.startswith('| ')]
    body = table[1:]  # after the header
    rows = [(n, r) for n, s in report['sections'].items() for r in s['rows']]
    assert len(body) == len(rows) == sum(ROWS.values())
    for line, (name, row) in zip(body, rows):
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        assert cells[:3] == [name, row['measurement'], row['method']]
        assert cells[4] == row['anchor']
        assert float(cells[6]) == pytest.approx(row['ratio'], abs=1e-3)
        assert cells[7:] == ['n/a', 'n/a']


def test_reports_are_written_atomically(
    quick_run: tuple[int, Path, list[tuple[str, str]]],
) -> None:
    _, out, renames = quick_run
    ours = [(src, dst) for src, dst in renames if Path(dst).parent == out]
    assert sorted(Path(dst).name for _, dst in ours) == ['check.json', 'check.md']
    for src, dst in ours:
        assert Path(src).parent == out
        assert Path(src).name.startswith(f'.{Path(dst).name}.')
        assert src.endswith('.tmp')
        assert not Path(src).exists()


def test_failing_section_is_reported(
    device_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> list[Any]:
        raise RuntimeError('metrics | broke\non purpose')

    monkeypatch.setitem(device_check.RUNNERS, 'metrics', broken)
    code, _ = _run(device_check, tmp_path, '--sections', 'metrics')
    assert code == 1
    report = json.loads((tmp_path / 'check.json').read_text())
    section = report['sections']['metrics']
    assert section['rows'] == []
    assert section['error'] == 'RuntimeError: metrics | broke\non purpose'
    text = (tmp_path / 'check.md').read_text()
    assert '| metrics | ERROR | RuntimeError: metrics \\| broke on purpose |' in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['check.json', 'check.md']
