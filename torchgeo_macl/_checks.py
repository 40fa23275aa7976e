"""Argument checks shared across the package."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import SupportsIndex

__all__ = ('check_fraction', 'check_ks', 'check_positive_int')


def check_positive_int(value: object, name: str) -> int:
    """Check that a value is an integer of at least 1.

    Args:
        value: The value (any object with ``__index__``, not a bool).
        name: Argument name used in messages.

    Returns:
        The value as an int.

    Raises:
        TypeError: If it is not an integer.
        ValueError: If it is below 1.
    """
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f'{name} must be a positive integer, got {value!r}')
    result = operator.index(value)
    if result < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return result


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Check retrieval cut-offs.

    Args:
        ks: The cut-offs ``k``, each a positive integer.

    Returns:
        The distinct cut-offs in increasing order.

    Raises:
        TypeError: If ``ks`` is not iterable or a cut-off is not an integer.
        ValueError: If ``ks`` is empty or a cut-off is below 1.
    """
    if not isinstance(ks, Iterable):
        raise TypeError(f'ks must be an iterable of positive integers, got {ks!r}')
    values = {check_positive_int(k, 'every k in ks') for k in ks}
    if not values:
        raise ValueError('ks must contain at least one value of k')
    return tuple(sorted(values))


def check_fraction(value: float, name: str) -> float:
    """Check that a value lies in the interval (0, 1].

    Args:
        value: The value.
        name: Argument name used in messages.

    Returns:
        The value.

    Raises:
        ValueError: If it is not in (0, 1].
    """
    if not 0.0 < value <= 1.0:
        raise ValueError(f'{name} must be in (0, 1], got {value}')
    return value
