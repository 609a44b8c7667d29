"""Part files as written: columns, types and nullability."""

import numpy as np
import pyarrow.parquet as pq

from storage.dataset import FeatureSpec
from storage.shardset import part_table, write_part


def test_a_part_file_declares_every_column_non_null_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.standard_normal((1000, 3), dtype=np.float32))
    labels, rows = rng.integers(0, 5, 1000), np.arange(1000) * 7
    spec = FeatureSpec(columns=("a", "b", "c"), layout="columns", dim=3, label="y")
    info = write_part(part_table(x, labels, rows, spec), tmp_path / "p.parquet", label="y")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.names == ["a", "b", "c", "y", "source_row"]
    assert not any(f.nullable for f in table.schema)  # Parquet "required": no definition levels to encode
    np.testing.assert_array_equal(np.column_stack([table[c].to_numpy() for c in "abc"]), x)
    np.testing.assert_array_equal(table["y"].to_numpy(), labels)
    np.testing.assert_array_equal(table["source_row"].to_numpy(), rows)
    assert info["rows"] == 1000 and info["label_counts"] == np.bincount(labels).tolist()


def test_a_part_file_keeps_min_max_statistics_for_the_label_and_source_row_only(tmp_path):
    rng = np.random.default_rng(1)
    x = np.asfortranarray(rng.standard_normal((500, 2), dtype=np.float32))
    spec = FeatureSpec(columns=("a", "b"), layout="columns", dim=2, label="y")
    write_part(part_table(x, np.arange(500) % 3, np.arange(500) + 10, spec), tmp_path / "p.parquet", label="y")
    group = pq.ParquetFile(tmp_path / "p.parquet").metadata.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)}
    assert stats["a"] is None and stats["b"] is None
    assert (stats["y"].min, stats["y"].max) == (0, 2)
    assert (stats["source_row"].min, stats["source_row"].max) == (10, 509)
