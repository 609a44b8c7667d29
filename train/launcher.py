"""Launch a training run on this machine: a parameter-server process and n worker processes.

``spawn`` start method (fork deadlocks), a ``file://`` rendezvous in the run folder and ``TP_SOCKET_IFNAME=lo``
so nothing listens beyond loopback (reference §6), a watchdog that fails the launch when a rank has not joined
in time (``init_rpc`` itself can hang for minutes), and a ``finally`` that leaves no process behind after
success, an error or Ctrl-C. A worker that dies is reported to the parameter server, which goes on with the
others; a parameter server that dies stops the run with an error.
"""

import logging
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable

from storage.errors import SimshardError
from train import session
from train.config import TrainConfig
from train.rpc import process_main
from train.server import DEAD

log = logging.getLogger("simshard.launcher")
LOOPBACK_ENV = {"TP_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo"}
WORKER_GRACE_S = 10.0


class TrainError(SimshardError):
    """The run failed: a rank did not join, or the parameter server died."""


def launch(config: TrainConfig, *, on_started: Callable[[dict[str, int]], None] | None = None,
           progress=None) -> dict:
    """Train with real RPC processes on this machine; returns the summary (also in ``out/summary.json``).
    ``on_started`` receives {"ps": pid, "worker0": pid, ...} once every rank has joined."""
    if config.optimizer == "single":
        from train.simulate import simulate
        return simulate(config, progress=progress)  # one process, no parameter server to talk to
    setup = session.prepare(config)
    ctx = mp.get_context("spawn")
    world = setup.workers + 1
    rendezvous = setup.out / f".rendezvous-{uuid.uuid4().hex[:8]}"
    init_method = f"file://{rendezvous}"
    status = ctx.Array("i", setup.workers)
    joined = ctx.Array("i", world)
    epoch_done = ctx.Value("d", 0.0)  # the parameter server's progress, for progress reports from this process
    saved_env = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    os.environ.update({k: os.environ.get(k) or v for k, v in LOOPBACK_ENV.items()})
    procs = {"ps": ctx.Process(target=process_main, name="simshard-ps",
                               args=("ps", config, -1, 0, world, init_method, status, joined, epoch_done))}
    for k in range(setup.workers):
        procs[f"worker{k}"] = ctx.Process(target=process_main, name=f"simshard-worker{k}",
                                          args=("worker", config, k, k + 1, world, init_method, status, joined, None))
    try:
        for p in procs.values():
            p.start()
        _wait_joined(procs, joined, config.join_timeout)
        if on_started:
            on_started({name: p.pid for name, p in procs.items()})
        _supervise(procs, status, lambda: progress and progress("train", epoch_done.value, config.epochs))
        return _read_summary(setup)
    finally:
        _stop_all(procs)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
        rendezvous.unlink(missing_ok=True)


def _wait_joined(procs: dict, joined, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    names = list(procs)
    while not all(joined[:]):
        for rank, name in enumerate(names):
            p = procs[name]
            if p.exitcode is not None and not joined[rank]:
                raise TrainError(f"{name} exited with code {p.exitcode} before joining the RPC group")
        if time.monotonic() > deadline:
            missing = [names[r] for r in range(len(names)) if not joined[r]]
            raise TrainError(f"rank(s) {', '.join(missing)} did not join within {timeout:.0f} s "
                             "(raise --join-timeout on a slow machine)")
        time.sleep(0.05)


def _supervise(procs: dict, status, report_progress) -> None:
    ps = procs["ps"]
    workers = [procs[f"worker{k}"] for k in range(len(procs) - 1)]
    last_report = 0.0
    while ps.exitcode is None:
        if time.monotonic() - last_report > 1.0:
            report_progress()
            last_report = time.monotonic()
        for k, p in enumerate(workers):
            if p.exitcode not in (None, 0) and status[k] != DEAD:
                log.warning("worker %d exited with code %s", k, p.exitcode)
                status[k] = DEAD
        time.sleep(0.05)
    if ps.exitcode != 0:
        deadline = time.monotonic() + WORKER_GRACE_S
        while any(p.exitcode is None for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        codes = ", ".join(f"worker {k}: {'running' if p.exitcode is None else p.exitcode}"
                          for k, p in enumerate(workers))
        raise TrainError(f"the parameter server exited with code {ps.exitcode}; workers stopped ({codes})")
    for p in workers:
        p.join(WORKER_GRACE_S)


def _stop_all(procs: dict) -> None:
    for p in procs.values():
        if p.is_alive():
            p.terminate()
    for p in procs.values():
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def _read_summary(setup: session.Setup) -> dict:
    import json
    path = setup.out / "summary.json"
    if not path.is_file():
        raise TrainError(f"the parameter server finished without writing {path}")
    return json.loads(path.read_text())
