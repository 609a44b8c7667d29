"""The parameter server's state and rules, free of any transport.

θ̃ (``centre``) and the clock live under one lock, and the clock moves inside it. Each commit is recorded:
time, epoch (rows trained by all workers ÷ training rows), commit (clock after it), worker, staleness τ,
update norm, conflict (cosine between this update and the last update of another worker) and the worker's
training loss. Every ``eval_every`` commits a snapshot of θ̃ is handed to ``on_snapshot``; the RPC server
evaluates it on a thread of its own so commits are not held back, the simulator evaluates inline.
"""

import threading
import time
from collections.abc import Callable

import torch
from torch.futures import Future

from train.rules import Rule, average

RUNNING, DONE, DEAD = 0, 1, 2


class ParameterServer:
    def __init__(self, *, rule: Rule | None, centre: torch.Tensor, workers: int, train_rows: int, eval_every: int,
                 on_snapshot: Callable[[int, float, torch.Tensor], None], clock: int = 0,
                 cursors: list[tuple[int, int]] | None = None, samples: list[int] | None = None,
                 now: Callable[[], float] = time.monotonic):
        self.rule, self.centre, self.clock = rule, centre.clone(), clock
        self.workers, self.train_rows, self.eval_every = workers, train_rows, eval_every
        self.on_snapshot, self.now = on_snapshot, now
        self.start_time = now()
        self.lock = threading.Lock()
        self.status = [RUNNING] * workers
        self.cursors = list(cursors or [(0, 0)] * workers)
        self.samples = list(samples or [0] * workers)
        self.pulled: dict[int, torch.Tensor] = {}
        self.last_update: tuple[int, torch.Tensor, dict] | None = None  # (worker, update, its record)
        self.last_other: tuple[int, torch.Tensor, dict] | None = None
        self.records: list[dict] = []
        self.round: dict[int, tuple[torch.Tensor, Future]] = {}
        self.round_loss: dict[int, float] = {}

    # -- queries ---------------------------------------------------------------------------------------
    @property
    def epoch(self) -> float:
        return sum(self.samples) / max(1, self.train_rows)

    def finished(self) -> bool:
        return all(s != RUNNING for s in self.status)

    # -- requests ----------------------------------------------------------------------------------------
    def pull(self, worker: int) -> tuple[torch.Tensor, int, tuple[int, int]]:
        with self.lock:
            centre = self.centre.clone()
            if self.rule is not None and self.rule.needs_pulled_centre:
                self.pulled[worker] = centre
            return centre, self.clock, self.cursors[worker]

    def commit(self, worker: int, payload: torch.Tensor, *, clock: int, samples: int, cursor: tuple[int, int],
               loss: float) -> tuple[torch.Tensor, int]:
        """Apply one asynchronous commit; return the centre after it (the worker's next pull). Only the rule,
        the clock and a copy of the centre happen under the lock; the update norm and the conflict cosine
        are computed after it is released."""
        with self.lock:
            staleness = self.clock - clock
            update = self.rule.server_apply(self.centre, payload, staleness=staleness,
                                            pulled_centre=self.pulled.get(worker))
            self.clock += 1
            row, other, other_row = self._record(worker, staleness, update, samples, cursor, loss)
            centre = self.centre.clone()
            if self.rule.needs_pulled_centre:
                self.pulled[worker] = centre
            clock_now = self.clock
            snapshot = self._due()
        norm = float(update.norm())
        row["update_norm"] = norm
        if other is not None:  # cosine from one dot product; the other update's norm is usually recorded already
            other_norm = other_row["update_norm"]
            if other_norm != other_norm:  # nan: its committer has not filled it in yet
                other_norm = float(other.norm())
            row["conflict"] = float(torch.dot(update, other)) / max(norm * other_norm, 1e-30)
        if snapshot is not None:
            self.on_snapshot(*snapshot)
        return centre, clock_now

    def average(self, worker: int, theta: torch.Tensor, *, samples: int, cursor: tuple[int, int],
                loss: float) -> Future:
        """Submit to the current synchronous round; the future completes with the averaged centre when every
        worker still running has submitted (workers that are done or dead do not hold a round back)."""
        fut: Future = Future()
        with self.lock:
            self.round[worker] = (theta, fut)
            self.samples[worker] += samples
            self.cursors[worker] = cursor
            self.round_loss[worker] = loss
            closed = self._close_round_if_complete()
        self._resolve(closed)
        return fut

    def done(self, worker: int, *, dead: bool = False) -> None:
        with self.lock:
            if self.status[worker] == RUNNING:
                self.status[worker] = DEAD if dead else DONE
            closed = self._close_round_if_complete()
        self._resolve(closed)

    # -- internals (called with the lock held) ------------------------------------------------------------
    def _close_round_if_complete(self):
        if not self.round:
            return None
        running = {k for k, s in enumerate(self.status) if s == RUNNING}
        if not running <= set(self.round):
            return None
        before = self.centre
        thetas = [t for t, _ in self.round.values()]
        self.centre = average(thetas)
        self.clock += 1
        deltas = [t - before for t in thetas]
        conflict = float(torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=0)
                                      for i, a in enumerate(deltas) for b in deltas[i + 1:]]).mean()) \
            if len(deltas) > 1 else float("nan")
        self.records.append(self._row(-1, 0, float((self.centre - before).norm()), conflict,
                                      sum(self.round_loss[k] for k in self.round) / len(self.round)))
        futures = [f for _, f in self.round.values()]
        self.round = {}
        return futures, self.centre.clone(), self._due()

    def _resolve(self, closed) -> None:
        if closed is None:
            return
        futures, centre, snapshot = closed
        if snapshot is not None:
            self.on_snapshot(*snapshot)
        for f in futures:
            f.set_result(centre)

    def _record(self, worker, staleness, update, samples, cursor, loss):
        """Append this commit's row (norm and conflict filled in by the caller); return it, the last update of
        another worker and that update's row. Updates are kept by reference: nothing modifies them after they
        are applied."""
        self.samples[worker] += samples
        self.cursors[worker] = cursor
        previous = None
        if self.last_update is not None:
            previous = self.last_update if self.last_update[0] != worker else self.last_other
            if self.last_update[0] != worker:
                self.last_other = self.last_update
        row = self._row(worker, staleness, float("nan"), float("nan"), loss)
        self.last_update = (worker, update, row)
        self.records.append(row)
        return (row, None, None) if previous is None else (row, previous[1], previous[2])

    def _row(self, worker, staleness, norm, conflict, loss) -> dict:
        return {"time": self.now() - self.start_time, "epoch": self.epoch, "commit": self.clock, "worker": worker,
                "staleness": staleness, "update_norm": norm, "conflict": conflict, "train_loss": loss}

    def _due(self):
        if self.clock % self.eval_every == 0:
            return self.clock, self.epoch, self.centre.clone()
        return None

    def state(self) -> dict:
        """Checkpointable state (tensors and plain numbers only: loads with ``weights_only=True``)."""
        with self.lock:
            return {"centre": self.centre.clone(), "clock": self.clock,
                    "cursors": torch.tensor(self.cursors, dtype=torch.int64),
                    "samples": torch.tensor(self.samples, dtype=torch.int64)}
