"""The parameter server's state and rules, free of any transport.

θ̃ (``centre``) and the clock live under one lock, and the clock moves inside it. Each commit is recorded:
time, epoch (rows trained by all workers ÷ training rows), commit (clock after it), worker, staleness τ,
update norm, conflict (cosine between this update and the last update of another worker) and the worker's
training loss. Every ``eval_every`` commits a snapshot of θ̃ is handed to ``on_snapshot``; the RPC server
evaluates it on a thread of its own so commits are not held back, the simulator evaluates inline.

Checkpoints are consistent cuts (:class:`Cut`), independent of evaluation: when the clock reaches a multiple of
``checkpoint_every``, the server copies θ̃, the clock, every worker's cursor and rows seen. Each running worker's
local optimizer state as of its last exchange before that clock (which matches its recorded cursor) is asked
for in the answer to its next exchange, or comes with its ``done``; once every running worker's state is in,
the cut goes to ``on_checkpoint``. A worker that dies first is left out (it restarts its optimizer on
resume). One cut is pending at a time: a checkpoint time reached while one is still open is skipped.
"""

import dataclasses
import threading
import time
from collections.abc import Callable

import torch
from torch.futures import Future

from train.rules import Rule, average

RUNNING, DONE, DEAD = 0, 1, 2


@dataclasses.dataclass
class Cut:
    """A checkpoint: θ̃ (``centre``), ``clock``, per worker its cursor, rows seen and local optimizer state
    (``states[k]``; absent for a worker that died), and how many commit records existed at ``clock``."""

    clock: int
    centre: torch.Tensor
    cursors: list[tuple[int, int]]
    samples: list[int]
    records: int
    elapsed: float  # training time at the cut (metrics time: seconds over RPC, logical in the simulator)
    states: dict[int, dict] = dataclasses.field(default_factory=dict)
    waiting: set[int] = dataclasses.field(default_factory=set)  # running workers whose state is still to come
    to_ask: set[int] = dataclasses.field(default_factory=set)  # of those, the ones not asked yet


