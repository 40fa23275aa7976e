import numpy as np
import pytest

from torchgeo_macl._checks import check_positive_int


def test_check_positive_int() -> None:
    assert check_positive_int(3, 'k') == 3
    assert check_positive_int(np.int64(2), 'k') == 2
    for value in (True, 1.5, '3', None):
        with pytest.raises(TypeError, match='k must be a positive integer'):
            check_positive_int(value, 'k')
    for value in (0, -2):
        with pytest.raises(
            ValueError, match=f'k must be a positive integer, got {value}'
        ):
            check_positive_int(value, 'k')
