"""Shard sets and indexes on an object store: moto's S3 server, read and written through s3fs."""

import json

import boto3
import botocore.exceptions
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.index import IndexConfig
from storage import commit, stream
from storage.errors import InputError, ManifestError
from storage.shardset import ShardSet, verify
from storage.torch_dataset import AlignedShards
from tests.cli_helpers import run_module
from tests.conftest import mixture, write_parquet
from tests.s3_fixtures import SECRET, s3fs
from train.config import TrainConfig
from train.simulate import simulate


def upload_source(bucket: str, tmp_path, rows: int = 6000) -> str:
    x, y = mixture(rows, dim=8, clusters=5, seed=1)
    write_parquet(tmp_path / "src.parquet", x, y, row_group_size=1000)
    s3fs().put(str(tmp_path / "src.parquet"), f"{bucket}/source/part-0.parquet")
    return f"{bucket}/source"


def keys(url: str) -> list[str]:
    fs = s3fs()
    fs.invalidate_cache()
    return sorted(fs.find(url))


def test_the_server_refuses_a_second_create_only_put_with_412(bucket):
    """The behaviour the commit relies on (moto 5.2.0 answered 500 here; moto is pinned)."""
    client, name = boto3.client("s3"), bucket.removeprefix("s3://")
    client.put_object(Bucket=name, Key="_manifests/00000001.json", Body=b"{}", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.put_object(Bucket=name, Key="_manifests/00000001.json", Body=b"{}", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_build_from_s3_to_s3_then_train_from_s3(bucket, tmp_path, dask_address, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source, out = upload_source(bucket, tmp_path), f"{bucket}/shards"
    local_before = sorted(p.name for p in tmp_path.iterdir())
    options = {"key": "simshard-test", "secret": SECRET}  # as a user might pass them: never written anywhere
    manifest = build_shards(BuildConfig(source=source, out=out, workers=3, family="pca", dask_address=dask_address,
                                        storage_options=options))
    assert sorted(p.name for p in tmp_path.iterdir()) == local_before, "the build wrote to the local disk"
    listed = keys(out)
    assert [k for k in listed if "/_manifests/" in k] == [f"{out.removeprefix('s3://')}/_manifests/00000001.json"]
    assert not [k for k in listed if "/_leases/" in k or "/_work/" in k], listed
    text = s3fs().cat(f"{out}/_manifests/00000001.json").decode()
    assert SECRET not in text and "storage_options" not in json.loads(text)["config"]
    shards = ShardSet(out)
    assert verify(out).files == len(manifest.all_files())  # every sha256 and page checksum, read from S3
    rows = np.concatenate([shards.read_shard(i)[2] for i in range(3)] + [shards.read_validation()[2]])
    assert np.array_equal(np.sort(rows), np.arange(6000)) and manifest.source.rows == 6000
    summary = simulate(TrainConfig(shards=out, out=str(tmp_path / "run"), optimizer="agn", epochs=6))
    assert summary["best_accuracy"] >= 0.9, summary


def test_an_index_on_s3_trains_online(bucket, tmp_path, dask_address):
    source, out = upload_source(bucket, tmp_path), f"{bucket}/index"
    build_shards(IndexConfig(source=source, out=out, family="pca", dask_address=dask_address).build_config(),
                 kind="index")
    summary = simulate(TrainConfig(index=out, out=str(tmp_path / "run"), optimizer="agn", epochs=4, workers=3))
    assert summary["best_accuracy"] >= 0.9 and summary["unseen_rows"] == 0, summary


@pytest.mark.parametrize("whole_files", [True, False], ids=["files fetched whole", "row groups read in place"])
def test_a_pytorch_dataloader_reads_aligned_shards_from_s3(whole_files, bucket, tmp_path, digits_shards,
                                                           monkeypatch):
    if not whole_files:
        monkeypatch.setattr(stream, "WHOLE_FILE_BYTES", 0)
    s3fs().put(str(digits_shards), f"{bucket}/digits", recursive=True)
    local = list(DataLoader(AlignedShards(digits_shards, batch_size=32, rank=1, world_size=4), batch_size=None))
    remote = list(DataLoader(AlignedShards(f"{bucket}/digits", batch_size=32, rank=1, world_size=4),
                             batch_size=None, **({"num_workers": 2, "multiprocessing_context": "spawn"}
                                                 if whole_files else {})))
    assert len(local) == len(remote) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(local, remote, strict=True))


def test_a_prefix_without_a_committed_manifest_is_no_shard_set(bucket):
    s3fs().pipe(f"{bucket}/half/data/abc/shard-00000-of-00002.parquet", b"PAR1")
    with pytest.raises(ManifestError, match="no committed manifest"):
        ShardSet(f"{bucket}/half")
    assert commit.versions(commit.urls.folder(f"{bucket}/half")) == []


def test_the_cli_builds_on_s3_with_storage_options_and_writes_nothing_locally(bucket, tmp_path, prefect_env):
    source, out = upload_source(bucket, tmp_path, rows=3000), f"{bucket}/cli-shards"
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**prefect_env, "AWS_SECRET_ACCESS_KEY": "wrong"}  # only the options' secret works
    res = run_module("flows.build_shards", "--source", source, "--out", out, "--workers", "2", "--family", "pca",
                     "--storage-options", json.dumps({"key": "simshard-test", "secret": SECRET}), cwd=work,
                     env=env)
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert "published 2 shards" in res.stdout and out in res.stdout
    assert not list(work.iterdir()), "the build wrote to the working directory"
    assert ShardSet(out).manifest.workers == 2


def test_a_run_folder_on_s3_is_uploaded_complete_and_protected(bucket, tmp_path, digits_shards):
    run = f"{bucket}/runs/agn"
    summary = simulate(TrainConfig(shards=str(digits_shards), out=run, optimizer="agn", epochs=3))
    names = {k.rsplit("/", 1)[-1] for k in keys(run)}
    assert {"simshard-run.json", "summary.json", "metrics.parquet", "model.pt", "checkpoint.pt",
            "accuracy.png"} <= names, names
    assert json.loads(s3fs().cat(f"{run}/summary.json"))["final_accuracy"] == summary["final_accuracy"]
    with pytest.raises(InputError, match="already exists; pass --overwrite or --resume"):
        simulate(TrainConfig(shards=str(digits_shards), out=run, optimizer="agn", epochs=3))
    resumed = simulate(TrainConfig(shards=str(digits_shards), out=run, optimizer="agn", epochs=5, resume=True))
    assert resumed["epochs"] == 5 and json.loads(s3fs().cat(f"{run}/summary.json"))["epochs"] == 5
    s3fs().pipe(f"{bucket}/runs/other/notes.txt", b"mine")
    with pytest.raises(InputError, match="notes.txt"):
        simulate(TrainConfig(shards=str(digits_shards), out=f"{bucket}/runs/other", overwrite=True))
    assert s3fs().cat(f"{bucket}/runs/other/notes.txt") == b"mine"
