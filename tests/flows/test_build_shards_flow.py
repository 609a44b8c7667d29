"""The Prefect flow and the CLI, against a real Prefect test server and a real LocalCluster."""

import pytest

from storage.shardset import ShardSet
from tests.cli_helpers import run_modules


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


HELP_OPTIONS = ("--source", "--out", "--workers", "--family", "--order", "--features", "--label",
                "--validation-fraction", "--sample-size", "--seed", "--overwrite", "--dask-address", "--nan",
                "--remainder", "--debug")

BAD_PARAMETERS = {
    "workers below one": (["--workers", "0"], "--workers must be >= 1"),
    "unknown family": (["--family", "minhash"], "invalid choice"),
    "options not an object": (["--storage-options", "[1]"],
                              "argument --storage-options: must be a JSON object of fsspec keyword arguments"),
    "options not JSON": (["--storage-options", "{x"], "argument --storage-options: not valid JSON"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, prefect_env):
    """``--help`` and each case of BAD_PARAMETERS run as their own CLI processes, all at once, each in a working
    directory of its own, with the session's Prefect server configured (a bare CLI's early server has its own
    tests in test_no_orphans): {"help" or case: (CompletedProcess, its working directory)}."""
    cases = {"help": ["--help"], **{case: args for case, (args, _) in BAD_PARAMETERS.items()}}
    folders = [tmp_path_factory.mktemp("cli") for _ in cases]
    results = run_modules(*[("flows.build_shards", *args) for args in cases.values()], cwd=folders,
                          env=prefect_env)
    return dict(zip(cases, zip(results, folders)))


def test_cli_help_documents_every_option(cli_runs):
    res, _ = cli_runs["help"]
    assert res.returncode == 0, res.stderr
    for opt in HELP_OPTIONS:
        assert opt in res.stdout


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_cli_rejects_bad_parameters_in_one_line(case, cli_runs):
    res, cwd = cli_runs[case]
    assert res.returncode == 2 and BAD_PARAMETERS[case][1] in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not list(cwd.iterdir()), "something was written to the working directory"
