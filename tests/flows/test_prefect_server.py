"""Against a real Prefect server: deployments from prefect.yaml with cron runs scheduled, a pipeline run with
both subflows and its artifacts read back through the API, and the UI showing the run in headless Chromium."""

import json
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from flows.deployments import DEPLOYMENTS, WORK_POOL
from storage import commit
from tests.flows.conftest import ROOT


def post(api: str, path: str, body: dict) -> list[dict]:
    r = httpx.post(f"{api}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def prefect(env, *args, cwd=ROOT, timeout=300):
    res = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_prefect_yaml_matches_the_served_deployments():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    assert set(declared) == set(DEPLOYMENTS)
    for name, d in DEPLOYMENTS.items():
        assert declared[name]["entrypoint"] == d["entrypoint"] and declared[name]["work_pool"]["name"] == WORK_POOL
        assert [s["cron"] for s in declared[name].get("schedules", [])] == ([d["cron"]] if d["cron"] else [])
        assert declared[name]["parameters"] == d["parameters"]


def test_deploy_creates_deployments_whose_cron_schedules_produce_runs(prefect_api):
    api, env = prefect_api
    prefect(env, "work-pool", "create", WORK_POOL, "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    deployments = {d["name"]: d for d in post(api, "/deployments/filter", {})}
    assert set(deployments) == {"nightly-build", "build-index", "train", "pipeline"}
    nightly = deployments["nightly-build"]["id"]
    deadline, scheduled = time.time() + 90, []
    while time.time() < deadline and not scheduled:
        scheduled = post(api, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [nightly]},
                                                                  "state": {"type": {"any_": ["SCHEDULED"]}}}})
        time.sleep(2)
    assert scheduled, "the nightly cron schedule produced no scheduled runs (SQLAlchemy/fastapi trap?)"
    assert all(r["expected_start_time"][11:16] == "02:00" for r in scheduled)


@pytest.fixture(scope="module")
def pipeline_run(prefect_api, tmp_path_factory):
    """README command 1 as a new user runs it (the digits demo on its defaults), against the real server."""
    api, env = prefect_api
    tmp = tmp_path_factory.mktemp("pipeline")
    res = subprocess.run([sys.executable, "-m", "flows.pipeline", "--shards", str(tmp / "shards"), "--run",
                          str(tmp / "run")], env=env, cwd=tmp, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    flows = {f["id"]: f["name"] for f in post(api, "/flows/filter", {})}
    runs = post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED",
                                                                                     "CRASHED"]}}}})
    return api, {flows[r["flow_id"]]: r for r in runs}, tmp, res


def test_the_demo_reaches_its_target_and_says_when(pipeline_run):
    *_, res = pipeline_run
    summary = json.loads((pipeline_run[2] / "run" / "summary.json").read_text())
    assert summary["target_accuracy"] == 0.9 and summary["final_accuracy"] >= 0.9, summary
    reached = summary["epochs_to_target"]
    assert reached is not None and f"reached 0.9 at epoch {reached:.2f}" in res.stdout


def test_the_terminal_shows_no_library_chatter(pipeline_run):
    *_, res = pipeline_run
    assert res.stderr == "", res.stderr[-3000:]
    lines = res.stdout.splitlines()
    noise = [ln for ln in lines if "distributed." in ln or "tensorpipe" in ln.lower() or "UserWarning" in ln
             or "Traceback" in ln]
    assert not noise, noise
    assert any("simshard.build - published 4 shards" in ln for ln in lines)
    assert any("simshard.launcher - epoch" in ln for ln in lines)  # training progress lines


def test_pipeline_run_completes_with_both_subflows(pipeline_run):
    _, runs, tmp, _ = pipeline_run
    assert {"pipeline", "build_shards", "train"} <= set(runs)
    assert all(runs[n]["state_type"] == "COMPLETED" for n in ("pipeline", "build_shards", "train"))
    assert runs["pipeline"]["parent_task_run_id"] is None
    assert runs["build_shards"]["parent_task_run_id"] and runs["train"]["parent_task_run_id"]
    assert (tmp / "run" / "summary.json").is_file() and commit.current(tmp / "shards") is not None


def test_dask_and_simshard_logs_are_on_the_run_page(pipeline_run):
    api, runs, *_ = pipeline_run
    logs = post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [runs["build_shards"]["id"]]}},
                                      "limit": 200})
    names = {entry["name"].split(".")[0] for entry in logs}
    assert {"distributed", "simshard"} <= names, names


def test_artifacts_are_readable_by_key(pipeline_run):
    api, runs, *_ = pipeline_run
    found = {}
    for key, run in (("build-shards-quality", "build_shards"), ("build-shards-report", "build_shards"),
                     ("train-summary", "train"), ("train-report", "train")):
        found[key] = post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]},
                                                                   "flow_run_id": {"any_": [runs[run]["id"]]}}})
        assert len(found[key]) == 1, key
    assert "final_accuracy" in str(found["train-summary"][0]["data"])
    for report in ("build-shards-report", "train-report"):
        assert "data:image/png;base64," in found[report][0]["data"]  # the plots are in the artifact
    table = str(found["build-shards-quality"][0]["data"])
    floats = re.findall(r"\d+\.\d+", table)
    assert floats and all(len(f.replace(".", "").lstrip("0")) <= 4 for f in floats), table  # rounded figures
    for run in ("build_shards", "train"):
        progress = post(api, "/artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]},
                                                                 "flow_run_id": {"any_": [runs[run]["id"]]}}})
        assert len(progress) == 1 and progress[0]["data"] == 100, run


def test_ui_shows_the_run_and_its_artifacts(pipeline_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it where apt-get can)")
    api, runs, *_ = pipeline_run
    run, ui = runs["train"], api[:-len("/api")]

    def render(path: str, shot: str, expected: list[str]) -> str:
        """DOM of ``path`` once it shows every ``expected`` text (the UI renders asynchronously: up to three
        tries), plus a screenshot."""
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--virtual-time-budget=30000", "--window-size=1400,1000"]
        for attempt in range(3):
            profile = f"--user-data-dir={tmp_path / f'{shot}-{attempt}'}"
            dom = subprocess.run([chromium, *flags, profile, "--dump-dom", ui + path], capture_output=True,
                                 text=True, timeout=120).stdout
            if all(text in dom for text in expected):
                break
        subprocess.run([chromium, *flags, profile, f"--screenshot={tmp_path / shot}.png", ui + path],
                       capture_output=True, timeout=120)
        assert (tmp_path / f"{shot}.png").stat().st_size > 20_000, f"blank screenshot of {path}"
        return dom

    page = render(f"/runs/flow-run/{run['id']}", "flow-run", [run["name"], "Completed"])
    assert run["name"] in page and "Completed" in page, "the flow run is not shown on its page"
    for key in ("train-summary", "train-report"):
        page = render(f"/artifacts/key/{key}", key, [key, run["name"]])
        assert key in page and run["name"] in page, f"artifact {key} is not shown with its run"
