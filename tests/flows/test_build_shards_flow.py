"""The Prefect flow and the CLI, against a real Prefect test server and a real LocalCluster."""

import subprocess
import sys

import pytest

from storage.shardset import ShardSet


def test_flow_runs_and_reports_artifacts(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.build_shards import build_shards
    from pipeline.config import BuildConfig

    state = build_shards(config=BuildConfig(out=str(tmp_path / "s"), workers=4, family="kmeans"), return_state=True)
    manifest = state.result()
    assert ShardSet(tmp_path / "s").manifest.rows_per_shard == manifest.rows_per_shard
    assert (tmp_path / "s" / "shard_stats.png").stat().st_size > 1000
    with get_client(sync_client=True) as client:
        mine = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in mine if a.key}
    assert "group_tightness" in str(by_key["build-shards-quality"].data)
    assert "data:image/png;base64," in by_key["build-shards-report"].data


def test_cli_runs_the_flow_and_prints_a_summary(prefect_server, tmp_path, capsys):
    from flows.build_shards import main

    code = main(["--out", str(tmp_path / "cli"), "--workers", "2", "--family", "pca", "--order", "stratified"])
    assert code == 0
    out = capsys.readouterr().out
    assert "built 2 shards" in out and "group_tightness" in out


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flows.build_shards", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_help_documents_every_option(tmp_path):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0
    for opt in ("--source", "--out", "--workers", "--family", "--order", "--features", "--label",
                "--validation-fraction", "--sample-size", "--seed", "--overwrite", "--dask-address", "--nan",
                "--remainder", "--debug"):
        assert opt in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--family", "minhash"], "invalid choice"),
    (["--storage-options", "[1]"], "argument --storage-options: must be a JSON object of fsspec keyword arguments"),
    (["--storage-options", "{x"], "argument --storage-options: not valid JSON"),
])
def test_cli_rejects_bad_parameters_in_one_line(args, message, tmp_path):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "shards").exists()
