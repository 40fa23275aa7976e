"""Tables and plots of the experiment results.

Reads every ``metrics.json`` under a results directory (written by
``experiments/run.py``), groups the runs by (dataset, method) and writes

* ``<out>/<name>.md``: per dataset, a table of the methods (one row per loss) and,
  where ablations were run, a table of each ablated loss with its ablations; mean
  ± sample standard deviation over the seeds, the best value of every column in
  bold, and where the numbers come from (commands, dates, versions, devices);
* ``<out>/<name>.csv``: the same rows, unrounded, with a 0/1 ``best`` column per
  metric;
* ``<out>/<name>_<dataset>_<metric>.png``: bar chart of the main metric per method
  (and ``..._ablation_<metric>.png`` for the ablation table);
* ``<out>/<name>_paired.csv``: where a dataset has the compared method (``macl``
  by default) and at least one baseline, the mean and sample standard deviation
  over the shared seeds of the per-seed difference (method - baseline) of every
  metric, with the number of paired seeds (also a section of ``<name>.md``, with a
  row for the best baseline of each column);
* ``<out>/<name>_<dataset>_per_label_AP<k>.png``: per-label AP@k of every method,
  labels ordered by training-split frequency, when the runs recorded it;
* ``<out>/<name>_<dataset>_rarest<N>_AP<k>.png``: the same for the N labels of
  lowest training-split frequency (rarest first), with the standard deviation
  over the seeds as error bars.

Metrics are shown in percent except ACG and WAP (numbers of shared labels). Rows are
ordered by loss (as in ``grid.py``) then ablation; the output depends only on the
input files.

Example::

    python experiments/report.py --results experiments/results --name synthetic
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grid import ABLATIONS, LOSSES, RESULTS_DIR, method_name, split_method
from torchgeo_macl._io import atomic_save_figure, atomic_write_text

#: Metric columns, as ``<name>@k``.
DEFAULT_METRICS = ('mAP', 'NDCG', 'WAP', 'ACG', 'P', 'rare_mAP', 'mAP_jaccard')
#: Metrics shown as they are, not in percent: ACG and WAP count shared labels.
UNSCALED = ('ACG', 'WAP')
#: Placeholder for a value a method does not have.
MISSING = '-'
#: Method compared with the baselines by default.
COMPARE_METHOD = 'macl'
#: Losses whose full runs are the baselines of the paired differences.
BASELINES = ('supcon', 'jaccard_supcon', 'mulsupcon', 'bce', 'ntxent')


@dataclass(frozen=True)
class Summary:
    """The runs of one (dataset, method), aggregated over seeds.

    Attributes:
        dataset: Dataset name.
        method: ``<loss>`` or ``<loss>+<ablation>``.
        loss: Loss name.
        ablation: Ablation name (``full`` for none).
        seeds: Seeds of the runs, sorted.
        mean: Mean of every metric over the runs that have it.
        std: Sample standard deviation (NaN with a single value).
        count: Number of runs that have each metric.
    """

    dataset: str
    method: str
    loss: str
    ablation: str
    seeds: tuple[int, ...]
    mean: Mapping[str, float]
    std: Mapping[str, float]
    count: Mapping[str, int]


@dataclass(frozen=True)
class PairedDifference:
    """Difference of a method to a baseline on the same seeds, for one metric.

    Attributes:
        dataset: Dataset name.
        method: The compared method.
        baseline: The baseline (a full method, no ablation).
        metric: Metric column (``<name>@k``).
        shared_seeds: Seeds both methods ran, sorted.
        seeds: The shared seeds where both runs have a finite value of the metric.
        mean: Mean over ``seeds`` of (method value - baseline value), as stored
            (fractions, not percent); NaN without seeds.
        std: Sample standard deviation of these differences (NaN for fewer than two
            seeds).
        best: Whether the baseline has the highest mean of the metric (over its
            own seeds, as in the methods table) among the baselines of the
            dataset; on a tie, the first in table order.
    """

    dataset: str
    method: str
    baseline: str
    metric: str
    shared_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    mean: float
    std: float
    best: bool

    @property
    def n(self) -> int:
        """Number of paired seeds behind ``mean`` and ``std``."""
        return len(self.seeds)


# --------------------------------------------------------------------- reading
def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Read every ``metrics.json`` under a directory.

    Args:
        results_dir: Directory searched recursively.

    Returns:
        The records, each with ``'path'`` added, sorted by dataset, method, seed.

    Raises:
        FileNotFoundError: If the directory does not exist.
        ValueError: If a file is not valid JSON, lacks ``dataset``, ``seed``,
            ``metrics`` or the method, or two files hold the same run.
        TypeError: If a file or its ``metrics`` is not a JSON object.
    """
    if not results_dir.is_dir():
        raise FileNotFoundError(f'results directory {results_dir} does not exist')
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, int], Path] = {}
    for path in sorted(results_dir.rglob('metrics.json')):
        try:
            record = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f'cannot read {path}: {exc}') from exc
        if not isinstance(record, dict):
            raise TypeError(f'{path} does not hold a JSON object')
        if 'method' not in record and 'loss' in record:
            record['method'] = method_name(
                record['loss'], record.get('ablation') or 'full'
            )
        missing = [
            k for k in ('dataset', 'method', 'seed', 'metrics') if k not in record
        ]
        if missing:
            raise ValueError(f'{path} lacks {", ".join(missing)}')
        if not isinstance(record['metrics'], dict):
            raise TypeError(f'{path}: "metrics" must be an object')
        loss, ablation = split_method(str(record['method']))
        record.setdefault('loss', loss)
        record.setdefault('ablation', ablation)
        key = (str(record['dataset']), str(record['method']), int(record['seed']))
        if key in seen:
            raise ValueError(
                f'{path} and {seen[key]} both hold {key[0]}/{key[1]} seed {key[2]}'
            )
        seen[key] = path
        record['path'] = path
        records.append(record)
    records.sort(
        key=lambda r: (
            str(r['dataset']),
            _method_key(r['loss'], r['ablation']),
            int(r['seed']),
        )
    )
    return records


