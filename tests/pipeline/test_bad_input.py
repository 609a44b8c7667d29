"""Bad input: a clear error that names what is wrong, and no output (or staging) folder left behind."""

import numpy as np
import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage import commit
from storage.errors import InputError
from storage.shardset import ShardSet
from tests.conftest import mixture, write_parquet


@pytest.fixture
def good(tmp_path):
    x, y = mixture(200, dim=3)
    return write_parquet(tmp_path / "good.parquet", x, y)


def fails(tmp_path, dask_address, match, **kw):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=match):
        build_shards(BuildConfig(out=str(out), dask_address=dask_address, **kw))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "staging folder left behind"


def test_missing_source(tmp_path, dask_address):
    fails(tmp_path, dask_address, r"source '.*nope.parquet' does not exist", source=str(tmp_path / "nope.parquet"))


def test_empty_dataset(tmp_path, dask_address):
    write_parquet(tmp_path / "empty.parquet", np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    fails(tmp_path, dask_address, "is empty", source=str(tmp_path / "empty.parquet"))


def test_no_feature_columns(tmp_path, dask_address):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"name": ["a", "b"], "label": [0, 1]}), tmp_path / "s.parquet")
    fails(tmp_path, dask_address, "no feature columns", source=str(tmp_path / "s.parquet"))


def test_non_numeric_feature(tmp_path, dask_address):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"a": [1.0, 2.0], "name": ["x", "y"]}), tmp_path / "s.parquet")
    fails(tmp_path, dask_address, "feature column 'name' has non-numeric type string",
          source=str(tmp_path / "s.parquet"), features=["a", "name"])


def test_nan_names_column_and_count(tmp_path, dask_address):
    x, y = mixture(300, dim=3)
    x[[1, 2, 5], 2] = np.nan
    write_parquet(tmp_path / "nan.parquet", x, y)
    fails(tmp_path, dask_address, r"NaN or inf in feature column\(s\) 'c2': 3 .*--nan drop",
          source=str(tmp_path / "nan.parquet"))


def test_fewer_rows_than_workers(tmp_path, dask_address):
    x, y = mixture(3, dim=2)
    write_parquet(tmp_path / "tiny.parquet", x, y)
    fails(tmp_path, dask_address, "3 rows, fewer than --workers 8", source=str(tmp_path / "tiny.parquet"),
          workers=8)


def test_workers_below_one():
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        BuildConfig(workers=0)


def test_existing_output_without_overwrite(tmp_path, dask_address, good):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not a shard set simshard made"):
        build_shards(BuildConfig(source=str(good), out=str(out), dask_address=dask_address))
    assert (out / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_a_shard_set_simshard_made(tmp_path, dask_address, good):
    out = tmp_path / "out"
    build_shards(BuildConfig(source=str(good), out=str(out), dask_address=dask_address, workers=4))
    build_shards(BuildConfig(source=str(good), out=str(out), dask_address=dask_address, overwrite=True, workers=2))
    assert ShardSet(out).workers == 2 and commit.versions(out) == [1, 2]


def test_overwrite_refuses_a_folder_simshard_did_not_make(tmp_path, dask_address, good):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(InputError, match="old.txt"):
        build_shards(BuildConfig(source=str(good), out=str(out), dask_address=dask_address, overwrite=True))
    assert (out / "old.txt").read_text() == "old"


def test_corrupt_parquet_names_the_file(tmp_path, dask_address, good):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.parquet").write_bytes(good.read_bytes())
    (src / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    fails(tmp_path, dask_address, r"corrupt or unreadable Parquet file '.*b.parquet'", source=str(src))


def test_missing_label_column(tmp_path, dask_address, good):
    fails(tmp_path, dask_address, "label column 'target' does not exist", source=str(good), label="target")


def test_a_failed_build_keeps_the_empty_output_folder_the_user_made(tmp_path, dask_address):
    x, y = mixture(300, dim=3)
    x[5, 1] = np.nan
    write_parquet(tmp_path / "nan.parquet", x, y)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="NaN"):
        build_shards(BuildConfig(source=str(tmp_path / "nan.parquet"), out=str(out), dask_address=dask_address))
    assert out.is_dir() and not any(out.iterdir())
