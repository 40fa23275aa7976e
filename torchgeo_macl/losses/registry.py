"""The losses by name, filled by :func:`register_loss` in each loss's own module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from .base import ContrastiveLossBase

__all__ = ('LOSSES', 'get_loss', 'register_loss')

_L = TypeVar('_L', bound=type[ContrastiveLossBase])

_REGISTRY: dict[str, type[ContrastiveLossBase]] = {}

#: Losses by registry name, in the order they were registered (read-only).
LOSSES: Mapping[str, type[ContrastiveLossBase]] = MappingProxyType(_REGISTRY)


def _key(name: str) -> str:
    return name.strip().lower().replace('-', '_')


def register_loss(name: str) -> Callable[[_L], _L]:
    """Register a loss class under a name, as a class decorator.

    Args:
        name: Registry name: lower case, digits and underscores, starting with a
            letter (e.g. ``jaccard_supcon``).

    Returns:
        A decorator that registers the class and returns it unchanged.

    Raises:
        ValueError: If the name is malformed or already taken.
    """
    if not (name.isidentifier() and name == _key(name) and name[0] != '_'):
        raise ValueError(
            f'loss names are lower case with underscores, like jaccard_supcon; '
            f'got {name!r}'
        )

    def decorator(cls: _L) -> _L:
        if not (isinstance(cls, type) and issubclass(cls, ContrastiveLossBase)):
            raise TypeError(
                f'{cls!r} registered as the {name!r} loss is not a subclass of '
                'ContrastiveLossBase'
            )
        if name in _REGISTRY:
            raise ValueError(
                f'the loss name {name!r} is taken by {_REGISTRY[name].__qualname__}'
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_loss(name: str, **kwargs: Any) -> ContrastiveLossBase:
    """Build a loss by its registry name.

    Args:
        name: A key of :data:`LOSSES` (case-insensitive; ``-`` is read as ``_``).
        **kwargs: Keyword arguments of the loss class.

    Returns:
        The loss module.

    Raises:
        ValueError: If ``name`` is unknown.
    """
    key = _key(name)
    if key not in _REGISTRY:
        raise ValueError(f'Unknown loss {name!r}; choose one of {sorted(_REGISTRY)}')
    return _REGISTRY[key](**kwargs)
