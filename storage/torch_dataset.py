"""simshard's shards for any PyTorch trainer: a ``torch.utils.data.IterableDataset`` for one rank.

``AlignedShards(folder, batch_size=B)`` yields rank ``r``'s shard as batches (features float32 (B, d), labels
int64 (B,); the epoch's last batch may be shorter) in exactly the order simshard's own workers train on it
(:mod:`storage.stream`): row k of every rank's stream comes from the same group of similar rows, and every
epoch reshuffles the same way on every rank. ``folder`` is a local path or an fsspec URL (``s3://...``, with
``storage_options``). Rank and world size come from the arguments or from torchrun's ``RANK`` /
``WORLD_SIZE``; rank r reads shard r.

It batches itself (a row at a time through the DataLoader's collate ran at a fifth of a plain pyarrow read),
so give the DataLoader ``batch_size=None``: ``DataLoader(dataset, batch_size=None, num_workers=W)``.
DataLoader worker w yields the batches w, w + W, w + 2W, ... of the stream (and reads only the row groups
they need), and the DataLoader takes one batch from each worker in turn, so the batches come out in the same
order as with ``num_workers=0``.

``folder`` may also be an index (``build_index``): then every step's rows come from online coordination
(:mod:`storage.coordinator`), replayed identically in every rank, so no coordinator process is needed. At step
s, rank 0 leads (a seeded hypergeometric draw of ``batch_size`` rows from the epoch's unused rows) and ranks
1..W-1 follow its buckets, as simshard's own workers do when they ask in rank order one step at a time. Any
world size works (an index has no shard count). Every rank takes the same number of steps, as synchronous
DDP needs: an epoch ends at the last step where every rank gets a full batch, so up to W × B - 1 rows of an
epoch go unused in it (other rows each epoch: the pool is drawn afresh). ``cache_mb`` bounds each reader's
cache of index row groups.

Resumable state, in the manner of mosaicml streaming: ``state_dict(num_samples)`` is ``{"epoch", "sample",
"seed"}``: the epoch and the rows of it already consumed (``num_samples``, counted by the caller; without it,
the rows this object yielded itself, which is right for ``num_workers=0``). ``load_state_dict`` makes the next
iteration start there; resume at a batch boundary to keep the batches as they were. ``set_epoch(e)`` moves
to epoch e (as ``DistributedSampler.set_epoch``); iterating with ``num_workers=0`` moves to the next epoch by
itself at the end of one.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage.coordinator import Coordinator
from storage.errors import InputError
from storage.index import BucketIndex
from storage.manifest import check_files
from storage.shardset import ShardSet
from storage.stream import ShardOrder


class AlignedShards(IterableDataset):
    """One rank's view of a shard set (see the module doc)."""

    def __init__(self, folder: str | Path, *, batch_size: int, rank: int | None = None,
                 world_size: int | None = None, seed: int = 0, epoch: int = 0, storage_options: dict | None = None,
                 cache_mb: float = 256.0):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1 (got {batch_size})")
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise InputError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        self.shards = ShardSet(folder, storage_options=storage_options, only=[])  # the manifest alone
        self.batch_size, self.seed, self.cache_bytes = batch_size, seed, int(cache_mb * 2**20)
        self.epoch, self.start_sample, self.yielded = epoch, 0, 0
        self.online = self.shards.manifest.kind == "index"
        if self.online:
            check_files(self.shards.folder, self.shards.manifest, where=self.shards.folder, only=[0])
            if self.world_size * batch_size > self.shards.manifest.rows_per_shard[0]:
                raise InputError(f"world size {self.world_size} × batch_size {batch_size} is more than the "
                                 f"{self.shards.manifest.rows_per_shard[0]} rows of the index {folder}")
            return
        if self.world_size > self.shards.workers:
            raise InputError(f"world size {self.world_size} is more than the {self.shards.workers} shards in "
                             f"{folder}; rebuild with --workers {self.world_size} or use fewer ranks")
        # this rank's files checked against the manifest; the other ranks' files are not read
        check_files(self.shards.folder, self.shards.manifest, where=self.shards.folder, only=[self.rank])

    def __len__(self) -> int:
        """Rows this rank reads in an epoch."""
        if self.online:
            return self.batch_size * len(self._steps(self.epoch))
        return self.shards.manifest.rows_per_shard[self.rank]

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start_sample, self.yielded = epoch, 0, 0

    def state_dict(self, num_samples: int | None = None) -> dict:
        consumed = self.yielded if num_samples is None else num_samples
        return {"epoch": self.epoch, "sample": self.start_sample + consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise InputError(f"the state was saved with seed {state['seed']}, this dataset has seed {self.seed}")
        self.epoch, self.start_sample, self.yielded = int(state["epoch"]), int(state["sample"]), 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.online:
            batches = self._online_batches(keep=lambda b: b % workers == worker)
        else:
            batches = ShardOrder(self.shards, self.rank, seed=self.seed).batches(
                self.epoch, batch_size=self.batch_size, start_sample=self.start_sample,
                keep=lambda b: b % workers == worker)
        for x, y in batches:
            if info is None:
                self.yielded += len(y)
            yield torch.from_numpy(x), torch.from_numpy(y)
        if info is None:  # a whole epoch read in this process: the next iteration is the next epoch
            self.set_epoch(self.epoch + 1)

    def _steps(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """This rank's takes at every step of ``epoch``: every rank's draws replayed in rank order, up to the
        last step at which every rank gets a full batch (ints only; no rows are read)."""
        coordinator = Coordinator(bucket_rows=self.shards.manifest.buckets.rows, workers=self.world_size,
                                  batch_size=self.batch_size, seed=self.seed, max_samples=0)
        mine, step = [], 0
        while True:
            drawn = [coordinator.draw(r, epoch, step) for r in range(self.world_size)]
            if any(not d or sum(c for _, _, c in d[0]) < self.batch_size for d in drawn):
                return mine
            mine.append(drawn[self.rank][0])
            step += 1

    def _online_batches(self, *, keep) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        index = BucketIndex(self.shards, cache_bytes=self.cache_bytes, seed=self.seed)
        first = self.start_sample // self.batch_size  # a resume point is a batch boundary
        for b, takes in enumerate(self._steps(self.epoch)[first:]):
            if keep(b):
                x, y, _ = index.read(index.positions(self.epoch, takes))
                yield x, y
