"""Argument checks shared across the package."""

from __future__ import annotations

import operator
from typing import SupportsIndex

__all__ = ('check_positive_int',)


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
