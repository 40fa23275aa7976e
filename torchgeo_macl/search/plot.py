"""Pictures of search results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .archive import ArchiveInfo, SearchHit
from .embed import read_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_search_grid(
    results: Sequence[tuple[str, Sequence[SearchHit]]],
    info: ArchiveInfo,
    columns: int = 8,
) -> Figure:
    """Draw each query with its top results; green frames share a label with it.

    Args:
        results: Output of :func:`search_archive`.
        info: The archive sidecar (where the result images are).
        columns: Results shown per query.

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt

    rows = len(results)
    fig, axes = plt.subplots(
        rows, columns + 1, figsize=(1.6 * (columns + 1), 1.8 * rows), squeeze=False
    )
    for r, (query, hits) in enumerate(results):
        path = query if os.path.isfile(query) else info.sources.get(query)
        _show(axes[r, 0], path, 'query', 'black')
        axes[r, 0].set_ylabel(
            Path(query).stem if os.path.isfile(query) else query, fontsize=6
        )
        for c in range(columns):
            ax = axes[r, c + 1]
            if c >= len(hits):
                ax.axis('off')
                continue
            hit = hits[c]
            color = 'grey' if hit.shared is None else ('green' if hit.shared else 'red')
            title = f'{hit.rank}: {hit.score:.2f}'
            if hit.shared is not None:
                title += f' ({len(hit.shared)} shared)'
            _show(ax, info.sources.get(hit.id), title, color)
    fig.tight_layout()
    return fig


def _show(ax: Any, path: str | None, title: str, color: str) -> None:
    if path is not None and os.path.isfile(path):
        image = read_image(path)[:3]
        image = image - image.amin()
        image = image / image.amax().clamp(min=1e-6)
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
