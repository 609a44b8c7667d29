"""The commit protocol: SIGKILL at every step of the publish sequence never shows a reader a partial set, a later
build removes what the killed one left, and of two concurrent builds into one output exactly one commits."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage import commit, urls
from storage.errors import ManifestError
from storage.faults import POINTS
from storage.shardset import ShardSet, verify
from tests.cli_helpers import ROOT, assert_one_error_line
from tests.conftest import mixture, write_parquet


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    x, y = mixture(3000, dim=6)
    return write_parquet(tmp_path_factory.mktemp("src") / "src.parquet", x, y)


def build_in_a_process(source, out, dask_address, *, env=None, seed=0, overwrite=False) -> subprocess.Popen:
    """A build in a process of its own (so that it can be killed), on the test session's Dask cluster."""
    code = ("import sys; from pipeline.build import build_shards; from pipeline.config import BuildConfig; "
            f"build_shards(BuildConfig(source={str(source)!r}, out={str(out)!r}, workers=3, family='pca', "
            f"seed={seed}, overwrite={overwrite}, dask_address={dask_address!r}))")
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    """The output folder: on the local disk, or a prefix on the moto S3 server."""
    if request.param == "local":
        return tmp_path / "shards"
    return urls.folder(f"{request.getfixturevalue('bucket')}/shards")


def data_prefixes(out) -> set[str]:
    return {p.name for p in (out / commit.DATA).iterdir()} if (out / commit.DATA).is_dir() else set()


@pytest.mark.parametrize("point", POINTS)
def test_a_build_killed_while_replacing_a_set_never_shows_a_partial_one(point, source, out, dask_address):
    first = build_shards(BuildConfig(source=str(source), out=str(out), workers=3, family="pca",
                                     dask_address=dask_address))
    proc = build_in_a_process(source, out, dask_address, env={"SIMSHARD_FAULT": point}, seed=1, overwrite=True)
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read()
    seen = ShardSet(out).manifest  # a reader sees one complete set: the old one, or the new one once committed
    verify(out)
    if point == "after-commit":
        assert seen.build_id != first.build_id and commit.versions(out) == [1, 2]
    else:
        assert seen.build_id == first.build_id and commit.versions(out) == [1]
    leftovers = data_prefixes(out) - {seen.build_id, first.build_id}
    assert leftovers or point == "after-commit", "the killed build's data should still be there"
    again = build_shards(BuildConfig(source=str(source), out=str(out), workers=3, family="pca", seed=2,
                                     overwrite=True, dask_address=dask_address))
    assert ShardSet(out).manifest.build_id == again.build_id
    assert data_prefixes(out) <= {again.build_id, seen.build_id}, "what the killed build left was not removed"
    assert not list((out / commit.LEASES).glob("*.json"))


def test_a_first_build_killed_before_its_commit_leaves_nothing_readable(source, out, dask_address):
    proc = build_in_a_process(source, out, dask_address, env={"SIMSHARD_FAULT": "before-commit"})
    assert proc.wait(120) == -signal.SIGKILL
    with pytest.raises(ManifestError, match="has no committed manifest"):
        ShardSet(out)
    rerun = build_shards(BuildConfig(source=str(source), out=str(out), workers=3, family="pca",
                                     dask_address=dask_address))  # no --overwrite needed: nothing was committed
    assert data_prefixes(out) == {rerun.build_id} and commit.versions(out) == [1]


def test_of_two_concurrent_builds_exactly_one_commits(source, out, tmp_path, dask_address, prefect_env):
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {"SIMSHARD_HOLD": f"before-commit:{hold}", **prefect_env}
    procs = [subprocess.Popen([sys.executable, "-m", "flows.build_shards", "--source", str(source), "--out", str(out),
                               "--workers", "3", "--family", "pca", "--seed", str(seed), "--dask-address",
                               dask_address], env=dict(os.environ, PYTHONPATH=str(ROOT), **env), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    deadline = time.time() + 180
    while len(list(hold.glob("*.reached"))) < 2 and time.time() < deadline:
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.1)
    (hold / "go").touch()  # both have their data written and measured: let them race for version 1
    codes = [p.wait(120) for p in procs]
    assert sorted(codes) == [0, 1], codes
    loser = procs[codes.index(1)]
    res = subprocess.CompletedProcess(loser.args, 1, "", loser.stderr.read())
    assert_one_error_line(res, f"output {out} is taken", "another build committed version 1 first", code=1)
    assert commit.versions(out) == [1]
    assert data_prefixes(out) == {ShardSet(out).manifest.build_id}, "the loser left its data behind"


def test_a_live_lease_protects_its_prefix(tmp_path):
    out = tmp_path / "shards"
    for build_id in ("alive", "dead"):
        (out / commit.DATA / build_id).mkdir(parents=True)
    commit.take_lease(out, "alive")  # this process: alive
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    (out / commit.LEASES / "dead.json").write_text(json.dumps(
        {"build_id": "dead", "host": os.uname().nodename, "pid": 2 ** 22 + 12345, "started": started}))
    assert commit.collect(out) == ["dead"]
    assert data_prefixes(out) == {"alive"} and (out / commit.LEASES / "alive.json").is_file()


def test_overwrite_upgrades_a_format_1_set_and_removes_its_files(source, tmp_path, dask_address):
    out = tmp_path / "old"
    out.mkdir()
    (out / "shard-00000-of-00001.parquet").write_bytes(source.read_bytes())
    (out / "manifest.json").write_text(json.dumps({
        "format": "simshard.shards", "format_version": 1, "validation": {"files": []},
        "shards": [{"index": 0, "files": [{"path": "shard-00000-of-00001.parquet"}]}]}))
    with pytest.raises(ManifestError, match="older simshard"):
        ShardSet(out)
    built = build_shards(BuildConfig(source=str(source), out=str(out), workers=3, family="pca", overwrite=True,
                                     dask_address=dask_address))
    assert ShardSet(out).manifest.build_id == built.build_id
    assert sorted(p.name for p in out.iterdir()) == [commit.MANIFESTS, commit.DATA]
