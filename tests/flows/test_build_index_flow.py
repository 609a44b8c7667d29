"""The build_index flow and CLI against a real Prefect test server and a real LocalCluster, then a train run on
the index through the train CLI."""

import json

from storage.shardset import ShardSet
from tests.cli_helpers import run_module


def test_flow_publishes_an_index_and_reports_its_quality(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.build_index import build_index
    from pipeline.index import IndexConfig

    state = build_index(config=IndexConfig(out=str(tmp_path / "i"), family="pca"), return_state=True)
    manifest = state.result()
    assert ShardSet(tmp_path / "i").manifest.buckets == manifest.buckets and manifest.kind == "index"
    assert (tmp_path / "i" / "bucket_sizes.png").stat().st_size > 1000
    with get_client(sync_client=True) as client:
        mine = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in mine if a.key}
    table = str(by_key["build-index-quality"].data)
    assert all(k in table for k in ("buckets", "max_bucket_rows", "mean_bucket_rows", "knn_recall_at_10"))
    assert "data:image/png;base64," in by_key["build-index-report"].data


def test_cli_builds_an_index_that_train_uses_online(tmp_path, prefect_env):
    res = run_module("flows.build_index", "--out", tmp_path / "index", cwd=tmp_path, env=prefect_env)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]
    assert "built an index of 1619 rows" in res.stdout and "knn_recall_at_10" in res.stdout
    res = run_module("flows.train", "--index", tmp_path / "index", "--out", tmp_path / "run", "--epochs", "4",
                     cwd=tmp_path, env=prefect_env)
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["index"] == str(tmp_path / "index") and summary["workers"] == 4
    assert summary["best_accuracy"] > 0.85 and summary["step_tightness"] < 0.85
