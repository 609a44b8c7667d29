"""No process outlives its parent, SIGKILL included: the Dask cluster and Prefect's temporary server go when a
flow CLI is killed, and training ranks go when their launcher is killed. Each test kills the parent once its
children are at work (progress, not time) and waits for every descendant to be gone."""

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from flows.server_process import flow_cli_of
from storage import demo
from tests.cli_helpers import ROOT, assert_one_error_line

GONE_WITHIN_S = 15


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    for line in proc.stdout:
        if text in line:
            return
        assert time.time() < deadline, f"no line with {text!r} in {timeout} s"
    pytest.fail(f"the process ended (code {proc.wait()}) before printing {text!r}")


def wait_for_training(run, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the parameter server has logged its first evaluation."""
    log, deadline = run / "logs" / "ps.log", time.time() + timeout
    while not (log.is_file() and "validation" in log.read_text()):
        assert proc.poll() is None and time.time() < deadline, "training never got under way"
        time.sleep(0.1)


def kill_and_assert_no_orphans(proc: subprocess.Popen, *, expect: list[str]) -> None:
    kids = psutil.Process(proc.pid).children(recursive=True)
    names = " ".join(" ".join(k.cmdline()) for k in kids)
    assert all(e in names for e in expect), (expect, names)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=GONE_WITHIN_S)
    try:
        assert not alive, f"still running {GONE_WITHIN_S} s after the parent was killed: " + \
            "; ".join(" ".join(p.cmdline())[:100] for p in alive)
    finally:
        for p in alive:
            p.kill()


def test_a_killed_build_leaves_no_dask_cluster_and_no_prefect_server(tmp_path):
    source = "demo:blobs?rows=300000&dim=32&clusters=16&seed=3"
    demo.materialise(source)  # so that the build itself, not the demo data, is what runs
    proc = start(["-m", "flows.build_shards", "--source", source, "--out", str(tmp_path / "shards"),
                  "--dask-cluster", "processes"], tmp_path)  # worker processes, as larger sources get
    wait_for_line(proc, "Dask LocalCluster")
    kill_and_assert_no_orphans(proc, expect=["uvicorn", "spawn_main", "flows.reaper"])


def test_a_killed_train_cli_leaves_no_rank_and_no_prefect_server(blob_shards, tmp_path):
    proc = start(["-m", "flows.train", "--shards", str(blob_shards), "--out", str(tmp_path / "run"), "--epochs",
                  "200", "--eval-every", "20"], tmp_path)
    wait_for_training(tmp_path / "run", proc)
    kill_and_assert_no_orphans(proc, expect=["uvicorn", "multiprocessing.forkserver", "flows.reaper"])


def test_ranks_leave_when_a_bare_launcher_is_killed(blob_shards, tmp_path):
    """No reaper here (a library call, not a CLI): the ranks watch their parent themselves."""
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO); "
            "from train.config import TrainConfig; from train.launcher import launch; "
            f"launch(TrainConfig(shards={str(blob_shards)!r}, out={str(tmp_path / 'run')!r}, epochs=200, "
            "eval_every=20))")
    proc = start(["-c", code], tmp_path)
    wait_for_training(tmp_path / "run", proc)
    kill_and_assert_no_orphans(proc, expect=["multiprocessing.forkserver"])


def test_ctrl_c_on_a_build_is_one_line_and_leaves_no_process(tmp_path):
    """Ctrl-C reaches the whole foreground group, Dask's worker processes too: they leave it to the driver, so
    stderr is one line (no worker tracebacks), and the driver exits 130 soon after its own cleanup."""
    source = "demo:blobs?rows=300000&dim=32&clusters=16&seed=3"
    demo.materialise(source)
    proc = subprocess.Popen([sys.executable, "-m", "flows.build_shards", "--source", source, "--out",
                             str(tmp_path / "shards"), "--dask-cluster", "processes"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        wait_for_line(proc, "Dask LocalCluster")
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert any("spawn_main" in " ".join(k.cmdline()) for k in kids)
        os.killpg(proc.pid, signal.SIGINT)
        code, stderr = proc.wait(30), proc.stderr.read()
        assert (code, stderr) == (130, "error: interrupted\n")
        _, alive = psutil.wait_procs(kids, timeout=GONE_WITHIN_S)
        assert not alive, "; ".join(" ".join(p.cmdline())[:100] for p in alive)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def marked_servers(mark: str) -> list[psutil.Process]:
    """Prefect server processes (uvicorn with Prefect's app) started with ``SIMSHARD_TEST_MARK=mark``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "prefect.server.api.server" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("SIMSHARD_TEST_MARK") == mark:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def run_watching_servers(args, cwd, env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """Run a CLI to its end; (its result, how many marked servers were seen running meanwhile)."""
    mark = str(uuid.uuid4())
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), SIMSHARD_TEST_MARK=mark, **env))
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(p.pid for p in marked_servers(mark))
        time.sleep(0.05)
    out, err = proc.communicate()
    _, alive = psutil.wait_procs(marked_servers(mark), timeout=GONE_WITHIN_S)
    assert not alive, f"a Prefect server still runs {GONE_WITHIN_S} s after the CLI ended"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), len(seen)


def test_a_cli_that_stops_on_bad_input_stops_the_server_it_started_early(tmp_path):
    """A flow CLI starts Prefect's temporary server before it has read its arguments (the server's start
    overlaps the CLI's imports): stopping on bad input, it stops that server too, and stderr stays one line."""
    res, servers = run_watching_servers(["-m", "flows.build_shards", "--source", str(tmp_path / "nope.parquet")],
                                        tmp_path, {})
    assert_one_error_line(res, "nope.parquet", "does not exist")
    assert servers == 1


def test_a_server_configured_in_a_profile_is_used_and_the_early_server_stopped(tmp_path, prefect_env):
    """PREFECT_API_URL set in the active Prefect profile (not the environment): the run reports there, and the
    server started early is stopped unused."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'active = "test"\n\n[profiles.test]\nPREFECT_API_URL = "{prefect_env["PREFECT_API_URL"]}"\n')
    res, servers = run_watching_servers(
        ["-m", "flows.build_shards", "--source", "demo:blobs?rows=2000&dim=4&clusters=4", "--out",
         str(tmp_path / "shards")], tmp_path, {"PREFECT_PROFILES_PATH": str(profiles)})
    assert res.returncode == 0, res.stderr
    assert prefect_env["PREFECT_API_URL"].removesuffix("/api") + "/runs/flow-run/" in res.stdout
    assert "temporary server" not in res.stdout
    assert servers == 1


@pytest.mark.parametrize("argv, module", [
    (["python", "-m", "flows.build_shards", "--source", "x"], "flows.build_shards"),
    (["python", "-m", "flows.train"], "flows.train"),
    (["python", "-m", "flows.build_shards", "--help"], None),
    (["python", "-m", "flows.reaper", "12"], None),
    (["python", "-m", "pytest", "-q"], None),
    (["python", "script.py"], None),
])
def test_only_a_flow_cli_starts_the_server_early(argv, module):
    assert flow_cli_of(argv) == module