def _method_key(loss: str, ablation: str) -> tuple[int, str, int, str]:
    """Table order: the grid's losses and ablations first, others by name."""
    ablations = list(ABLATIONS)
    li = LOSSES.index(loss) if loss in LOSSES else len(LOSSES)
    ai = ablations.index(ablation) if ablation in ablations else len(ablations)
    return li, loss, ai, ablation


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def summarise(records: Iterable[Mapping[str, Any]]) -> list[Summary]:
    """Aggregate runs over seeds per (dataset, method).

    Args:
        records: Records from :func:`load_results`.

    Returns:
        One summary per (dataset, method), in table order.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault((str(record['dataset']), str(record['method'])), []).append(
            record
        )
    summaries = []
    for (dataset, method), runs in groups.items():
        names = sorted({k for r in runs for k in r['metrics']})
        mean, std, count = {}, {}, {}
        for name in names:
            values = [
                v
                for r in runs
                if name in r['metrics']
                and math.isfinite(v := _as_float(r['metrics'][name]))
            ]
            mean[name], std[name] = _mean_std(values)
            count[name] = len(values)
        summaries.append(
            Summary(
                dataset=dataset,
                method=method,
                loss=str(runs[0]['loss']),
                ablation=str(runs[0]['ablation']),
                seeds=tuple(sorted(int(r['seed']) for r in runs)),
                mean=mean,
                std=std,
                count=count,
            )
        )
    summaries.sort(key=lambda s: (s.dataset, _method_key(s.loss, s.ablation)))
    return summaries


# --------------------------------------------------------------------- tables
def metric_columns(k: int, metrics: Sequence[str] = DEFAULT_METRICS) -> list[str]:
    """Column names for a cut-off.

    Args:
        k: Cut-off.
        metrics: Metric base names.

    Returns:
        ``['mAP@k', ...]``.
    """
    return [f'{m}@{k}' for m in metrics]


def _scale(metric: str) -> float:
    return 1.0 if metric.split('@')[0].split('_')[0] in UNSCALED else 100.0


def format_value(
    metric: str, mean: float, std: float, decimals: int = 2, signed: bool = False
) -> str:
    """Format ``mean ± std`` (percent, except ACG and WAP).

    Args:
        metric: Metric name (decides the scale).
        mean: Mean.
        std: Standard deviation (NaN: only the mean is shown).
        decimals: Decimals.
        signed: Write the sign of the mean even when positive (differences).

    Returns:
        The text, or :data:`MISSING` when the mean is not finite.
    """
    if not math.isfinite(mean):
        return MISSING
    scale = _scale(metric)
    sign = '+' if signed else ''
    text = f'{mean * scale:{sign}.{decimals}f}'
    if math.isfinite(std):
        text += f' ± {std * scale:.{decimals}f}'
    return text


def _tables(summaries: Sequence[Summary]) -> list[tuple[str, str, list[Summary]]]:
    """Split summaries into (dataset, table kind, rows) tables."""
    tables: list[tuple[str, str, list[Summary]]] = []
    for dataset in sorted({s.dataset for s in summaries}):
        rows = [s for s in summaries if s.dataset == dataset]
        plain = [s for s in rows if s.ablation == 'full']
        if plain:
            tables.append((dataset, 'methods', plain))
        for loss in dict.fromkeys(s.loss for s in rows if s.ablation != 'full'):
            group = [s for s in rows if s.loss == loss]
            tables.append((dataset, f'{loss} ablation', group))
    return tables


def _best(rows: Sequence[Summary], metric: str, decimals: int) -> set[str]:
    """Methods whose displayed mean is the highest of a column."""
    shown = {
        s.method: round(s.mean[metric] * _scale(metric), decimals)
        for s in rows
        if math.isfinite(s.mean.get(metric, math.nan))
    }
    if not shown:
        return set()
    top = max(shown.values())
    return {m for m, v in shown.items() if v == top}


def _row_name(summary: Summary, kind: str) -> str:
    if kind != 'methods' and summary.ablation == 'full':
        return f'{summary.method} (full)'
    return summary.method


def markdown_table(
    rows: Sequence[Summary], metrics: Sequence[str], kind: str, decimals: int = 2
) -> str:
    """A Markdown table with the best value of every column in bold.

    Args:
        rows: Rows of one table.
        metrics: Metric columns.
        kind: ``methods`` or ``<loss> ablation`` (names the full row).
        decimals: Decimals.

    Returns:
        The table, one line per row.
    """
    best = {m: _best(rows, m, decimals) for m in metrics}
    lines = [
        '| Method | Seeds | ' + ' | '.join(metrics) + ' |',
        '|:--|--:|' + '--:|' * len(metrics),
    ]
    for s in rows:
        cells = []
        for m in metrics:
            text = format_value(
                m, s.mean.get(m, math.nan), s.std.get(m, math.nan), decimals
            )
            cells.append(f'**{text}**' if s.method in best[m] else text)
        lines.append(
            f'| {_row_name(s, kind)} | {len(s.seeds)} | ' + ' | '.join(cells) + ' |'
        )
    return '\n'.join(lines)


#: Database of each query split of the retrieval datamodules.
_DATABASES = {'test': 'train + val split', 'val': 'train split'}


def _protocol(record: Mapping[str, Any]) -> str:
    """The queries and database of a run, from its recorded configuration."""
    config = record.get('config')
    data = config.get('data', {}) if isinstance(config, dict) else {}
    init = data.get('init_args', {}) if isinstance(data, dict) else {}
    split = init.get('query_split', 'test') if isinstance(init, dict) else 'test'
    database = _DATABASES.get(str(split), '?')
    return f'queries: {split} split; database: {database}'


def _provenance(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    commands = sorted({str(r['command']) for r in records if r.get('command')})
    for command in commands:
        lines.append(f'- command: `{command}`')
    dates = sorted(str(r['date']) for r in records if r.get('date'))
    if dates:
        span = dates[0] if dates[0] == dates[-1] else f'{dates[0]} to {dates[-1]}'
        lines.append(f'- dates (UTC): {span}')
    versions = sorted(
        {
            ', '.join(f'{k} {v}' for k, v in sorted(r['versions'].items()))
            for r in records
            if isinstance(r.get('versions'), dict)
        }
    )
    for text in versions:
        lines.append(f'- versions: {text}')
    protocols = sorted({_protocol(r) for r in records})
    for text in protocols:
        lines.append(f'- {text}')
    devices = sorted({str(r['device']) for r in records if r.get('device')})
    if devices:
        lines.append(f'- devices: {"; ".join(devices)}')
    walls = [
        float(r['wall_time_s']) for r in records if r.get('wall_time_s') is not None
    ]
    if walls:
        lines.append(
            f'- wall time per run: {math.fsum(walls) / len(walls):.0f} s on average, '
            f'{math.fsum(walls) / 60:.1f} min in all ({len(walls)} runs)'
        )
    archives = sorted(
        {
            json.dumps(r['synthetic_archive'], sort_keys=True)
            for r in records
            if r.get('synthetic_archive')
        }
    )
    for text in archives:
        lines.append(f'- synthetic archive: `{text}`')
    return lines


def markdown_report(
    records: Sequence[Mapping[str, Any]],
    summaries: Sequence[Summary],
    metrics: Sequence[str],
    decimals: int = 2,
    title: str = 'Retrieval results',
    figures: Mapping[str, Sequence[str]] | None = None,
    paired: Sequence[PairedDifference] = (),
) -> str:
    """The whole Markdown report.

    Args:
        records: Runs (for the provenance lines).
        summaries: Aggregated rows.
        metrics: Metric columns.
        decimals: Decimals.
        title: First heading.
        figures: Image file names to show per dataset.
        paired: Rows of :func:`paired_differences` (a section per dataset and
            compared method that has some).

    Returns:
        Markdown text ending with a newline.
    """
    out = [
        f'# {title}',
        '',
        (
            'Mean ± sample standard deviation over the seeds of each row (only the '
            'mean for a single seed); metrics in %, except ACG and WAP (numbers of '
            'labels shared with the query). Best value of each column in bold. '
            'Ranking by cosine similarity; the queries and the database of each '
            'dataset are listed under its runs.'
        ),
    ]
    tables = _tables(summaries)
    for dataset in dict.fromkeys(t[0] for t in tables):
        out += ['', f'## {dataset}']
        for _, kind, rows in (t for t in tables if t[0] == dataset):
            title = 'Methods' if kind == 'methods' else f'Ablation of {kind.split()[0]}'
            out += ['', f'### {title}', '']
            out.append(markdown_table(rows, metrics, kind, decimals))
        here = [r for r in paired if r.dataset == dataset]
        for method in dict.fromkeys(r.method for r in here):
            out += [
                '',
                f'### Paired difference of {method} to the baselines (same seeds)',
                '',
                (
                    'Mean ± sample standard deviation, over the seeds both methods '
                    f'ran, of ({method} - baseline) on the same seed (only the mean '
                    'for a single seed); percentage points, except ACG and WAP. Best '
                    'baseline: in each column, the baseline with the highest mean in '
                    'the methods table. Seeds: the seeds both methods ran; n: the number '
                    'of seeds of a cell where some runs lack the metric.'
                ),
                '',
                markdown_paired(
                    [r for r in here if r.method == method], metrics, decimals
                ),
            ]
        for name in (figures or {}).get(dataset, []):
            out += ['', f'![{name}]({name})']
        lines = _provenance([r for r in records if r['dataset'] == dataset])
        if lines:
            out += ['', 'Runs:', '', *lines]
    return '\n'.join(out) + '\n'


def csv_report(
    summaries: Sequence[Summary], metrics: Sequence[str], decimals: int = 2
) -> str:
    """The CSV table: one row per table row, unrounded means and stds.

    Args:
        summaries: Aggregated rows.
        metrics: Metric columns.
        decimals: Decimals used to decide the best values (as in Markdown).

    Returns:
        CSV text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    header = ['dataset', 'table', 'method', 'loss', 'ablation', 'seeds']
    for m in metrics:
        header += [f'{m} mean', f'{m} std', f'{m} best']
    writer.writerow(header)
    for dataset, kind, rows in _tables(summaries):
        best = {m: _best(rows, m, decimals) for m in metrics}
        for s in rows:
            row: list[str] = [dataset, kind, s.method, s.loss, s.ablation]
            row.append(' '.join(str(x) for x in s.seeds))
            for m in metrics:
                mean, std = s.mean.get(m, math.nan), s.std.get(m, math.nan)
                row.append(f'{mean:.6f}' if math.isfinite(mean) else '')
                row.append(f'{std:.6f}' if math.isfinite(std) else '')
                row.append('1' if s.method in best[m] else '0')
            writer.writerow(row)
    return buffer.getvalue()


