"""Batches of a worker's shard for simshard's own workers, in the order :mod:`storage.stream` defines (the same
every worker and every epoch's reshuffle agree on), plus the validation set and the ``single`` reference's rows.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from storage.index import BucketIndex
from storage.shardset import ShardSet
from storage.stream import ShardOrder


class ShardStream:
    """Batches of (features float32 (b, d), labels int64 (b,)) from shard ``index`` of ``shards``."""

    def __init__(self, shards: ShardSet, index: int, *, batch_size: int, seed: int):
        self.order = ShardOrder(shards, index, seed=seed)
        self.shards, self.index, self.batch_size, self.seed = shards, index, batch_size, seed

    def __len__(self) -> int:
        return len(self.order)

    @property
    def blocks(self):
        return self.order.blocks

    def epoch_order(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        return self.order.epoch_order(epoch)

    def batches(self, epoch: int, start_sample: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch ``epoch`` from row ``start_sample`` of its order (a resume point)."""
        for x, y in self.order.batches(epoch, batch_size=self.batch_size, start_sample=start_sample):
            yield torch.from_numpy(x), torch.from_numpy(y)


@dataclasses.dataclass(frozen=True)
class Draw:
    """A request an :class:`OnlineStream` yields: the takes (:mod:`storage.coordinator`) of local steps
    ``step .. step + steps - 1`` of ``epoch``. Answer: a list of per-step take lists, shorter (possibly
    empty) once the epoch's rows have run out."""

    epoch: int
    step: int
    steps: int


class OnlineStream:
    """Batches from an index, coordinated with the other workers: :meth:`batches` yields :class:`Draw`
    requests (answered by the coordinator through the worker's transport) as well as batches. It asks for
    ``ahead`` steps per request, so a worker makes one coordination call per communication window. It has no
    length: an epoch ends when the coordinator's rows run out."""

    def __init__(self, index: BucketIndex, *, ahead: int):
        self.index, self.ahead = index, max(1, ahead)

    def batches(self, epoch: int, start_sample: int = 0):
        if start_sample:
            raise ValueError("online coordination cannot resume mid-epoch")
        step = 0
        while True:
            planned = yield Draw(epoch, step, self.ahead)
            if not planned:
                return
            # one read for the whole window: its steps share row groups
            per_step = [self.index.positions(epoch, takes) for takes in planned]
            x, y, _ = self.index.read(np.concatenate(per_step))
            bounds = np.cumsum([0] + [len(p) for p in per_step])
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                yield torch.from_numpy(x[lo:hi]), torch.from_numpy(y[lo:hi])
            step += len(planned)
            if len(planned) < self.ahead:
                return


def load_validation(shards: ShardSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole validation set as tensors (features float32 (n, d), labels int64 (n,))."""
    x, y, _ = shards.read_validation()
    if y is None:
        raise ValueError(f"{shards.folder}: training needs a label column; the manifest has none")
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def load_all(shards: ShardSet) -> tuple[np.ndarray, np.ndarray]:
    """Every shard's rows (for the ``single`` reference): features (n, d) float32, labels int64 (n,)."""
    x, y, _ = shards.read_arrays([f for i in range(shards.workers) for f in shards.shard_files(i)])
    return x, y
