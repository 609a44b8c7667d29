"""build_shards end to end on real Parquet files and a real Dask LocalCluster (no Prefect)."""

import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from pipeline import blockshuffle, resident, scratch
from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.families import HashFamily
from storage.dataset import open_source
from storage.errors import InputError
from storage.shardset import ShardSet
from tests.conftest import mixture, write_parquet


def build(tmp_path, dask_address, name="shards", **kw):
    cfg = BuildConfig(out=str(tmp_path / name), dask_address=dask_address, **kw)
    return build_shards(cfg), ShardSet(tmp_path / name)


@pytest.fixture(scope="module")
def digits_aligned(tmp_path_factory, dask_address):
    tmp = tmp_path_factory.mktemp("digits")
    return build(tmp, dask_address, workers=4, family="kmeans", order="aligned", seed=5)


def test_every_source_row_lands_exactly_once(digits_aligned):
    manifest, shards = digits_aligned
    rows = np.concatenate([shards.read_shard(i)[2] for i in range(4)] + [shards.read_validation()[2]])
    assert len(rows) == len(np.unique(rows)) == manifest.source.rows == 1797
    assert sum(manifest.rows_per_shard) + manifest.validation.rows == 1797
    assert 120 < manifest.validation.rows < 240  # seeded 10 %


def test_rows_keep_their_features_and_labels(digits_aligned):
    _, shards = digits_aligned
    ds = open_source("demo:digits", label="label")
    table = ds.read_table(ds.chunks()[0])
    x_src, y_src = ds.features(table), ds.labels(table)
    x, y, rows = shards.read_shard(2)
    np.testing.assert_array_equal(x, x_src[rows])
    np.testing.assert_array_equal(y, y_src[rows])