# --------------------------------------------------------------------- paired
def paired_differences(
    records: Iterable[Mapping[str, Any]],
    method: str = COMPARE_METHOD,
    baselines: Sequence[str] = BASELINES,
    metrics: Sequence[str] = DEFAULT_METRICS,
    k: int = 20,
) -> list[PairedDifference]:
    """Per-seed differences of a method to each baseline, over the shared seeds.

    For every dataset with runs of ``method`` and of at least one baseline (the
    full runs, no ablation, of a loss in ``baselines``), the difference (method -
    baseline) of every metric is taken on each seed both ran and where both have
    a finite value, then averaged over these seeds.

    Args:
        records: Records from :func:`load_results`.
        method: Compared method (``<loss>`` or ``<loss>+<ablation>``).
        baselines: Losses of the baselines (``method`` itself is left out).
        metrics: Metric base names.
        k: Cut-off (columns ``<metric>@k``).

    Returns:
        One row per (dataset, baseline, metric column): datasets by name,
        baselines in table order, metrics in the given order.
    """
    records = list(records)
    summaries = summarise(records)
    columns = metric_columns(k, metrics)
    runs: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for record in records:
        key = (str(record['dataset']), str(record['method']))
        runs.setdefault(key, {})[int(record['seed'])] = record['metrics']
    rows: list[PairedDifference] = []
    for dataset in sorted({s.dataset for s in summaries}):
        ours = runs.get((dataset, method))
        others = [
            s
            for s in summaries
            if s.dataset == dataset
            and s.ablation == 'full'
            and s.loss in baselines
            and s.method != method
        ]
        if ours is None or not others:
            continue
        best: dict[str, str | None] = {}
        for column in columns:
            finite = [s for s in others if math.isfinite(s.mean.get(column, math.nan))]
            # max keeps the first of equal means, i.e. the first in table order
            best[column] = (
                max(finite, key=lambda s: s.mean[column]).method if finite else None
            )
        for other in others:
            theirs = runs[(dataset, other.method)]
            shared = tuple(sorted(ours.keys() & theirs.keys()))
            for column in columns:
                kept = [
                    (seed, diff)
                    for seed in shared
                    if math.isfinite(
                        diff := _as_float(ours[seed].get(column))
                        - _as_float(theirs[seed].get(column))
                    )
                ]
                mean, std = _mean_std([diff for _, diff in kept])
                rows.append(
                    PairedDifference(
                        dataset=dataset,
                        method=method,
                        baseline=other.method,
                        metric=column,
                        shared_seeds=shared,
                        seeds=tuple(seed for seed, _ in kept),
                        mean=mean,
                        std=std,
                        best=best[column] == other.method,
                    )
                )
    return rows


