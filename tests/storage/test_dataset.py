"""Reading a source's chunks: the values as stored, whichever buffer or cached footer the read goes through."""

import numpy as np

from storage.dataset import open_source
from tests.conftest import mixture, write_parquet


def test_chunks_read_into_a_reused_buffer_hold_the_stored_values(tmp_path):
    x, y = mixture(90, dim=6, seed=1)
    ds = open_source(str(write_parquet(tmp_path / "a.parquet", x, y, row_group_size=30)), label="label")
    buffer = np.empty((30, 6), np.float32)
    for chunk in ds.chunks(30):
        for row_major in (False, True):
            got = ds.read_arrays(chunk, row_major=row_major, out=buffer)
            assert np.shares_memory(got.features, buffer)
            assert np.array_equal(got.features, x[chunk.offset:chunk.offset + chunk.rows])
            assert np.array_equal(got.labels, y[chunk.offset:chunk.offset + chunk.rows])


def test_a_rewritten_file_is_read_with_its_own_footer(tmp_path):
    path = tmp_path / "a.parquet"
    x, y = mixture(90, dim=6, seed=1)
    first = open_source(str(write_parquet(path, x, y, row_group_size=30)), label="label")
    assert np.array_equal(first.read_arrays(first.chunks(30)[1]).features, x[30:60])  # footer now cached
    x2, y2 = mixture(90, dim=6, seed=2)
    write_parquet(path, x2, y2, row_group_size=45)  # same path: other row groups and values
    second = open_source(str(path), label="label")
    chunk = second.chunks(45)[1]
    assert (chunk.offset, chunk.rows) == (45, 45)
    assert np.array_equal(second.read_arrays(chunk).features, x2[45:])