class ParameterServer:
    def __init__(self, *, rule: Rule | None, centre: torch.Tensor, workers: int, train_rows: int, eval_every: int,
                 on_snapshot: Callable[[int, float, torch.Tensor], None], clock: int = 0,
                 cursors: list[tuple[int, int]] | None = None, samples: list[int] | None = None,
                 checkpoint_every: int = 0, on_checkpoint: Callable[[Cut], None] | None = None,
                 optimizer_states: list[dict] | None = None, elapsed: float = 0.0,
                 now: Callable[[], float] = time.monotonic):
        self.rule, self.centre, self.clock = rule, centre.clone(), clock
        self.elapsed_before = elapsed  # training time of the segments before a --resume
        self.checkpoint_every, self.on_checkpoint = checkpoint_every, on_checkpoint
        self.resume_states = list(optimizer_states or [{}] * workers)
        self.final_states: dict[int, dict] = {}
        self.cut: Cut | None = None
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
        self.coordinator = None  # a storage.coordinator.Coordinator when the data comes from an index
        self.worker_stats: dict[int, dict] = {}  # what each finished worker reported of its data source

    # -- queries ---------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Training time so far, continuing across resumes: the time column of the metrics."""
        return self.elapsed_before + self.now() - self.start_time

    def start_clock(self) -> None:
        """Training starts now (over RPC: once every rank has joined), for :meth:`elapsed`."""
        self.start_time = self.now()

    @property
    def epoch(self) -> float:
        return sum(self.samples) / max(1, self.train_rows)

    def finished(self) -> bool:
        return all(s != RUNNING for s in self.status)

    # -- requests ----------------------------------------------------------------------------------------
    def start(self, worker: int) -> tuple[torch.Tensor, int, tuple[int, int], dict | None]:
        """A worker's first request: the centre, the clock, its cursor and (on resume) its optimizer state."""
        centre, clock, cursor = self.pull(worker)
        return centre, clock, cursor, self.resume_states[worker] or None

    def pull(self, worker: int) -> tuple[torch.Tensor, int, tuple[int, int]]:
        with self.lock:
            centre = self.centre.clone()
            if self.rule is not None and self.rule.needs_pulled_centre:
                self.pulled[worker] = centre
            return centre, self.clock, self.cursors[worker]

    def commit(self, worker: int, payload: torch.Tensor, *, clock: int, samples: int, cursor: tuple[int, int],
               loss: float) -> tuple[torch.Tensor, int, bool]:
        """Apply one asynchronous commit; return the centre after it (the worker's next pull), the clock and
        whether a pending checkpoint wants the worker's previous optimizer state. Only the rule, the clock and
        a copy of the centre happen under the lock; the update norm and the conflict cosine are computed after
        it is released."""
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
            wanted = self._ask(worker)
            self._maybe_cut()
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
        return centre, clock_now, wanted

    def save_state(self, worker: int, state: dict) -> None:
        """A worker's optimizer state for the pending cut (as of its last exchange before the cut's clock)."""
        with self.lock:
            done = self._deliver(worker, state)
        self._hand_over(done)

    def average(self, worker: int, theta: torch.Tensor, *, samples: int, cursor: tuple[int, int],
                loss: float) -> Future:
        """Submit to the current synchronous round; the future completes with (the averaged centre, whether a
        pending checkpoint wants this worker's previous optimizer state) when every worker still running has
        submitted (workers that are done or dead do not hold a round back)."""
        fut: Future = Future()
        with self.lock:
            self.round[worker] = (theta, fut)
            self.samples[worker] += samples
            self.cursors[worker] = cursor
            self.round_loss[worker] = loss
            closed = self._close_round_if_complete()
        self._resolve(closed)
        return fut

    def draw(self, worker: int, epoch: int, step: int, steps: int) -> list:
        """Online coordination: the worker's takes for ``steps`` local steps (:mod:`storage.coordinator`)."""
        return self.coordinator.draw(worker, epoch, step, steps)

    def done(self, worker: int, *, state: dict | None = None, dead: bool = False, stats: dict | None = None) -> None:
        """Worker ``worker`` has finished (``state``: its optimizer state at its last exchange) or died."""
        if self.coordinator is not None:
            self.coordinator.leave(worker)
        if stats:
            self.worker_stats[worker] = stats
        with self.lock:
            if self.status[worker] == RUNNING:
                self.status[worker] = DEAD if dead else DONE
            if state is not None and not dead:
                self.final_states[worker] = state
            cut_done = self._deliver(worker, None if dead else state)
            closed = self._close_round_if_complete()
        self._hand_over(cut_done)
        self._resolve(closed)

    def final_cut(self) -> Cut:
        """The end of the run as a checkpoint: every finished worker's last optimizer state."""
        with self.lock:
            return Cut(self.clock, self.centre.clone(), list(self.cursors), list(self.samples), len(self.records),
                       self.elapsed(), states=dict(self.final_states))

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
        answers = [(f, self._ask(k)) for k, (_, f) in self.round.items()]
        self._maybe_cut()
        self.round = {}
        return answers, self.centre.clone(), self._due()

    def _resolve(self, closed) -> None:
        if closed is None:
            return
        answers, centre, snapshot = closed
        if snapshot is not None:
            self.on_snapshot(*snapshot)
        for f, wanted in answers:
            f.set_result((centre, wanted))

    def _ask(self, worker: int) -> bool:
        """Whether this exchange's answer asks ``worker`` for its previous optimizer state."""
        if self.cut is not None and worker in self.cut.to_ask:
            self.cut.to_ask.discard(worker)
            return True
        return False

    def _maybe_cut(self) -> None:
        if not self.checkpoint_every or self.clock % self.checkpoint_every or self.cut is not None:
            return
        running = {k for k, s in enumerate(self.status) if s == RUNNING}
        self.cut = Cut(self.clock, self.centre.clone(), list(self.cursors), list(self.samples), len(self.records),
                       self.elapsed(), waiting=set(running), to_ask=set(running))

    def _deliver(self, worker: int, state: dict | None) -> Cut | None:
        """Record ``worker``'s state (None: it died) in the pending cut; return the cut once complete."""
        cut = self.cut
        if cut is None or worker not in cut.waiting:
            return None
        if state is not None:
            cut.states[worker] = state
        cut.waiting.discard(worker)
        cut.to_ask.discard(worker)
        if cut.waiting:
            return None
        self.cut = None
        return cut

    def _hand_over(self, cut: Cut | None) -> None:
        if cut is not None and self.on_checkpoint is not None:
            self.on_checkpoint(cut)

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
        return {"time": self.elapsed(), "epoch": self.epoch, "commit": self.clock, "worker": worker,
                "staleness": staleness, "update_norm": norm, "conflict": conflict, "train_loss": loss}

    def _due(self):
        if self.clock % self.eval_every == 0:
            return self.clock, self.epoch, self.centre.clone()
        return None