def _paired_cell(
    row: PairedDifference, seeds: int | None, decimals: int, name: bool
) -> str:
    """Signed ``mean ± std``; notes the baseline and a seed count unlike the row's."""
    text = format_value(row.metric, row.mean, row.std, decimals, signed=True)
    if text == MISSING:
        return text
    notes = [row.baseline] if name else []
    if row.n != seeds:
        notes.append(f'n={row.n}')
    return f'{text} ({", ".join(notes)})' if notes else text


def markdown_paired(
    rows: Sequence[PairedDifference], metrics: Sequence[str], decimals: int = 2
) -> str:
    """A Markdown table of the paired differences of one dataset.

    One row per baseline, then a row ``best baseline`` whose cell of every column
    is the difference to the baseline with the highest mean of that column (named
    in the cell). The ``Seeds`` column counts the seeds both methods ran; a cell
    over fewer seeds (a metric some runs lack) says ``n=<seeds>``.

    Args:
        rows: Rows of :func:`paired_differences` for one dataset and method.
        metrics: Metric columns.
        decimals: Decimals.

    Returns:
        The table, one line per row.
    """
    cells = {(r.baseline, r.metric): r for r in rows}
    lines = [
        '| Baseline | Seeds | ' + ' | '.join(metrics) + ' |',
        '|:--|--:|' + '--:|' * len(metrics),
    ]
    for baseline in dict.fromkeys(r.baseline for r in rows):
        found = [cells[(baseline, m)] for m in metrics if (baseline, m) in cells]
        seeds = len(found[0].shared_seeds) if found else 0
        texts = [
            _paired_cell(cells[(baseline, m)], seeds, decimals, name=False)
            if (baseline, m) in cells
            else MISSING
            for m in metrics
        ]
        lines.append(f'| {baseline} | {seeds} | ' + ' | '.join(texts) + ' |')
    best = {r.metric: r for r in rows if r.best}
    counts = sorted({len(r.shared_seeds) for r in best.values()})
    if len(counts) == 1:
        shown, common = str(counts[0]), counts[0]
    else:
        shown = f'{counts[0]} to {counts[-1]}' if counts else MISSING
        common = None
    texts = [
        _paired_cell(best[m], common, decimals, name=True) if m in best else MISSING
        for m in metrics
    ]
    lines.append(f'| best baseline | {shown} | ' + ' | '.join(texts) + ' |')
    return '\n'.join(lines)


