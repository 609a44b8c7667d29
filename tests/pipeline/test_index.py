"""build_index on a real LocalCluster: one locality-ordered sequence and a bucket table that says where each
bucket's rows are."""

import numpy as np

from pipeline.build import build_shards
from pipeline.families import HashFamily
from pipeline.index import IndexConfig
from storage.index import BucketIndex
from storage.shardset import ShardSet


def build(tmp_path, dask_address, **kw):
    config = IndexConfig(out=str(tmp_path / "index"), dask_address=dask_address, **kw)
    return build_shards(config.build_config(), kind="index"), ShardSet(tmp_path / "index")


def test_digits_index_holds_every_training_row_once_in_bucket_order(digits_index):
    index = ShardSet(digits_index)
    m = index.manifest
    x, _, rows = index.read_shard(0)
    _, _, validation = index.read_validation()
    assert m.kind == "index" and len(np.unique(rows)) == len(rows) == m.rows_per_shard[0]
    assert set(rows.tolist()).isdisjoint(validation.tolist())
    assert len(rows) + len(validation) == m.source.rows == 1797
    family = HashFamily.load(index.family_folder())
    bucket, _ = family.encode(x)
    rank = family.rank(bucket)
    assert (np.diff(rank) >= 0).all(), "rows are not in locality order"
    table = m.buckets
    assert table.bucket == sorted(set(rank.tolist())) and sum(table.rows) == len(rows)
    for b, n, first in zip(table.bucket, table.rows, table.first_row):  # one file: first_row is the position
        assert (rank[first:first + n] == b).all()
    q = m.quality
    assert q["buckets"] == len(table.rows) and q["max_bucket_rows"] == max(table.rows)
    assert q["knn_recall_at_10"] > 0.5


def test_buckets_that_cross_part_files_are_read_whole(tmp_path, dask_address):
    manifest, index = build(tmp_path, dask_address, family="pca", size=3, rows_per_part=300, row_group_rows=64)
    files = manifest.shards[0].files
    assert len(files) == 6, [f.path for f in files]
    x, y, rows = index.read_shard(0)
    reader = BucketIndex(index, cache_bytes=1 << 20, seed=0)
    for b, n in enumerate(manifest.buckets.rows):
        got = reader.read(reader.positions(0, [(b, 0, n)]))
        start = int(reader.bucket_start[b])
        want = np.sort(rows[start:start + n])
        np.testing.assert_array_equal(np.sort(got[2]), want)
        order = np.argsort(got[2])
        np.testing.assert_array_equal(got[0][order], x[start:start + n][np.argsort(rows[start:start + n])])
    assert reader.cache.bytes <= 1 << 20


def test_same_seed_gives_the_same_index(tmp_path, dask_address):
    a, _ = build(tmp_path / "a", dask_address, family="pca", seed=2)
    b, _ = build(tmp_path / "b", dask_address, family="pca", seed=2)
    assert a.buckets == b.buckets and [f.sha256 for f in a.all_files()] == [f.sha256 for f in b.all_files()]
