"""Launch a training run on this machine: a parameter-server process and n worker processes.

Ranks start from multiprocessing's ``forkserver`` (:func:`rank_context`), never a fork of the launcher (fork
deadlocks, reference §6), a ``file://`` rendezvous in the run folder and ``TP_SOCKET_IFNAME=lo`` so nothing
listens beyond loopback (reference §6), a watchdog that fails the launch when a rank has not joined
in time (``init_rpc`` itself can hang for minutes), and a ``finally`` that leaves no process behind after
success, an error or Ctrl-C. A worker that dies is reported to the parameter server, which goes on with the
others; a parameter server that dies stops the run with an error.
"""

import logging
import math
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from storage.cli import INTERRUPTED
from storage.errors import InputError, SimshardError, TrainError
from train import remote_out, session
from train.config import TrainConfig
from train.report import update_summary
from train.rpc import BAD_INPUT_EXIT, BAD_INPUT_PREFIX, log_path, process_main
from train.server import DEAD

__all__ = ["TrainError", "launch"]
log = logging.getLogger("simshard.launcher")
LOOPBACK_ENV = {"TP_SOCKET_IFNAME": "lo", "GLOO_SOCKET_IFNAME": "lo"}
WORKER_GRACE_S = 10.0
LOG_EVERY = 0.1  # log a progress line each time this share of the epochs has passed


def rank_context() -> mp.context.BaseContext:
    """The start method of the ranks: multiprocessing's fork server, with the rank code (:mod:`train.rpc`, torch
    included) and the launcher's main module imported once in it. Each rank is a fork of that server, a process
    that has run no training and holds no thread but allocators' own (jemalloc's, which handles fork), not of the
    launcher, which runs Prefect's, Dask's and the bar's threads. A spawned rank imported everything afresh:
    measured on 2 cores, a 4-worker run's start took 9.3-10.9 s spawned against 3.7-5.8 s forked from the server.
    The server lives as long as this process (it serves later launches too) and leaves when it does."""
    ctx = mp.get_context("forkserver")
    main = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    # a package's __main__ runs its program when imported: spawn skips it too (multiprocessing.spawn)
    main = None if main is None or main == "__main__" or main.endswith(".__main__") else main
    ctx.set_forkserver_preload(["__main__", "train.rpc"] + ([main] if main else []))
    return ctx


def launch(config: TrainConfig, *, on_started: Callable[[dict[str, int]], None] | None = None,
           on_progress: Callable[[float, int], None] | None = None, progress=None) -> dict:
    """Train with real RPC processes on this machine; returns the summary (also in ``out/summary.json``; an
    ``out`` URL gets the run folder when training ends: :mod:`train.remote_out`). ``on_started`` receives
    {"ps": pid, "worker0": pid, ...} once every rank has joined; ``on_progress`` receives (epoch, clock) of the
    parameter server's last evaluation about twice a second."""
    with remote_out.local_run(config) as local:
        return _launch(local, on_started=on_started, on_progress=on_progress, progress=progress)


def _launch(config: TrainConfig, *, on_started, on_progress, progress) -> dict:
    if config.optimizer == "single":
        from train.simulate import simulate
        return simulate(config, progress=progress)  # one process, no parameter server to talk to
    setup = session.prepare(config)
    ctx = rank_context()
    world = setup.workers + 1
    for stale in setup.out.glob(".rendezvous-*"):  # left by a launcher that was killed: ours to remove
        stale.unlink(missing_ok=True)
    rendezvous = setup.out / f".rendezvous-{uuid.uuid4().hex[:8]}"
    init_method = f"file://{rendezvous}"
    # one writer per value, so no lock (and no semaphore for an interrupted run to leak)
    status = ctx.Array("i", setup.workers, lock=False)
    joined = ctx.Array("i", world, lock=False)
    stats = ctx.Array("d", [0.0, 0.0, math.nan], lock=False)  # the parameter server's [epoch, clock, accuracy]
    saved_env = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    os.environ.update({k: os.environ.get(k) or v for k, v in LOOPBACK_ENV.items()})
    procs = {"ps": ctx.Process(target=process_main, name="simshard-ps",
                               args=("ps", config, -1, 0, world, init_method, status, joined, stats, setup.out,
                                     os.getpid()))}
    for k in range(setup.workers):
        procs[f"worker{k}"] = ctx.Process(target=process_main, name=f"simshard-worker{k}", args=(
            "worker", config, k, k + 1, world, init_method, status, joined, None, setup.out, os.getpid()))
    log.info("training %s: parameter server + %d workers, %d epochs, λ %d; rank logs in %s", config.optimizer,
             setup.workers, setup.epochs, setup.window, setup.out / "logs")
    bar = tqdm(total=setup.epochs, desc="train", unit="epoch", leave=False, disable=None,
               bar_format="{desc}: {n:.2f}/{total} epochs |{bar}| {postfix}")
    started = time.monotonic()
    try:
        for p in procs.values():
            p.start()
        _wait_joined(procs, joined, config.join_timeout, setup.out)
        startup = time.monotonic() - started
        if on_started:
            on_started({name: p.pid for name, p in procs.items()})
        report = _Progress(setup.epochs, stats, bar, progress, on_progress)
        _supervise(procs, status, report, setup.out)
        _read_summary(setup)
        return update_summary(setup.out, startup_seconds=startup, wall_seconds=time.monotonic() - started)
    finally:
        bar.close()
        _stop_all(procs)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
        rendezvous.unlink(missing_ok=True)