def csv_paired(rows: Sequence[PairedDifference]) -> str:
    """The CSV of the paired differences: one line per row, unrounded.

    Means and standard deviations are as stored (fractions, like ``<name>.csv``);
    ``best`` is 1 for the baseline of highest mean of the metric.

    Args:
        rows: Rows of :func:`paired_differences`.

    Returns:
        CSV text with the columns dataset, method, baseline, metric, n, mean, std,
        best.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(
        ['dataset', 'method', 'baseline', 'metric', 'n', 'mean', 'std', 'best']
    )
    for r in rows:
        writer.writerow(
            [
                r.dataset,
                r.method,
                r.baseline,
                r.metric,
                r.n,
                f'{r.mean:.6f}' if math.isfinite(r.mean) else '',
                f'{r.std:.6f}' if math.isfinite(r.std) else '',
                '1' if r.best else '0',
            ]
        )
    return buffer.getvalue()


# --------------------------------------------------------------------- plots
def _safe(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '-_' else '' for c in name.replace('@', ''))


def _save(fig: Any, path: Path) -> None:
    atomic_save_figure(fig, path, dpi=120, metadata={'Software': None})


def plot_metric(rows: Sequence[Summary], metric: str, path: Path, title: str) -> None:
    """Bar chart of one metric per method with the standard deviation as error bar.

    Args:
        rows: Rows of one table.
        metric: Metric to plot.
        path: PNG to write.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    scale = _scale(metric)
    names = [s.method for s in rows]
    means = [s.mean.get(metric, math.nan) * scale for s in rows]
    errs = [
        0.0 if not math.isfinite(e := s.std.get(metric, math.nan)) else e * scale
        for s in rows
    ]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.6))
    x = list(range(len(rows)))
    ax.bar(
        x,
        [0.0 if not math.isfinite(m) else m for m in means],
        yerr=errs,
        capsize=3,
        color='tab:blue',
    )
    for xi, m in zip(x, means):
        if math.isfinite(m):
            ax.annotate(
                f'{m:.1f}' if scale != 1 else f'{m:.2f}',
                (xi, m),
                xytext=(0, 3),
                textcoords='offset points',
                ha='center',
                va='bottom',
                fontsize='small',
            )
    ax.set_xticks(x, names, rotation=30, ha='right')
    ax.set_ylabel(metric + (' (%)' if scale != 1 else ''))
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def per_label_stats(
    records: Sequence[Mapping[str, Any]], k: int
) -> (
    tuple[list[str], list[float], dict[str, list[float]], dict[str, list[float]]] | None
):
    """Per-label AP@k of every method: mean and standard deviation over seeds.

    Args:
        records: Runs of one dataset.
        k: Cut-off.

    Returns:
        Label names, their frequencies, the mean AP per label of each method (NaN
        for a label no query carries) and its sample standard deviation over the
        seeds (NaN with fewer than two values), or None without per-label values.

    Raises:
        ValueError: If the runs disagree on the label names or the list lengths.
    """
    key = f'per_label_AP@{k}'
    usable = [r for r in records if r.get(key) is not None and r.get('label_names')]
    if not usable:
        return None
    names = [str(n) for n in usable[0]['label_names']]
    freqs_per_run: list[list[float]] = []
    values: dict[str, list[list[float]]] = {}
    for r in usable:
        if [str(n) for n in r['label_names']] != names or len(r[key]) != len(names):
            raise ValueError(
                f'{r.get("path", "a run")}: label names or {key} do not match those '
                f'of {usable[0].get("path", "the first run")}'
            )
        if r.get('label_frequencies') is not None:
            freqs_per_run.append([_as_float(f) for f in r['label_frequencies']])
        values.setdefault(str(r['method']), []).append([_as_float(v) for v in r[key]])
    freqs = (
        [
            _mean_std([f[i] for f in freqs_per_run if math.isfinite(f[i])])[0]
            for i in range(len(names))
        ]
        if freqs_per_run
        else [math.nan] * len(names)
    )
    stats = {
        method: [
            _mean_std([run[i] for run in runs if math.isfinite(run[i])])
            for i in range(len(names))
        ]
        for method, runs in values.items()
    }
    means = {method: [m for m, _ in pairs] for method, pairs in stats.items()}
    stds = {method: [s for _, s in pairs] for method, pairs in stats.items()}
    return names, freqs, means, stds