def test_row_k_of_every_shard_comes_from_the_same_group(digits_aligned):
    manifest, shards = digits_aligned
    family = HashFamily.load(shards.family_folder())
    parts = [shards.read_shard(i) for i in range(4)]
    x = np.concatenate([p[0] for p in parts])
    rows = np.concatenate([p[2] for p in parts])
    bucket, key = family.encode(x)
    sequence = np.lexsort((rows, key, family.rank(bucket)))
    group_of_row = dict(zip(rows[sequence].tolist(), (np.arange(len(rows)) // 4).tolist()))
    n = min(manifest.rows_per_shard)
    groups = np.array([[group_of_row[r] for r in p[2][:n]] for p in parts])
    assert (groups == groups[0]).all()
    assert manifest.groups == n and manifest.partial_group == sum(manifest.rows_per_shard) % 4


def test_aligned_order_mixes_buckets_within_a_batch(digits_aligned):
    """Dealing groups in bucket order would make each 32-row window single-cluster; shuffled groups must not."""
    _, shards = digits_aligned
    family = HashFamily.load(shards.family_folder())
    x = shards.read_shard(0)[0]
    bucket = family.encode(x)[0]

    def distinct_per_window(b):
        return np.mean([len(set(b[s:s + 32])) for s in range(0, len(b) - 31, 32)])

    aligned = distinct_per_window(bucket)
    random = np.mean([distinct_per_window(np.random.default_rng(s).permutation(bucket)) for s in range(5)])
    bucket_sorted = distinct_per_window(np.sort(bucket))
    assert aligned > 0.8 * random and aligned > 3 * bucket_sorted


def test_aligned_groups_are_tighter_than_random(digits_aligned, tmp_path, dask_address):
    aligned, _ = digits_aligned
    random, _ = build(tmp_path, dask_address, workers=4, order="random", seed=5)
    assert aligned.quality["group_tightness"] < 0.8
    assert 0.85 < random.quality["group_tightness"] < 1.15
    assert aligned.quality["knn_recall_at_10"] > 0.5
    assert random.family is None
    diverse, shards = build(tmp_path, dask_address, "diverse", workers=4, order="diverse", seed=5)
    assert diverse.quality["group_tightness"] > random.quality["group_tightness"], diverse.quality
    assert diverse.rows_per_shard == aligned.rows_per_shard and diverse.family is not None


def test_label_distance_matches_the_labels_in_the_files(digits_aligned):
    manifest, shards = digits_aligned
    labels = [shards.read_shard(i)[1] for i in range(4)]
    whole = np.bincount(np.concatenate(labels), minlength=10) / sum(len(y) for y in labels)
    expected = [0.5 * np.abs(np.bincount(y, minlength=10) / len(y) - whole).sum() for y in labels]
    assert np.allclose(manifest.quality["label_distance"], expected, atol=1e-6)
    assert max(expected) > 0  # not trivially zero


def test_same_seed_gives_identical_files_whatever_the_shuffle(digits_aligned, tmp_path, dask_address,
                                                              monkeypatch, caplog):
    import logging

    first, _ = digits_aligned  # built with shuffle_method auto (blocks for data this small), source held
    monkeypatch.setattr(resident, "MEMORY_SHARE", 0.0)  # every pass reads from storage
    again, _ = build(tmp_path, dask_address, workers=4, family="kmeans", order="aligned", seed=5,
                     shuffle_method="p2p", chunk_rows=500)
    # not held, and a memory share of about 2 part files (~450 rows of 280 bytes each): the blocks shuffle
    # writes in waves
    with Client(dask_address) as client:
        monkeypatch.setattr(resident, "MEMORY_SHARE", 250_000 / resident.cluster_memory(client))
    with caplog.at_level(logging.INFO, logger="simshard"):
        blocks, _ = build(tmp_path, dask_address, "blocks", workers=4, family="kmeans", order="aligned", seed=5,
                          shuffle_method="auto", chunk_rows=300)
    assert "source not kept in cluster memory" in caplog.text
    assert re.search(r"write pass in ([3-9]|\d\d) waves", caplog.text), caplog.text
    with Client(dask_address) as client:  # the writers' reusable arrays are gone from the workers
        assert set(client.run(lambda: __import__("pipeline.scratch").scratch.held()).values()) == {0}
    monkeypatch.undo()
    # one in-process worker holds every chunk: the writers gather from the chunks in place
    in_place, _ = build(tmp_path, None, "in-place", workers=4, family="kmeans", order="aligned", seed=5,
                        dask_cluster="threads", chunk_rows=400)
    assert scratch.held() == 0
    other, _ = build(tmp_path, dask_address, "other", workers=4, family="kmeans", order="aligned", seed=6)
    digest = lambda m: [f.sha256 for s in m.shards for f in s.files]  # noqa: E731
    assert digest(first) == digest(again) == digest(blocks) == digest(in_place)
    assert digest(first) != digest(other)


@pytest.mark.parametrize("family", ["lsh", "pca", "itq"])
def test_sign_families_on_a_multi_file_source_with_part_folders(family, tmp_path, dask_address):
    x, y = mixture(6000, dim=8, clusters=6, seed=1)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        write_parquet(src / f"part-{i}.parquet", x[i * 2000:(i + 1) * 2000], y[i * 2000:(i + 1) * 2000],
                      row_group_size=700)
    manifest, shards = build(tmp_path, dask_address, source=str(src), workers=3, family=family,
                             rows_per_part=700, chunk_rows=1000, remainder="drop", validation_fraction=0.2)
    assert len(set(manifest.rows_per_shard)) == 1 and manifest.dropped.remainder_rows < 3
    base = f"data/{manifest.build_id}"
    assert all(len(s.files) > 1 and s.files[0].path.startswith(f"{base}/shard-{s.index:05d}-of-00003/")
               for s in manifest.shards)
    rows = np.concatenate([shards.read_shard(i)[2] for i in range(3)] + [shards.read_validation()[2]])
    assert len(np.unique(rows)) == 6000 - manifest.dropped.remainder_rows
    assert manifest.quality["group_tightness"] < 0.8


def test_list_column_features_and_contiguous_order(tmp_path, dask_address):
    x, y = mixture(1000, dim=4, seed=2)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)
    pq.write_table(pa.table({"emb": emb, "label": y}), tmp_path / "emb.parquet")
    manifest, shards = build(tmp_path, dask_address, source=str(tmp_path / "emb.parquet"), workers=2,
                             order="contiguous", validation_fraction=0.0)
    assert manifest.columns.layout == "list" and manifest.columns.features == ["emb"]
    got_x, _, rows = shards.read_shard(1)
    assert (np.diff(rows) == 1).all() and rows[0] == 500
    np.testing.assert_array_equal(got_x, x[rows])


def test_nan_rows_dropped_and_counted(tmp_path, dask_address):
    x, y = mixture(500, dim=3, seed=4)
    x[[3, 10, 11], 1] = np.nan
    x[20, 2] = np.inf
    write_parquet(tmp_path / "nan.parquet", x, y)
    manifest, shards = build(tmp_path, dask_address, source=str(tmp_path / "nan.parquet"), workers=2, nan="drop")
    assert manifest.dropped.nonfinite_rows == 4
    rows = np.concatenate([shards.read_shard(i)[2] for i in range(2)] + [shards.read_validation()[2]])
    assert len(rows) == 496 and not set(rows) & {3, 10, 11, 20}


def test_source_held_in_cluster_memory_is_released(tmp_path, dask_address):
    """A small source is read into worker memory once; those chunks are dropped after a failed and a good build,
    so a shared cluster does not fill up."""
    x, y = mixture(3000, dim=3, seed=4)
    x[7, 0] = np.nan
    write_parquet(tmp_path / "nan.parquet", x, y)

    def held_keys(client):
        return [k for keys in client.has_what().values() for k in keys if str(k).startswith("read-")]

    with Client(dask_address) as client:
        assert resident.fits(client, resident.source_bytes(open_source(str(tmp_path / "nan.parquet"))))
        with pytest.raises(InputError, match="NaN"):
            build(tmp_path, dask_address, source=str(tmp_path / "nan.parquet"), workers=2, chunk_rows=500)
        assert not client.list_datasets()
        manifest, _ = build(tmp_path, dask_address, source=str(tmp_path / "nan.parquet"), workers=2, nan="drop",
                            chunk_rows=500)
        assert manifest.dropped.nonfinite_rows == 1 and not client.list_datasets()
        for _ in range(50):  # the scheduler forgets released keys asynchronously
            if not held_keys(client):
                break
            time.sleep(0.1)
        assert held_keys(client) == []


def test_a_small_source_builds_on_an_in_process_cluster(tmp_path, caplog):
    import logging

    from pipeline.build import THREADS_MAX_SOURCE_BYTES, use_processes
    from storage.dataset import open_source

    cfg = BuildConfig(source="demo:digits", out=str(tmp_path / "s"), workers=3)
    assert not use_processes(cfg, open_source(cfg.source, label="label"))
    assert use_processes(cfg.model_copy(update={"dask_cluster": "processes"}), open_source(cfg.source))
    with caplog.at_level(logging.INFO, logger="simshard"):
        manifest = build_shards(cfg)
    assert "in-process worker" in caplog.text and THREADS_MAX_SOURCE_BYTES > 1797 * 64 * 4
    rows = np.concatenate([ShardSet(tmp_path / "s").read_shard(i)[2] for i in range(3)])
    assert len(rows) == len(np.unique(rows)) == sum(manifest.rows_per_shard)


def test_a_failed_build_frees_the_passes_reused_arrays(tmp_path, monkeypatch):
    held_when_failing = []

    def failing_write(tables, *args, **kwargs):
        next(iter(tables))  # the part's first row group is filled
        held_when_failing.append(scratch.held())
        raise RuntimeError("disk gone")

    monkeypatch.setattr(blockshuffle, "write_part_groups", failing_write)
    with pytest.raises(RuntimeError, match="disk gone"):
        build(tmp_path, None, workers=4, family="pca", dask_cluster="threads")
    assert held_when_failing and max(held_when_failing) > 0  # the writers had arrays to free
    assert scratch.held() == 0
