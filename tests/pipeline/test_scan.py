"""The scan pass's row checks."""

import numpy as np
import pytest

from pipeline.scan import finite_rows

BIG = np.finfo(np.float32).max


@pytest.mark.parametrize("values", [[np.nan], [np.inf], [-np.inf], [np.inf, -np.inf], [np.nan, np.inf]])
def test_a_row_holding_nan_or_inf_is_not_finite(values):
    x = np.random.default_rng(0).standard_normal((50, 8), dtype=np.float32)
    x[7, :len(values)] = values
    x[30, -len(values):] = values
    expected = np.ones(50, bool)
    expected[[7, 30]] = False
    np.testing.assert_array_equal(finite_rows(x), expected)


def test_finite_values_whose_sum_overflows_are_finite():
    x = np.ones((4, 64), np.float32)
    x[1] = BIG  # the row's float32 sum is inf, its values are not
    x[2, :2] = [BIG, -BIG]
    x[3, 5] = np.nan
    np.testing.assert_array_equal(finite_rows(x), [True, True, True, False])


def test_agrees_with_isfinite_on_random_patterns():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 64), dtype=np.float32) * rng.choice([1, 1e37], (20_000, 1)).astype(np.float32)
    spots = rng.integers(0, x.size, 300)
    x.reshape(-1)[spots] = rng.choice([np.nan, np.inf, -np.inf, BIG, -BIG], len(spots))
    np.testing.assert_array_equal(finite_rows(x), np.isfinite(x).all(axis=1))


def test_no_rows_or_one_column():
    assert finite_rows(np.zeros((0, 3), np.float32)).shape == (0,)
    np.testing.assert_array_equal(finite_rows(np.array([[1.0], [np.inf]], np.float32)), [True, False])