def per_label_values(
    records: Sequence[Mapping[str, Any]], k: int
) -> tuple[list[str], list[float], dict[str, list[float]]] | None:
    """Per-label AP@k of every method, averaged over seeds.

    Args:
        records: Runs of one dataset.
        k: Cut-off.

    Returns:
        Label names, their frequencies, and the mean AP per label of each method
        (NaN for a label no query carries), or None without per-label values.

    Raises:
        ValueError: If the runs disagree on the label names or the list lengths.
    """
    found = per_label_stats(records, k)
    return None if found is None else found[:3]


def rarest_labels(
    freqs: Sequence[float], values: Mapping[str, Sequence[float]], n: int
) -> list[int]:
    """The labels of lowest training-split frequency that have an AP.

    Args:
        freqs: Label frequencies (training split; NaN when unknown).
        values: Per-label AP of each method (NaN where undefined).
        n: Number of labels.

    Returns:
        Indices of at most ``n`` labels with a known frequency and a finite AP for
        at least one method, from the rarest (ties by index).
    """
    defined = [
        i
        for i in range(len(freqs))
        if math.isfinite(freqs[i]) and any(math.isfinite(v[i]) for v in values.values())
    ]
    return sorted(defined, key=lambda i: (freqs[i], i))[: max(n, 0)]


