import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.index import IndexConfig
from storage import commit


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory, dask_address):
    out = tmp_path_factory.mktemp("train") / "digits-4"
    build_shards(BuildConfig(out=str(out), dask_address=dask_address, workers=4, family="kmeans", seed=0))
    return out


@pytest.fixture(scope="session")
def blob_shards(tmp_path_factory, dask_address):
    """Larger shards (about 9,000 rows each) so that a run lasts long enough to kill a process in it."""
    out = tmp_path_factory.mktemp("train") / "blobs-3"
    build_shards(BuildConfig(source="demo:blobs?rows=30000&dim=16&clusters=8&seed=1", out=str(out),
                             dask_address=dask_address, workers=3, family="pca"))
    return out


@pytest.fixture(scope="session")
def digits_index(tmp_path_factory, dask_address):
    out = tmp_path_factory.mktemp("train") / "digits-index"
    build_shards(IndexConfig(out=str(out), dask_address=dask_address).build_config(), kind="index")
    return out


@pytest.fixture(scope="session")
def blob_index(tmp_path_factory, dask_address):
    """An index of 27,000 training rows in 128-row row groups (about 1.9 MiB of row groups in all)."""
    out = tmp_path_factory.mktemp("train") / "blobs-index"
    build_shards(IndexConfig(source="demo:blobs?rows=30000&dim=16&clusters=8&seed=1", out=str(out),
                             dask_address=dask_address, family="pca", row_group_rows=128).build_config(),
                 kind="index")
    return out


def manifest_file(folder):
    """The committed manifest a reader of ``folder`` uses."""
    path = commit.current(folder)
    assert path is not None, f"{folder} has no committed manifest"
    return path


def listed_file(folder, name: str):
    """The file of the current manifest whose path ends with ``name`` (e.g. a shard file)."""
    import json
    manifest = json.loads(manifest_file(folder).read_text())
    paths = [f["path"] for s in manifest["shards"] for f in s["files"]] + \
        [f["path"] for f in manifest["validation"]["files"]]
    (path,) = [p for p in paths if p.endswith(name)]
    return folder / path