class _Progress:
    """Moves the terminal bar, logs a line every LOG_EVERY of the run and feeds the caller's progress."""

    def __init__(self, epochs: int, stats, bar, progress, on_progress=None):
        self.epochs, self.stats, self.bar, self.progress, self.on_progress = epochs, stats, bar, progress, on_progress
        self.logged = 0

    def __call__(self) -> None:
        epoch, clock, accuracy = self.stats[:]
        self.bar.n = min(epoch, self.epochs)
        self.bar.set_postfix_str(f"{int(clock)} commits, validation accuracy {accuracy:.3f}")
        step = math.floor(epoch / self.epochs / LOG_EVERY)
        if step > self.logged and accuracy == accuracy:
            self.logged = step
            log.info("epoch %.1f/%d: %d commits, validation accuracy %.4f", epoch, self.epochs, clock, accuracy)
        if self.progress:
            self.progress("train", min(epoch, self.epochs), self.epochs)
        if self.on_progress:
            self.on_progress(epoch, int(clock))


def last_log_line(out: Path, name: str) -> str:
    """The last line a rank logged (its error, when it failed), or '' when it logged nothing."""
    role, k = ("ps", -1) if name == "ps" else ("worker", int(name.removeprefix("worker")))
    try:
        lines = [ln.strip() for ln in log_path(out, role, k).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _exited(name: str, code: int, out: Path, when: str) -> SimshardError:
    last = last_log_line(out, name)
    if code == BAD_INPUT_EXIT and BAD_INPUT_PREFIX in last:
        return InputError(last.split(BAD_INPUT_PREFIX, 1)[1])
    return TrainError(f"{name} exited with code {code} {when}" + (f": {last}" if last else "") +
                      f" (logs in {out / 'logs'})")


def _wait_joined(procs: dict, joined, timeout: float, out: Path) -> None:
    deadline = time.monotonic() + timeout
    names = list(procs)
    while not all(joined[:]):
        for rank, name in enumerate(names):
            p = procs[name]
            if p.exitcode is not None and not joined[rank]:
                raise _exited(name, p.exitcode, out, "before joining the RPC group")
        if time.monotonic() > deadline:
            missing = [names[r] for r in range(len(names)) if not joined[r]]
            raise TrainError(f"rank(s) {', '.join(missing)} did not join within {timeout:.0f} s "
                             "(raise --join-timeout on a slow machine)")
        time.sleep(0.05)


def _supervise(procs: dict, status, report_progress, out: Path) -> None:
    ps = procs["ps"]
    workers = [procs[f"worker{k}"] for k in range(len(procs) - 1)]
    last_report = 0.0
    while ps.exitcode is None:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        if time.monotonic() - last_report > 0.5:
            report_progress()
            last_report = time.monotonic()
        for k, p in enumerate(workers):
            if p.exitcode == BAD_INPUT_EXIT:
                raise _exited(f"worker{k}", p.exitcode, out, "on bad input")
            if p.exitcode not in (None, 0) and status[k] != DEAD:
                log.warning("worker %d exited with code %s; training goes on with the others (%s)", k, p.exitcode,
                            last_log_line(out, f"worker{k}") or "no log line")
                status[k] = DEAD
        time.sleep(0.05)
    if ps.exitcode == BAD_INPUT_EXIT:
        raise _exited("ps", ps.exitcode, out, "on bad input")
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
    started = [p for p in procs.values() if p.pid is not None]  # a failed start leaves the later ones unstarted
    for p in started:
        if p.is_alive():
            p.terminate()
    for p in started:
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
