"""Batches of a worker's shard for simshard's own workers, in the order :mod:`storage.stream` defines (the same
every worker and every epoch's reshuffle agree on), plus the validation set and the ``single`` reference's rows.
"""

from collections.abc import Iterator

import numpy as np
import torch

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
        pending_x, pending_y, have = [], [], 0
        for x, y in self.order.chunks(epoch, start_sample):
            pending_x.append(x)
            pending_y.append(y)
            have += len(x)
            while have >= self.batch_size:
                bx, by = np.concatenate(pending_x), np.concatenate(pending_y)
                yield torch.from_numpy(bx[:self.batch_size]), torch.from_numpy(by[:self.batch_size])
                pending_x, pending_y = [bx[self.batch_size:]], [by[self.batch_size:]]
                have -= self.batch_size
        if have:
            yield torch.from_numpy(np.concatenate(pending_x)), torch.from_numpy(np.concatenate(pending_y))


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
