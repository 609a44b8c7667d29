"""The in-memory write pass scatters rows into place by key: every key exactly once, or the file is refused."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.blockshuffle import route_chunk, split_chunk, write_blocks
from pipeline.layout import Target
from storage.dataset import open_source
from storage.shardset import part_table, write_part
from tests.conftest import mixture, write_parquet


@pytest.fixture
def source(tmp_path):
    x, y = mixture(100, dim=5, seed=4)
    path = write_parquet(tmp_path / "src.parquet", x, y, row_group_size=40)  # 3 chunks of 40, 40 and 20 rows
    return open_source(str(path), label="label"), x, y


def blocks_for(ds, dest, targets):
    chunks = ds.chunks(40)
    return [split_chunk(c, None, dest[c.offset:c.offset + c.rows], ds=ds, targets=targets) for c in chunks]


def test_rows_land_at_their_keys_whatever_chunk_they_come_from(source, tmp_path):
    ds, x, y = source
    rng = np.random.default_rng(0)
    dest = np.full(100, -1, np.int64)
    kept = np.ones(100, bool)
    kept[[3, 50, 77]] = False  # dropped rows
    dest[kept] = rng.permutation(97)  # keys 0..59 -> file a, 60..96 -> file b
    targets = [Target("shard", 0, 0, "a.parquet", 0, 60), Target("shard", 1, 0, "b.parquet", 60, 37)]
    split = blocks_for(ds, dest, targets)
    assert len(split) == 3
    for t, target in enumerate(targets):
        info = write_blocks([s[t] for s in split], target, out=tmp_path, ds=ds, row_group_rows=16)
        table = pq.read_table(tmp_path / target.path)
        rows = table.column("source_row").to_numpy()
        assert info["rows"] == len(rows) and (np.diff(dest[rows]) == 1).all() and dest[rows][0] == target.first
        assert np.array_equal(table.column("c0").to_numpy(), x[rows, 0])
        assert np.array_equal(table.column("label").to_numpy(), y[rows])
        assert info["label_counts"] == np.bincount(y[rows]).tolist()
    assert sum(len(pq.read_table(tmp_path / t.path)) for t in targets) == kept.sum()


def test_a_repeated_or_lost_row_fails_the_file(source, tmp_path):
    ds, _, _ = source
    dest = np.arange(100, dtype=np.int64)
    target = Target("shard", 0, 0, "a.parquet", 0, 100)
    repeated = dest.copy()
    repeated[7] = 8  # key 7 gets no row, key 8 two
    with pytest.raises(RuntimeError, match="received no row"):
        write_blocks([s[0] for s in blocks_for(ds, repeated, [target])], target, out=tmp_path, ds=ds,
                     row_group_rows=16)
    lost = [s[0] for s in blocks_for(ds, dest, [target])]
    lost[1] = tuple(a[1:] for a in lost[1])  # one row of the second chunk never arrives
    with pytest.raises(RuntimeError, match="outside the file's range"):
        write_blocks(lost, target, out=tmp_path, ds=ds, row_group_rows=16)
    assert not (tmp_path / "a.parquet").exists()


def test_routes_keep_each_targets_rows_in_source_order_and_only_its_keys():
    dest = np.array([5, -1, 0, 7, 1, 6, -1, 2, 3], np.int64)
    a, b = Target("shard", 0, 0, "a", 0, 3), Target("shard", 1, 0, "b", 5, 3)  # keys 3 and 4 belong to no file
    (rows_a, keys_a), (rows_b, keys_b) = route_chunk(dest, targets=[a, b])
    assert rows_a.tolist() == [2, 4, 7] and keys_a.tolist() == [0, 1, 2]
    assert rows_b.tolist() == [0, 3, 5] and keys_b.tolist() == [5, 7, 6]
    (rows, keys), = route_chunk(dest, targets=[b])  # one wave's file: the others' rows stay out
    assert rows.tolist() == [0, 3, 5] and keys.tolist() == [5, 7, 6]


def test_a_file_filled_a_row_group_at_a_time_is_the_file_of_the_whole_table(source, tmp_path):
    ds, x, y = source
    dest = np.random.default_rng(2).permutation(100).astype(np.int64)
    target = Target("shard", 0, 0, "a.parquet", 0, 100)
    info = write_blocks([s[0] for s in blocks_for(ds, dest, [target])], target, out=tmp_path, ds=ds,
                        row_group_rows=16)
    rows = np.argsort(dest)  # the source row of each key
    whole = part_table(np.asfortranarray(x[rows]), y[rows], rows, ds.spec)
    again = write_part(whole, tmp_path / "b.parquet", label="label", row_group_rows=16)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert info == again and pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == 7