def plot_per_label(
    names: Sequence[str],
    freqs: Sequence[float],
    values: Mapping[str, Sequence[float]],
    k: int,
    path: Path,
    title: str,
    order: Sequence[int] | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> None:
    """Grouped bars of per-label AP@k, labels from the most to the least frequent.

    Args:
        names: Label names.
        freqs: Label frequencies (training split).
        values: Per-label AP of each method.
        k: Cut-off.
        path: PNG to write.
        title: Figure title.
        order: Indices of the labels to show, in this order (default: all, from
            the most frequent).
        errors: Per-label standard deviation of each method, drawn as error bars
            (NaN: none).
    """
    import matplotlib.pyplot as plt

    if order is None:
        order = sorted(
            range(len(names)),
            key=lambda i: (-(freqs[i] if math.isfinite(freqs[i]) else -1.0), i),
        )
    methods = list(values)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.55 * len(order) * max(len(methods), 2) / 2 + 2), 4.2)
    )
    cmap = plt.get_cmap('tab10')
    for j, method in enumerate(methods):
        heights = [values[method][i] * 100 for i in order]
        xs = [p + (j - (len(methods) - 1) / 2) * width for p in range(len(order))]
        extra: dict[str, Any] = {}
        if errors is not None:
            extra['yerr'] = [
                e * 100 if math.isfinite(e := errors[method][i]) else 0.0 for i in order
            ]
            extra['capsize'] = 2
        ax.bar(
            xs,
            [h if math.isfinite(h) else 0.0 for h in heights],
            width=width,
            label=method,
            color=cmap(j % 10),
            **extra,
        )
    labels = [
        f'{names[i]} ({freqs[i] * 100:.0f}%)' if math.isfinite(freqs[i]) else names[i]
        for i in order
    ]
    ax.set_xticks(list(range(len(order))), labels, rotation=45, ha='right')
    ax.set_ylabel(f'AP@{k} (%)')
    ax.set_title(title)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize='small')
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------- writing
def write_report(
    results_dir: Path,
    out_dir: Path,
    name: str = 'results',
    k: int = 20,
    metrics: Sequence[str] = DEFAULT_METRICS,
    main_metric: str | None = None,
    decimals: int = 2,
    plots: bool = True,
    compare_method: str = COMPARE_METHOD,
    baselines: Sequence[str] = BASELINES,
    rarest: int = 8,
) -> list[Path]:
    """Read the results and write the Markdown, CSV and PNG files.

    Args:
        results_dir: Directory searched for ``metrics.json``.
        out_dir: Where to write.
        name: Base name of the files.
        k: Cut-off of the metric columns and the per-label plots.
        metrics: Metric base names (columns ``<metric>@k``).
        main_metric: Metric of the bar charts (default ``mAP@k``).
        decimals: Decimals of the tables.
        plots: Also draw the figures.
        compare_method: Method of the paired differences to the baselines
            (``<name>_paired.csv``, written when some dataset has both).
        baselines: Losses whose full runs are the baselines.
        rarest: Number of labels of the rarest-label plot (0: no such plot).

    Returns:
        The files written.

    Raises:
        ValueError: If there is no ``metrics.json`` under ``results_dir``.
    """
    records = load_results(results_dir)
    if not records:
        raise ValueError(f'no metrics.json under {results_dir}')
    summaries = summarise(records)
    columns = metric_columns(k, metrics)
    main_metric = main_metric or f'mAP@{k}'
    written: list[Path] = []
    figures: dict[str, list[str]] = {}
    if plots:
        import matplotlib

        matplotlib.use('Agg')
        for dataset, kind, rows in _tables(summaries):
            suffix = '' if kind == 'methods' else f'_{_safe(kind.replace(" ", "_"))}'
            path = out_dir / f'{name}_{_safe(dataset)}{suffix}_{_safe(main_metric)}.png'
            plot_metric(rows, main_metric, path, f'{dataset}: {main_metric} ({kind})')
            written.append(path)
            figures.setdefault(dataset, []).append(path.name)
        for dataset in sorted({s.dataset for s in summaries}):
            plain = {
                s.method
                for s in summaries
                if s.dataset == dataset and s.ablation == 'full'
            }
            runs = [
                r for r in records if r['dataset'] == dataset and r['method'] in plain
            ]
            found = per_label_stats(runs, k)
            if found is None:
                continue
            names, freqs, means, stds = found
            path = out_dir / f'{name}_{_safe(dataset)}_per_label_AP{k}.png'
            plot_per_label(names, freqs, means, k, path, f'{dataset}: per-label AP@{k}')
            written.append(path)
            figures.setdefault(dataset, []).append(path.name)
            order = rarest_labels(freqs, means, rarest)
            if not order:
                continue
            path = out_dir / f'{name}_{_safe(dataset)}_rarest{rarest}_AP{k}.png'
            plot_per_label(
                names,
                freqs,
                means,
                k,
                path,
                f'{dataset}: per-label AP@{k} of the {len(order)} rarest labels',
                order=order,
                errors=stds,
            )
            written.append(path)
            figures.setdefault(dataset, []).append(path.name)
    paired = paired_differences(records, compare_method, baselines, metrics, k)
    md = out_dir / f'{name}.md'
    atomic_write_text(
        md,
        markdown_report(
            records, summaries, columns, decimals, figures=figures, paired=paired
        ),
    )
    table = out_dir / f'{name}.csv'
    atomic_write_text(table, csv_report(summaries, columns, decimals))
    if not paired:
        return [md, table, *written]
    pairs = out_dir / f'{name}_paired.csv'
    atomic_write_text(pairs, csv_paired(paired))
    return [md, table, pairs, *written]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report.

    Args:
        argv: Arguments without the program name (``sys.argv[1:]`` by default).

    Returns:
        0 on success, 1 when no result was found or a file is invalid.
    """
    parser = argparse.ArgumentParser(
        prog='experiments/report.py',
        description='Tables (Markdown, CSV) and plots of the metrics.json files of '
        'experiments/run.py.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        '--results',
        type=Path,
        default=RESULTS_DIR,
        help='directory searched for metrics.json',
    )
    parser.add_argument(
        '--out', type=Path, help='output directory (default: --results)'
    )
    parser.add_argument(
        '--name', default='results', help='base name of the output files'
    )
    parser.add_argument('--k', type=int, default=20, help='cut-off of the columns')
    parser.add_argument(
        '--metrics', nargs='+', default=list(DEFAULT_METRICS), help='metric base names'
    )
    parser.add_argument(
        '--main-metric', help='metric of the bar charts (default mAP@K)'
    )
    parser.add_argument(
        '--decimals', type=int, default=2, help='decimals of the tables'
    )
    parser.add_argument('--no-plots', action='store_true', help='write only the tables')
    parser.add_argument(
        '--compare-method',
        default=COMPARE_METHOD,
        help='method whose paired differences to the baselines are reported',
    )
    parser.add_argument(
        '--baselines',
        nargs='+',
        default=list(BASELINES),
        help='losses whose full runs are the baselines of the paired differences',
    )
    parser.add_argument(
        '--rarest',
        type=int,
        default=8,
        help='number of labels of the rarest-label AP plot (0: none)',
    )
    args = parser.parse_args(argv)
    if args.rarest < 0:
        parser.error('--rarest must be 0 or more')
    try:
        written = write_report(
            args.results,
            args.out or args.results,
            name=args.name,
            k=args.k,
            metrics=args.metrics,
            main_metric=args.main_metric,
            decimals=args.decimals,
            plots=not args.no_plots,
            compare_method=args.compare_method,
            baselines=args.baselines,
            rarest=args.rarest,
        )
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f'report.py: {exc}', file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
