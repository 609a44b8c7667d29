import json

import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage.errors import ManifestError
from storage.shardset import ShardSet
from tests.shard_fixtures import manifest_file


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, dask_address):
    out = tmp_path_factory.mktemp("m") / "shards"
    build_shards(BuildConfig(out=str(out), dask_address=dask_address, workers=3, family="pca"))
    return out


def test_manifest_describes_the_set(shard_dir):
    m = ShardSet(shard_dir, verify_checksums=True).manifest
    assert m.workers == 3 and m.family.name == "pca" and m.columns.dim == 64
    assert m.label.num_classes == 10 and len(m.source.fingerprint) == 64
    assert (shard_dir / m.family.params).is_file()


def test_reader_refuses_a_folder_without_manifest(tmp_path):
    (tmp_path / "shard-00000-of-00001.parquet").write_bytes(b"")
    with pytest.raises(ManifestError, match="has no committed manifest"):
        ShardSet(tmp_path)


def test_reader_refuses_changed_files(shard_dir, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    m = json.loads(manifest_file(copy).read_text())
    victim = copy / m["shards"][1]["files"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(ManifestError, match="bytes, the manifest says"):
        ShardSet(copy)
    manifest_file(copy).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ShardSet(copy)
