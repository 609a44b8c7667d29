"""The RPC transport: the parameter-server process and the worker processes over torch.distributed.rpc.

Rank 0 is the parameter server ("ps"), rank k+1 is worker k ("worker{k}"). TensorPipe with the uv transport
(the shared-memory one busy-polls, reference §6); arguments are tensors and plain numbers only. Workers say
"done" explicitly and every rank ends with ``rpc.shutdown(graceful=False)``, so a dead rank never hangs the
others. RPC has no authentication: ranks bind to loopback unless the user points them elsewhere.
"""

import logging
import os
import queue
import sys
import threading
import time
import warnings

import psutil
import torch
import torch.distributed.rpc as rpc

from storage import cli
from storage.errors import InputError, TrainError
from train import session
from train.config import TrainConfig
from train.data import Draw
from train.server import DEAD, RUNNING
from train.worker import Average, Commit, Done, Pull, SaveState, Start

log = logging.getLogger("simshard.rpc")
PS_NAME = "ps"
BAD_INPUT_EXIT = 3  # a rank that read bad input (a corrupt shard) exits with this; the launcher stops the run
BAD_INPUT_PREFIX = "bad input: "
_SERVER = None  # the ParameterServer of the parameter-server process
_LAST_SEEN: dict[int, float] = {}
# Ranks fork from a server that imported the launcher's main module (train.launcher.rank_context); multiprocessing
# then runs that module again as __mp_main__ in each rank, as it does for spawn, and runpy warns that the module
# is already imported. The warning is about exactly that re-run, which is what a rank needs.
warnings.filterwarnings("ignore", message=r"'.*' found in sys\.modules after import of package",
                        category=RuntimeWarning)


def backend_options(init_method: str, *, timeout_s: float = 120.0) -> rpc.TensorPipeRpcBackendOptions:
    return rpc.TensorPipeRpcBackendOptions(init_method=init_method, rpc_timeout=timeout_s, num_worker_threads=32,
                                           _transports=["uv"])


def _seen(k: int) -> None:
    _LAST_SEEN[k] = time.monotonic()


def _start(k: int):
    _seen(k)
    return _SERVER.start(k)


def _pull(k: int):
    _seen(k)
    return _SERVER.pull(k)


def _save_state(k: int, state: dict) -> bool:
    _seen(k)
    _SERVER.save_state(k, state)
    return True


def _commit(k: int, payload: torch.Tensor, clock: int, samples: int, cursor: tuple[int, int], loss: float):
    _seen(k)
    return _SERVER.commit(k, payload, clock=clock, samples=samples, cursor=cursor, loss=loss)


@rpc.functions.async_execution
def _average(k: int, theta: torch.Tensor, samples: int, cursor: tuple[int, int], loss: float):
    _seen(k)
    return _SERVER.average(k, theta, samples=samples, cursor=cursor, loss=loss)


def _draw(k: int, epoch: int, step: int, steps: int):
    _seen(k)
    return _SERVER.draw(k, epoch, step, steps)


def _done(k: int, samples: int, state: dict, stats: dict) -> bool:
    _seen(k)
    _SERVER.done(k, state=state, stats=stats)
    return True


class _EvalThread:
    """Runs the monitor on snapshots, and writes checkpoints, in the background so commits are never held back
    by evaluation or disk writes. One queue keeps them in clock order: a checkpoint is written after every
    evaluation up to its clock."""

    def __init__(self, monitor: session.Monitor):
        self.monitor, self.queue = monitor, queue.Queue()
        self.thread = threading.Thread(target=self._run, name="simshard-eval", daemon=True)
        self.thread.start()

    def __call__(self, clock, epoch, centre):
        self.queue.put((self.monitor, (clock, epoch, centre)))

    def checkpoint(self, cut) -> None:
        self.queue.put((self.monitor.checkpoint, (cut,)))

    def _run(self):
        while (item := self.queue.get()) is not None:
            fn, args = item
            fn(*args)

    def close(self):
        self.queue.put(None)
        self.thread.join()


def serve(config: TrainConfig, *, rank: int, world_size: int, init_method: str, status=None, joined=None,
          progress=None) -> dict:
    """Run the parameter server until every worker is done or dead; write the run outputs."""
    global _SERVER
    torch.set_num_threads(config.threads)
    setup = session.prepare(config, create_out=False)
    monitor = session.Monitor(setup, progress=progress)
    evaluator = _EvalThread(monitor)
    _SERVER = ps = session.server(setup, monitor)
    ps.on_snapshot, ps.on_checkpoint = evaluator, evaluator.checkpoint
    rpc.init_rpc(PS_NAME, rank=rank, world_size=world_size, rpc_backend_options=backend_options(init_method))
    if joined is not None:
        joined[rank] = 1
    ps.start_clock()  # training time starts once the group has formed: start-up is the launcher's to report
    start = time.monotonic()
    for k in range(setup.workers):
        _LAST_SEEN.setdefault(k, start)
    try:
        while not ps.finished():
            time.sleep(0.05)
            now = time.monotonic()
            for k in range(setup.workers):
                if ps.status[k] != RUNNING:
                    continue
                if status is not None and status[k] == DEAD:
                    log.warning("worker %d died; training goes on with the others", k)
                    ps.done(k, dead=True)
                elif now - _LAST_SEEN[k] > config.worker_timeout:
                    log.warning("worker %d silent for %.0f s; declared dead", k, now - _LAST_SEEN[k])
                    ps.done(k, dead=True)
        evaluator.close()
        return session.finish(setup, ps, monitor)
    finally:
        rpc.shutdown(graceful=False)


