"""``step_tightness``: how similar the rows are that different workers train on at the same step.

For a sampled step, row ``i`` of worker ``a``'s sub-batch is paired with row ``i`` of worker ``b``'s (the
pairing both mechanisms align: row k of every pre-split shard comes from group k, and online followers take
their rows in the leader's bucket order). ``step_tightness`` is the mean Euclidean distance over those pairs,
all worker pairs and sampled steps, divided by the mean distance between random pairs of the same rows.
About 1 means no alignment; lower means the workers saw similar data together.

Pre-split shards: steps sampled from the first row group of epoch 0's order (one row group read per
worker: the order permutes row groups and rows, so its first steps are as typical as any). Online
coordination: the steps the coordinator sampled, read back from the index.
"""

import dataclasses
from collections.abc import Iterable

import numpy as np

from storage import rng as rng_streams
from storage.index import BucketIndex
from storage.shardset import ShardSet
from storage.stream import ShardOrder

SAMPLED_STEPS = 32
RANDOM_PAIRS = 20_000
CACHE_BYTES = 64 * 2**20


@dataclasses.dataclass
class Measured:
    ratio: float | None  # step_tightness; None when fewer than two workers shared a sampled step
    steps: list[dict]  # per sampled step: epoch, step, step_tightness (online: distinct_buckets, spills too)


def ratio(step_batches: list[list[np.ndarray]], *, seed: int) -> tuple[float | None, list[float | None]]:
    """``step_batches``: per sampled step, each worker's sub-batch features (b_k, d), rows position-matched.
    Returns the overall ratio and each step's (its pairs' mean distance over the same random baseline)."""
    per_step, rows = [], []
    for batches in step_batches:
        rows.extend(b for b in batches if len(b))
        pairs = [np.linalg.norm(batches[a][:m] - batches[b][:m], axis=1)
                 for a in range(len(batches)) for b in range(a + 1, len(batches))
                 if (m := min(len(batches[a]), len(batches[b])))]
        per_step.append(np.concatenate(pairs) if pairs else None)
    matched = [d for d in per_step if d is not None]
    if not matched:
        return None, [None] * len(per_step)
    pool = np.concatenate(rows)
    rng = rng_streams.tightness_pairs(seed)
    i, j = rng.integers(len(pool), size=(2, RANDOM_PAIRS))
    keep = i != j
    random = float(np.linalg.norm(pool[i[keep]] - pool[j[keep]], axis=1).mean())
    if random <= 0:
        return None, [None] * len(per_step)
    return (float(np.concatenate(matched).mean()) / random,
            [None if d is None else float(d.mean()) / random for d in per_step])


def presplit(shards: ShardSet, *, workers: int, batch_size: int, seed: int) -> Measured:
    """Sampled steps of epoch 0 of workers ``0..workers-1`` reading their pre-split shards."""
    if workers < 2:
        return Measured(None, [])
    orders = [ShardOrder(shards, k, seed=seed) for k in range(workers)]
    firsts = [o.epoch_order(0)[0] for o in orders]  # (block, row permutation) each worker reads first
    steps = min(len(perm) for _, perm in firsts) // batch_size
    if not steps:
        return Measured(None, [])
    blocks = [o.read_block(b)[0] for o, (b, _) in zip(orders, firsts)]
    sampled = np.unique(np.linspace(0, steps - 1, min(steps, SAMPLED_STEPS)).round().astype(int))
    batches = [[x[perm[s * batch_size:(s + 1) * batch_size]] for x, (_, perm) in zip(blocks, firsts)]
               for s in sampled]
    overall, per_step = ratio(batches, seed=seed)
    return Measured(overall, [{"epoch": 0, "step": int(s), "step_tightness": t} for s, t in zip(sampled, per_step)])


def online(sampled: Iterable, index: ShardSet, *, seed: int) -> Measured:
    """The coordinator's sampled steps (:class:`storage.coordinator.SampledStep`), read back from the index."""
    reader = BucketIndex(index, cache_bytes=CACHE_BYTES, seed=seed)
    batches, steps = [], []
    for step in sampled:
        steps.append({"epoch": step.epoch, "step": step.step, "distinct_buckets": step.distinct_buckets,
                      "spills": step.spills})
        per_worker = []
        for _, takes in sorted(step.takes.items()):
            per_worker.append(reader.read(reader.positions(step.epoch, takes))[0])
        batches.append(per_worker)
    overall, per_step = ratio(batches, seed=seed)
    for row, t in zip(steps, per_step):
        row["step_tightness"] = t
    return Measured(overall, steps)
