"""The order in which a worker reads its shard: queue order, one Parquet row group in memory at a time.

Every epoch reshuffles with a seed made from (seed, epoch) that is the same on every worker: the order of
row groups is permuted, then the rows inside each row group, so row k of every shard still meets at the same
step. The row-group contract that makes this hold (:mod:`storage.manifest`): every shard's files are cut
and grouped the same way, so the row groups that start below the smallest shard's row count (the *shared*
blocks) are the same on every shard, except that the last one may hold extra trailing rows. Only the shared
blocks are permuted, by one permutation of their count; a block that starts at or beyond the smallest
shard's end (a shard's extra row alone in a row group or a part file of its own) comes after them, and extra
rows come last in their block.

Resumable state: ``(epoch, sample)``, the number of rows of that epoch already consumed. Both simshard's own
workers (:class:`train.data.ShardStream`) and any PyTorch trainer (:mod:`storage.torch_dataset`) read this
order, so they see the same stream.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from storage import rng as rng_streams
from storage.dataset import features_of
from storage.shardset import ShardSet, check_finite, open_verified, verified


class ShardOrder:
    """Shard ``index`` of ``shards`` in the order of each epoch, read row group by row group."""

    def __init__(self, shards: ShardSet, index: int, *, seed: int):
        self.shards, self.index, self.seed = shards, index, seed
        self.common_rows = min(shards.manifest.rows_per_shard)
        self.blocks: list[tuple[Path, int, int, int]] = []  # (file, row group, first position, rows)
        start = 0
        for f in shards.shard_files(index):
            meta = open_verified(f).metadata
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                self.blocks.append((f, g, start, n))
                start += n
        self.rows = start
        self._files: dict[Path, pq.ParquetFile] = {}

    def __len__(self) -> int:
        return self.rows

    def epoch_order(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(block, row permutation inside it) in the order epoch ``epoch`` visits them."""
        shared = [b for b, (_, _, first, _) in enumerate(self.blocks) if first < self.common_rows]
        tail = [b for b, (_, _, first, _) in enumerate(self.blocks) if first >= self.common_rows]
        permuted = rng_streams.epoch_blocks(self.seed, epoch).permutation(len(shared))
        out = []
        for b in [shared[i] for i in permuted] + tail:
            _, _, first, n = self.blocks[b]
            common = max(0, min(n, self.common_rows - first))
            perm = rng_streams.epoch_rows(self.seed, epoch, int(b)).permutation(common)
            out.append((int(b), np.concatenate([perm, np.arange(common, n)])))
        return out

    def read_block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Row group ``b``: features float32 (n, d) and labels int64 (n,), verified."""
        f, g, _, _ = self.blocks[b]
        if f not in self._files:  # open each file (and parse its footer) once, not once per row group
            self._files[f] = open_verified(f)
        with verified(f):
            table = self._files[f].read_row_group(g)
        x = features_of(table, self.shards.spec)
        check_finite(x, self.shards.spec, f)
        label = self.shards.spec.label
        y = table.column(label).to_numpy() if label else np.zeros(table.num_rows, np.int64)
        return x, y

    def chunks(self, epoch: int, start_sample: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The rows of epoch ``epoch`` from row ``start_sample`` of its order, one permuted row group at a time:
        (features (k, d), labels (k,)); row groups wholly before ``start_sample`` are not read."""
        seen = 0
        for b, perm in self.epoch_order(epoch):
            if seen + len(perm) <= start_sample:
                seen += len(perm)
                continue
            x, y = self.read_block(b)
            skip = max(0, start_sample - seen)
            seen += len(perm)
            yield x[perm[skip:]], y[perm[skip:]]
