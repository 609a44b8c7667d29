"""Deterministic in-process simulation of n asynchronous workers under a staleness schedule.

The same rule, worker and parameter-server code as the RPC run, driven by a scheduler instead of a network:
each turn one worker runs until it has made one commit (one communication window). ``round-robin`` turns
give every worker staleness n - 1; ``random`` draws the next worker from a seeded uniform distribution;
``heterogeneous`` gives each worker a speed drawn once per seed (lognormal, σ = 0.5) and serves the worker
whose current window ends first in simulated time, so fast workers commit more often and staleness varies
as it does on a real cluster.
Time in ``metrics.parquet`` is logical (serving events), so the same seed gives identical metrics bit for bit.

    python -m train.simulate --shards DIR --out RUN [--schedule round-robin|random|heterogeneous] [options]
"""

import sys
import time
from typing import Literal

from pydantic import Field

from storage import cli
from storage import rng as rng_streams
from train import remote_out, session
from train.config import TrainConfig
from train.data import Draw
from train.worker import Average, Commit, Done, Pull, SaveState, Start

SCHEDULES = ("round-robin", "random", "heterogeneous")
SPEED_SIGMA = 0.5


def simulate(config: TrainConfig, *, schedule: str = "round-robin", progress=None, plots: bool = True) -> dict:
    """Train in this process under ``schedule``; returns the summary (an ``out`` URL gets the run folder when
    training ends: :mod:`train.remote_out`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose {' or '.join(SCHEDULES)}")
    with remote_out.local_run(config) as local:
        return _simulate(local, schedule=schedule, progress=progress, plots=plots)


def _simulate(config: TrainConfig, *, schedule: str, progress, plots: bool) -> dict:
    setup = session.prepare(config)
    ticks = [0]
    monitor = session.Monitor(setup, progress=progress)
    ps = session.server(setup, monitor, now=lambda: float(ticks[0]))
    programs = [session.worker(setup, k) for k in range(setup.workers)]
    pending = {k: next(p) for k, p in enumerate(programs)}
    blocked: dict = {}
    active = list(range(setup.workers))
    rng = rng_streams.simulator_schedule(config.seed)
    speed = rng_streams.worker_speeds(config.seed).lognormal(0.0, SPEED_SIGMA, setup.workers)
    finish_at = 1.0 / speed  # simulated time at which each worker's current window ends
    turn = 0
    wall = time.perf_counter()

    def serve(k: int) -> None:
        while True:
            ticks[0] += 1
            req = pending[k]
            end_turn = False
            if k in blocked:
                answer = blocked.pop(k).value()
                end_turn = True
            elif isinstance(req, Start):
                answer = ps.start(k)
            elif isinstance(req, Pull):
                answer = ps.pull(k)
            elif isinstance(req, Draw):
                answer = ps.draw(k, req.epoch, req.step, req.steps)
            elif isinstance(req, SaveState):
                answer = ps.save_state(k, req.state)
                end_turn = True
            elif isinstance(req, Commit):
                answer = ps.commit(k, req.payload, clock=req.clock, samples=req.samples, cursor=req.cursor,
                                   loss=req.loss)
                end_turn = True
            elif isinstance(req, Average):
                fut = ps.average(k, req.theta, samples=req.samples, cursor=req.cursor, loss=req.loss)
                if not fut.done():
                    blocked[k] = fut
                    return
                answer, end_turn = fut.value(), True
            elif isinstance(req, Done):
                ps.done(k, state=req.state, stats=req.stats)
                active.remove(k)
                return
            pending[k] = programs[k].send(answer)
            # the state a checkpoint asked for belongs to the exchange just made: same turn
            if end_turn and not isinstance(pending[k], SaveState):
                return

    while active:
        runnable = [k for k in active if k not in blocked or blocked[k].done()]
        if not runnable:
            raise RuntimeError("simulation deadlocked: every worker waits on a round that cannot close")
        if schedule == "random":
            k = int(rng.choice(runnable))
        elif schedule == "heterogeneous":
            k = min(runnable, key=lambda w: (finish_at[w], w))
            finish_at[k] += 1.0 / speed[k]
        else:
            k = min(runnable, key=lambda w: (w - turn) % setup.workers)
            turn = k + 1
        serve(k)
    # the simulator's metrics time is logical; its real duration is wall_seconds
    return session.finish(setup, ps, monitor, plots=plots,
                          extra={"startup_seconds": 0.0, "wall_seconds": time.perf_counter() - wall})


class SimulateConfig(TrainConfig):
    """The train options plus the staleness schedule."""

    schedule: Literal[SCHEDULES] = Field("round-robin", description="which worker runs next: round-robin "
                                         "(staleness n - 1), seeded random, or heterogeneous (per-worker speeds, "
                                         "lognormal σ 0.5, drawn once per seed)")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump(exclude={"schedule"}, exclude_unset=True))


def main(argv=None) -> int:
    parser = cli.model_parser(SimulateConfig, prog="python -m train.simulate", description=(
        "Simulate N asynchronous workers in one process, deterministically (same seed, same metrics)."))
    values, common = cli.split_common(parser.parse_args(argv))
    cli.configure_logging(common.log_level)

    def command() -> int:
        config = SimulateConfig(**values)
        summary = simulate(config.train_config(), schedule=config.schedule)
        print(f"simulated {summary['optimizer']} with {summary['workers']} workers ({config.schedule}): final "
              f"accuracy {summary['final_accuracy']:.4f}, epochs to target {summary['epochs_to_target']}, "
              f"mean staleness {summary['mean_staleness']}; outputs in {config.out}")
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    sys.exit(main())
