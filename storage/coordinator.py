"""Online coordination (the seed's second mechanism): workers draw their sub-batches from the same buckets.

Transport-free, like :mod:`train.rules`: the parameter-server process answers :meth:`Coordinator.draw` over RPC,
the simulator in-process, and :class:`storage.torch_dataset.AlignedShards` replays it in every rank of a
synchronous trainer (it lives in ``storage`` so that the dataset can). Per epoch the coordinator keeps, per bucket,
how many of its rows are used; each bucket is read as a ring from a seeded per-epoch offset
(:meth:`storage.index.BucketIndex.positions`), so a draw is a list of *takes* ``(bucket, offset, count)``: rows
``offset .. offset + count`` of the bucket's ring.
Messages are ints only, never row data.

At local step ``s`` of an epoch, the first worker to ask *leads*: it takes ``batch_size`` rows uniformly
without replacement from the rows not yet used this epoch (a multivariate hypergeometric draw of counts per
bucket), and those counts become step ``s``'s plan. Every other worker asking for step ``s`` follows the plan:
the same count from each bucket, in the same order, so row ``i`` of every worker's sub-batch comes from the
same bucket. A bucket that has run out *spills* to the next bucket in locality order that still has rows.

End of an epoch: rows run out. The step that finds fewer than ``batch_size`` rows left takes what is left (a
short last batch); a worker whose draw comes back empty has finished the epoch and goes on to the next one,
whose rows are a fresh pool. So every training row is used exactly once per epoch across all workers, however
unevenly fast they are; a fast worker simply trains on more of an epoch than a slow one. A worker that dies
releases its claims: no plan waits for it, and the rows it drew but never committed are counted unseen by
the run's summary.
"""

import dataclasses
import threading

import numpy as np

from storage import rng as rng_streams

Take = tuple[int, int, int]  # (bucket, offset in the bucket's epoch order, rows)


@dataclasses.dataclass
class SampledStep:
    """One sampled step of an epoch: every worker's takes, and how many takes spilled."""

    epoch: int
    step: int
    takes: dict[int, list[Take]] = dataclasses.field(default_factory=dict)
    spills: int = 0

    @property
    def distinct_buckets(self) -> int:
        return len({b for takes in self.takes.values() for b, _, _ in takes})


@dataclasses.dataclass
class _Pool:
    """One epoch's unused rows and its plans."""

    used: np.ndarray  # int64 per bucket: rows taken so far
    remaining: np.ndarray  # int64 per bucket
    rng: np.random.Generator
    plans: dict[int, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)  # step: buckets, counts
    drawn: dict[int, set[int]] = dataclasses.field(default_factory=dict)  # step: workers that drew it
    finished: set[int] = dataclasses.field(default_factory=set)  # workers whose draw came back empty


class Coordinator:
    """Plans each step's buckets; see the module doc. ``bucket_rows``: rows per bucket, buckets in locality
    order. Steps with ``step % sample_every == 0`` are recorded (at most ``max_samples``) for the metrics."""

    def __init__(self, *, bucket_rows: np.ndarray, workers: int, batch_size: int, seed: int, sample_every: int = 1,
                 max_samples: int = 64):
        self.bucket_rows = np.asarray(bucket_rows, np.int64)
        self.workers, self.batch_size, self.seed = workers, batch_size, seed
        self.sample_every, self.max_samples = max(1, sample_every), max_samples
        self.running = set(range(workers))
        self.pools: dict[int, _Pool] = {}
        self.sampled: dict[tuple[int, int], SampledStep] = {}
        self.lock = threading.Lock()

    def draw(self, worker: int, epoch: int, step: int, steps: int = 1) -> list[list[Take]]:
        """Worker ``worker``'s takes for local steps ``step .. step + steps - 1`` of epoch ``epoch``; the list
        ends early (possibly empty) once the epoch's rows have run out for this worker."""
        out = []
        with self.lock:
            pool = self._pool(epoch)
            for s in range(step, step + steps):
                takes, spills = self._draw_one(pool, worker, s)
                if not takes:
                    pool.finished.add(worker)
                    self._tidy(epoch)
                    break
                self._sample(epoch, s, worker, takes, spills)
                out.append(takes)
        return out

    def leave(self, worker: int) -> None:
        """Worker ``worker`` is done or dead: no plan waits for it any more."""
        with self.lock:
            self.running.discard(worker)
            for epoch in list(self.pools):
                self._tidy(epoch)

    # -- internals (lock held) ------------------------------------------------------------------------
    def _pool(self, epoch: int) -> _Pool:
        if epoch not in self.pools:
            self.pools[epoch] = _Pool(np.zeros_like(self.bucket_rows), self.bucket_rows.copy(),
                                      rng_streams.coordinator_draws(self.seed, epoch))
        return self.pools[epoch]

    def _draw_one(self, pool: _Pool, worker: int, step: int) -> tuple[list[Take], int]:
        if step not in pool.plans:
            left = int(pool.remaining.sum())
            if not left:
                return [], 0
            counts = pool.rng.multivariate_hypergeometric(pool.remaining, min(self.batch_size, left))
            buckets = np.flatnonzero(counts)
            pool.plans[step] = (buckets, counts[buckets])
            pool.drawn[step] = set()
        buckets, counts = pool.plans[step]
        takes, spills = [], 0
        for b, c in zip(buckets.tolist(), counts.tolist()):
            while c > 0:
                if not pool.remaining[b]:
                    b = self._next_with_rows(pool, b)
                    if b < 0:
                        break
                    spills += 1
                n = min(c, int(pool.remaining[b]))
                takes.append((b, int(pool.used[b]), n))
                pool.used[b] += n
                pool.remaining[b] -= n
                c -= n
        pool.drawn[step].add(worker)
        if self.running <= pool.drawn[step] | pool.finished:
            del pool.plans[step], pool.drawn[step]
        return takes, spills

    def _next_with_rows(self, pool: _Pool, bucket: int) -> int:
        """The next bucket after ``bucket`` in locality order (wrapping around) that has rows left, or -1."""
        ahead = np.flatnonzero(pool.remaining[bucket + 1:])
        if len(ahead):
            return bucket + 1 + int(ahead[0])
        behind = np.flatnonzero(pool.remaining[:bucket])
        return int(behind[0]) if len(behind) else -1

    def _tidy(self, epoch: int) -> None:
        pool = self.pools[epoch]
        for step in [s for s, who in pool.drawn.items() if self.running <= who | pool.finished]:
            del pool.plans[step], pool.drawn[step]
        if self.running <= pool.finished and not pool.remaining.any():
            del self.pools[epoch]

    def _sample(self, epoch: int, step: int, worker: int, takes: list[Take], spills: int) -> None:
        if step % self.sample_every:
            return
        key = (epoch, step)
        if key not in self.sampled:
            if len(self.sampled) >= self.max_samples:
                return
            self.sampled[key] = SampledStep(epoch, step)
        self.sampled[key].takes[worker] = takes
        self.sampled[key].spills += spills
