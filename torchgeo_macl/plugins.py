"""Discovery of TorchGeo plugins through Python entry points.

Any installed distribution can extend TorchGeo by declaring an entry point in the
``torchgeo.plugins`` group::

    [project.entry-points."torchgeo.plugins"]
    my_plugin = "my_package.plugin:register"

The entry point may name a module or a callable. A callable is called with no
arguments and may return a mapping from a kind (``datasets``, ``datamodules``,
``tasks``, ``losses``) to the classes (or class names) it adds. A module is
described by inspecting its public attributes. Importing the plugin is what makes
its classes visible to LightningCLI, so that bare class names resolve in YAML
configs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

#: Entry-point group in which TorchGeo plugins register themselves.
ENTRY_POINT_GROUP = 'torchgeo.plugins'

#: Kinds of components a plugin can add, in display order.
KINDS = ('datasets', 'datamodules', 'tasks', 'losses')


@dataclass(frozen=True)
class PluginInfo:
    """What is known about one discovered plugin.

    Attributes:
        name: Entry-point name.
        target: Entry-point value (``module`` or ``module:attribute``).
        distribution: Name of the distribution that declares the entry point.
        version: Version of that distribution.
        components: Class names the plugin adds, by kind.
        error: Why the plugin could not be loaded, or None when it loaded.
    """

    name: str
    target: str
    distribution: str | None
    version: str | None
    components: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the plugin loaded without error."""
        return self.error is None


class PluginLoadWarning(UserWarning):
    """Warning issued when a registered plugin fails to load."""


def register() -> dict[str, list[str]]:
    """Entry point of this package: import its components and list them.

    Importing the subpackages registers their classes as subclasses of TorchGeo's
    base classes, which is what lets LightningCLI resolve their bare names.

    Returns:
        The dataset, datamodule, task and loss class names this package adds.
    """
    from torchgeo_macl import datamodules, datasets, losses, tasks

    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for module, expected in zip((datasets, datamodules, tasks, losses), KINDS):
        classes = [
            obj
            for obj in (getattr(module, n) for n in module.__all__)
            if inspect.isclass(obj)
        ]
        for cls in classes:
            kind = _classify(cls)
            # shared base classes (extended by another export) are not listed
            is_base = any(c is not cls and issubclass(c, cls) for c in classes)
            if kind == expected and not is_base:
                found[kind].append(cls.__name__)
    return {kind: sorted(names) for kind, names in found.items()}


def _classify(obj: Any) -> str | None:
    """Tell which kind of plugin component a class is.

    Args:
        obj: Any attribute of a plugin module.

    Returns:
        One of :data:`KINDS`, or None when the object is none of them.
    """
    if not inspect.isclass(obj):
        return None
    import torch
    from lightning.pytorch import LightningDataModule, LightningModule

    if issubclass(obj, LightningDataModule):
        return 'datamodules'
    if issubclass(obj, LightningModule):
        return 'tasks'
    if issubclass(obj, torch.utils.data.Dataset):
        return 'datasets'
    if issubclass(obj, torch.nn.Module) and obj.__name__.endswith('Loss'):
        return 'losses'
    return None


def _names(items: Iterable[Any]) -> tuple[str, ...]:
    return tuple(sorted(i if isinstance(i, str) else i.__name__ for i in items))


def _describe(loaded: Any) -> dict[str, tuple[str, ...]]:
    """Describe what a loaded entry point adds.

    Args:
        loaded: The object the entry point resolved to.

    Returns:
        Class names by kind.

    Raises:
        TypeError: If a callable returns something other than a mapping.
    """
    if isinstance(loaded, ModuleType):
        public = getattr(loaded, '__all__', None) or [
            n for n in vars(loaded) if not n.startswith('_')
        ]
        found: dict[str, list[Any]] = {}
        for attr in public:
            kind = _classify(getattr(loaded, attr, None))
            if kind is not None:
                found.setdefault(kind, []).append(attr)
        return {k: _names(v) for k, v in found.items()}
    if callable(loaded):
        result = loaded()
        if result is None:
            return {}
        if not isinstance(result, Mapping):
            raise TypeError(
                f'plugin callable returned {type(result).__name__}, expected a '
                'mapping of kind to classes or None'
            )
        return {str(k): _names(v) for k, v in result.items()}
    kind = _classify(loaded)
    return {kind: _names([loaded])} if kind else {}


def _load(
    ep: importlib.metadata.EntryPoint,
    loader: Callable[[importlib.metadata.EntryPoint], Any],
) -> PluginInfo:
    dist = getattr(ep, 'dist', None)
    dist_name = dist.metadata['Name'] if dist is not None else None
    version = dist.version if dist is not None else None
    try:
        components = _describe(loader(ep))
    except Exception as exc:  # noqa: BLE001 (a plugin may raise anything on import)
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f' ({last[0].filename}:{last[0].lineno})' if last else ''
        error = f'{type(exc).__name__}: {exc}{where}'
        warnings.warn(
            f'TorchGeo plugin {ep.name!r} ({ep.value}) from '
            f'{dist_name or "an unknown distribution"} failed to load and was '
            f'skipped: {error}',
            PluginLoadWarning,
            stacklevel=3,
        )
        return PluginInfo(ep.name, ep.value, dist_name, version, {}, error)
    return PluginInfo(ep.name, ep.value, dist_name, version, components)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> Any:
    if ep.attr is None:
        return importlib.import_module(ep.module)
    return ep.load()


def discover_plugins(group: str = ENTRY_POINT_GROUP) -> list[PluginInfo]:
    """Import every plugin registered in an entry-point group.

    A plugin that fails to import is reported (a :class:`PluginLoadWarning` and
    :attr:`PluginInfo.error`) instead of raising, so one broken plugin cannot
    break the command line.

    Args:
        group: Entry-point group to scan.

    Returns:
        One record per entry point, sorted by name.
    """
    eps = importlib.metadata.entry_points(group=group)
    unique = {(ep.name, ep.value): ep for ep in eps}
    return [_load(ep, _load_entry_point) for _, ep in sorted(unique.items())]