def work(config: TrainConfig, k: int, *, rank: int, world_size: int, init_method: str, joined=None) -> None:
    """Run worker k: answer its program's requests with RPC calls to the parameter server."""
    torch.set_num_threads(config.threads)
    setup = session.prepare(config, create_out=False)
    program = session.worker(setup, k)
    rpc.init_rpc(f"worker{k}", rank=rank, world_size=world_size, rpc_backend_options=backend_options(init_method))
    if joined is not None:
        joined[rank] = 1
    try:
        request = next(program)
        while True:
            if isinstance(request, Start):
                answer = rpc.rpc_sync(PS_NAME, _start, args=(k,))
            elif isinstance(request, Pull):
                answer = rpc.rpc_sync(PS_NAME, _pull, args=(k,))
            elif isinstance(request, SaveState):
                answer = rpc.rpc_sync(PS_NAME, _save_state, args=(k, request.state))
            elif isinstance(request, Commit):
                answer = rpc.rpc_sync(PS_NAME, _commit, args=(k, request.payload, request.clock, request.samples,
                                                              request.cursor, request.loss))
            elif isinstance(request, Average):
                answer = rpc.rpc_sync(PS_NAME, _average, args=(k, request.theta, request.samples, request.cursor,
                                                               request.loss), timeout=0)
            elif isinstance(request, Draw):
                answer = rpc.rpc_sync(PS_NAME, _draw, args=(k, request.epoch, request.step, request.steps))
            elif isinstance(request, Done):
                rpc.rpc_sync(PS_NAME, _done, args=(k, request.samples, request.state, request.stats))
                return
            request = program.send(answer)
    except RuntimeError as exc:
        raise TrainError(f"worker {k}: lost the parameter server ({str(exc).splitlines()[0]})") from None
    finally:
        rpc.shutdown(graceful=False)


def log_path(out, role: str, k: int):
    """Where a rank started by the launcher writes its log (and anything the libraries print)."""
    return out / "logs" / f"{role}{'' if k < 0 else k}.log"


def _redirect_output(path) -> None:
    """Send this process's stdout and stderr (C++ warnings included) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _exit_with_launcher(pid: int, poll_s: float = 0.5) -> None:
    """A rank leaves within a second of its launcher's death (SIGKILL included). The launcher, not the parent:
    a rank's parent is the fork server (train.launcher.rank_context), which stays up while its ranks do.
    ``psutil.Process`` keeps the launcher's creation time, so a reused PID does not count as the launcher."""
    try:
        launcher = psutil.Process(pid)
    except psutil.NoSuchProcess:
        os._exit(1)

    def alive() -> bool:
        try:
            return launcher.is_running() and launcher.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def watch() -> None:
        while alive():
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="simshard-launcher-watch", daemon=True).start()


def process_main(role: str, config: TrainConfig, k: int, rank: int, world_size: int, init_method: str,
                 status, joined, stats, out, launcher_pid: int) -> None:
    """Entry point of a spawned rank (the launcher's child processes). Unless ``SIMSHARD_LOG_LEVEL`` is debug,
    everything the rank prints goes to ``out/logs/ROLE.log``; the launcher shows progress and errors.
    ``stats`` (parameter server only): shared [epoch, clock, validation accuracy] for the launcher's bar."""
    _exit_with_launcher(launcher_pid)
    verbose = os.environ.get("SIMSHARD_LOG_LEVEL") == "debug"
    if not verbose:
        _redirect_output(log_path(out, role, k))
        cli.quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {role}{'' if k < 0 else k} %(levelname)s %(name)s %(message)s")
    try:
        if role == "ps":
            def progress(_step, epoch, _total, *, clock=0, accuracy=float("nan")):
                stats[0], stats[1], stats[2] = epoch, clock, accuracy
            serve(config, rank=rank, world_size=world_size, init_method=init_method, status=status, joined=joined,
                  progress=progress)
        else:
            work(config, k, rank=rank, world_size=world_size, init_method=init_method, joined=joined)
    except InputError as exc:  # bad data (a corrupt shard file): the whole run stops, with this message
        log.error("%s%s", BAD_INPUT_PREFIX, exc)
        sys.exit(BAD_INPUT_EXIT)
    except TrainError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        log.exception("%s%s failed", role, "" if k < 0 else k)
        sys.exit(1)
