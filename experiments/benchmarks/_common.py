"""Helpers shared by the benchmark scripts of this folder."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def render_table(
    header: Sequence[str],
    lines: Sequence[Sequence[str]],
    markdown: bool,
    left: Collection[int] = (),
) -> str:
    """Render rows of cells as a plain or a Markdown table.

    Args:
        header: Column titles.
        lines: Rows of cells, one cell per column.
        markdown: Whether to render a Markdown table instead of aligned text.
        left: Columns of the plain table aligned left; the others are aligned right.

    Returns:
        The table, lines separated by newlines, without a trailing newline.
    """
    if markdown:
        out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        out += ['| ' + ' | '.join(line) + ' |' for line in lines]
        return '\n'.join(out)
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)
    ]
    fmt = '  '.join(
        f'{{:<{w}}}' if i in left else f'{{:>{w}}}' for i, w in enumerate(widths)
    )
    return '\n'.join([fmt.format(*header)] + [fmt.format(*line) for line in lines])
