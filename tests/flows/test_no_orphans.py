"""No process outlives its parent, SIGKILL included: the Dask cluster and Prefect's temporary server go when a
flow CLI is killed, and training ranks go when their launcher is killed. Each test kills the parent once its
children are at work (progress, not time) and waits for every descendant to be gone."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from storage import demo
from tests.cli_helpers import ROOT

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
    kill_and_assert_no_orphans(proc, expect=["uvicorn", "spawn_main", "flows.reaper"])


def test_ranks_leave_when_a_bare_launcher_is_killed(blob_shards, tmp_path):
    """No reaper here (a library call, not a CLI): the ranks watch their parent themselves."""
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO); "
            "from train.config import TrainConfig; from train.launcher import launch; "
            f"launch(TrainConfig(shards={str(blob_shards)!r}, out={str(tmp_path / 'run')!r}, epochs=200, "
            "eval_every=20))")
    proc = start(["-c", code], tmp_path)
    wait_for_training(tmp_path / "run", proc)
    kill_and_assert_no_orphans(proc, expect=["spawn_main"])


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
