"""Where a result comes from, and how result files are written.

Paths are recorded relative to the repository root, package versions next to every
result, and every file (results, tables, figures) is written whole through a
temporary file and :func:`os.replace`, so a reader never sees half of one.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
from pathlib import Path
from typing import Any

from grid import REPO_ROOT
from torchgeo_macl._io import atomic_write_text


def display_path(path: Path | str) -> str:
    """A path relative to the repository root when inside it (POSIX style).

    Args:
        path: Any path.

    Returns:
        The path to show and record.
    """
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def replace_prefix(value: Any, old: str, new: str) -> Any:
    """Replace the prefix ``old`` of every string in a nested value by ``new``.

    Args:
        value: Mappings, lists and scalars.
        old: Prefix to replace.
        new: Its replacement.

    Returns:
        A copy with the prefixes replaced.
    """
    if isinstance(value, dict):
        return {k: replace_prefix(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_prefix(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old) :]
    return value


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically; non-finite floats become ``null``.

    Args:
        path: Destination.
        data: JSON-serialisable data.
    """
    text = json.dumps(_finite_or_none(data), indent=2, allow_nan=False) + '\n'
    atomic_write_text(path, text)


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on.

    Returns:
        Package name -> version (``'not installed'`` when absent).
    """
    found = {'python': platform.python_version()}
    for name in ('torchgeo-macl', 'torchgeo', 'torch', 'lightning', 'timm'):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = 'not installed'
    return found
