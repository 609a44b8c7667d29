"""The built-in demo sources, generated into a fresh cache folder."""

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage import demo
from storage.errors import InputError


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSHARD_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_mnist1d_is_generated_locally_without_touching_the_global_generators(fresh_cache):
    np.random.seed(7)
    random.seed(7)
    numpy_next, python_next = np.random.get_state()[1][:5].copy(), random.getstate()
    path = demo.materialise("demo:mnist1d?rows=1005&seed=3")
    assert (np.random.get_state()[1][:5] == numpy_next).all() and random.getstate() == python_next
    table = pq.read_table(path)
    assert table.num_rows == 1000 and table.num_columns == 41  # rows rounded down to equal classes
    assert np.bincount(table.column("label").to_numpy()).tolist() == [100] * 10
    again = demo.write_mnist1d(fresh_cache / "again.parquet", rows=1005, seed=3)
    assert again is None and pq.read_table(fresh_cache / "again.parquet").equals(table)


@pytest.mark.parametrize("spec, message", [("demo:mnist1d?rows=abc", "rows='abc' must be an integer"),
                                           ("demo:mnist1d?colour=1", "unknown parameter 'colour'"),
                                           ("demo:mnist", "demo:mnist1d?rows=&seed=")])
def test_bad_demo_specs_are_named(spec, message, fresh_cache):
    with pytest.raises(InputError, match=message.replace("?", r"\?")):
        demo.materialise(spec)
