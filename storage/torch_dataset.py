"""simshard's shards for any PyTorch trainer: a ``torch.utils.data.IterableDataset`` for one rank.

``AlignedShards(folder, batch_size=B)`` yields rank ``r``'s shard as (features float32 (d,), label int64) rows
in exactly the order simshard's own workers train on it (:mod:`storage.stream`): row k of every rank's stream
comes from the same group of similar rows, and every epoch reshuffles the same way on every rank. Rank and
world size come from the arguments or from torchrun's ``RANK`` / ``WORLD_SIZE``; rank r reads shard r.

With a plain ``DataLoader(dataset, batch_size=B, num_workers=W)``: DataLoader worker w yields the global
batches w, w + W, w + 2W, ... of the stream, and the DataLoader takes one batch from each worker in turn, so
the batches come out in the same order as with ``num_workers=0``. Pass the DataLoader's batch size to the
dataset.

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

from storage.errors import InputError
from storage.shardset import ShardSet
from storage.stream import ShardOrder


class AlignedShards(IterableDataset):
    """One rank's view of a shard set (see the module doc)."""

    def __init__(self, folder: str | Path, *, batch_size: int, rank: int | None = None,
                 world_size: int | None = None, seed: int = 0, epoch: int = 0):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1 (got {batch_size})")
        self.shards = ShardSet(folder)
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise InputError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        if self.world_size > self.shards.workers:
            raise InputError(f"world size {self.world_size} is more than the {self.shards.workers} shards in "
                             f"{folder}; rebuild with --workers {self.world_size} or use fewer ranks")
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.start_sample, self.yielded = epoch, 0, 0

    def __len__(self) -> int:
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        order = ShardOrder(self.shards, self.rank, seed=self.seed)
        index = 0  # position in this iteration, from the start sample: batch index // batch_size
        for x, y in order.chunks(self.epoch, self.start_sample):
            batch = (index + np.arange(len(y))) // self.batch_size
            mine = np.flatnonzero(batch % workers == worker)
            index += len(y)
            for i in mine:
                if info is None:
                    self.yielded += 1
                yield torch.from_numpy(x[i]), int(y[i])
        if info is None:  # a whole epoch read in this process: the next iteration is the next epoch
            self.set_epoch(self.epoch + 1)
