"""Resumable builds: a build SIGKILLed part-way through its write pass, started again with the same source and
parameters, reuses the scan, the family, the bucket codes and every part file already written."""

import os
import signal
import subprocess
import sys

import pytest

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage import commit, resume
from storage.shardset import ShardSet
from tests.cli_helpers import ROOT
from tests.conftest import mixture, write_parquet

PARAMS = dict(workers=3, family="pca", rows_per_part=250)  # 6,000 rows: 27 part files (24 shard, 3 validation)


@pytest.fixture
def source(tmp_path):
    x, y = mixture(6000, dim=6, seed=4)
    (tmp_path / "src").mkdir()
    return write_parquet(tmp_path / "src" / "src.parquet", x, y, row_group_size=500)


def killed_build(source, out, dask_address, *, after_parts: int, **params) -> None:
    """A build in a process of its own, SIGKILLed once the driver has seen ``after_parts`` part files finish."""
    config = {**PARAMS, **params, "source": str(source), "out": str(out), "dask_address": dask_address}
    code = ("from pipeline.build import build_shards; from pipeline.config import BuildConfig; "
            f"build_shards(BuildConfig(**{config!r}))")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                                 SIMSHARD_FAULT=f"part-written:{after_parts}"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def part_files(out) -> dict[str, int]:
    """{path under the output: inode and mtime} of every Parquet file there."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (out / commit.DATA).rglob("*.parquet")}


def test_a_build_killed_in_its_write_pass_resumes_and_matches_a_clean_build(source, tmp_path, dask_address, caplog):
    out = tmp_path / "shards"
    killed_build(source, out, dask_address, after_parts=20)
    (prefix,) = (out / commit.DATA).iterdir()
    before = part_files(out)
    finished = resume.finished_parts(prefix)
    # usually a few are left to write; tasks the killed driver had already sent may still finish on the
    # cluster before the scheduler notices it is gone, and then every part is reused
    assert len(finished) >= 20
    with pytest.raises(Exception, match="no committed manifest"):
        ShardSet(out)  # nothing of the killed build is visible
    caplog.set_level("INFO", logger="simshard")
    resumed = build_shards(BuildConfig(source=str(source), out=str(out), dask_address=dask_address, **PARAMS))
    assert resumed.build_id == prefix.name
    text = caplog.text
    for reused in ("scan and sample: reused", "family: reused", "bucket codes and deal: reused",
                   "part file(s) reused"):
        assert reused in text, text
    after = part_files(out)
    assert len(after) == 27
    untouched = {p for p in finished if f"data/{prefix.name}/{p}" in before}
    assert len(untouched) >= 20
    assert all(after[f"data/{prefix.name}/{p}"] == before[f"data/{prefix.name}/{p}"] for p in untouched), \
        "a finished part file was written again"
    clean = build_shards(BuildConfig(source=str(source), out=str(tmp_path / "clean"), dask_address=dask_address,
                                     **PARAMS))
    mine = sorted((f.path.split("/", 2)[2], f.sha256) for f in resumed.all_files())
    theirs = sorted((f.path.split("/", 2)[2], f.sha256) for f in clean.all_files())
    assert mine == theirs, "the resumed set differs from a clean build of the same parameters"
    assert not list((out / commit.LEASES).glob("*.json")) and not (prefix / resume.RESUME).exists()


def test_a_changed_parameter_or_source_never_reuses_the_killed_work(source, tmp_path, dask_address):
    out = tmp_path / "shards"
    killed_build(source, out, dask_address, after_parts=5)
    (killed,) = (out / commit.DATA).iterdir()
    other = build_shards(BuildConfig(source=str(source), out=str(out), dask_address=dask_address,
                                     **{**PARAMS, "seed": 1}))
    assert other.build_id != killed.name and not killed.exists(), "a build with another seed took stale work"
    out2 = tmp_path / "again"
    killed_build(source, out2, dask_address, after_parts=5)
    (killed,) = (out2 / commit.DATA).iterdir()
    x, y = mixture(6000, dim=6, seed=5)  # same rows, same schema, other values
    write_parquet(source, x, y, row_group_size=500)
    rebuilt = build_shards(BuildConfig(source=str(source), out=str(out2), dask_address=dask_address, **PARAMS))
    assert rebuilt.build_id != killed.name, "a build of a changed source took stale work"
