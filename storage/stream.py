"""The order in which a worker reads its shard: queue order, a row group at a time (plus a few read ahead).

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

import collections
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import rng as rng_streams
from storage import urls
from storage.dataset import features_of
from storage.shardset import ShardSet, check_finite, open_verified, verified

READ_AHEAD_REMOTE = 2
# on an object store, a shard file up to this size is fetched whole (one GET) and its row groups are read from
# memory: the epoch's permuted row-group order otherwise costs a ranged request per row group
WHOLE_FILE_BYTES = 512 * 2**20


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
        self._local = threading.local()  # per reading thread: its open files (a ParquetFile is one reader)
        # row groups read at once ahead of the one in use: one on a local disk; on an object store each read is
        # a request whose throughput is bounded per connection, so several run side by side
        self.read_ahead = READ_AHEAD_REMOTE if urls.is_remote(shards.folder) else 1
        self.sizes = {shards.folder / e.path: e.bytes for e in shards.manifest.shards[index].files}
        self._fetched: dict[Path, pa.Buffer] = {}  # whole files held in memory (object stores only)
        self._fetch_lock = threading.Lock()

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
        files = self._local.__dict__.setdefault("files", {})
        if f not in files:  # open each file (and parse its footer) once per thread, not once per row group
            files[f] = self._open(f)
        with verified(f):
            table = files[f].read_row_group(g)
        x = features_of(table, self.shards.spec)
        check_finite(x, self.shards.spec, f)
        label = self.shards.spec.label
        y = table.column(label).to_numpy() if label else np.zeros(table.num_rows, np.int64)
        return x, y

    def _open(self, f: Path) -> pq.ParquetFile:
        """``f`` for reading: from the store a whole file at most WHOLE_FILE_BYTES is fetched once (shared by
        the reading threads) and read from memory; otherwise row groups are read in place."""
        if not urls.is_remote(f) or self.sizes.get(f, WHOLE_FILE_BYTES + 1) > WHOLE_FILE_BYTES:
            return open_verified(f)
        with self._fetch_lock:
            if f not in self._fetched:
                with verified(f):
                    self._fetched[f] = pa.py_buffer(f.read_bytes())
        with verified(f):
            return pq.ParquetFile(pa.BufferReader(self._fetched[f]), page_checksum_verification=True)

    def batches(self, epoch: int, *, batch_size: int, start_sample: int = 0,
                keep: Callable[[int], bool] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Epoch ``epoch`` from row ``start_sample`` of its order in batches of ``batch_size`` rows (the last may
        be short): (features float32 (k, d), labels int64 (k,)). ``keep(b)`` False skips batch b (counted from
        ``start_sample``), and a row group that holds rows of skipped batches only is not read."""
        plan, consumed, seen = [], 0, 0  # (block, its rows in the epoch's order, whether any is kept)
        for b, perm in self.epoch_order(epoch):
            if seen + len(perm) <= start_sample:
                seen += len(perm)
                continue
            rows = perm[max(0, start_sample - seen):]
            seen += len(perm)
            wanted = keep is None or any(keep(i) for i in range(consumed // batch_size,
                                                                (consumed + len(rows) - 1) // batch_size + 1))
            plan.append((b, rows, wanted))
            consumed += len(rows)
        pending_x, pending_y, have, batch = [], [], 0, 0
        for (_, perm, _), block in zip(plan, self._read_ahead(plan)):
            if block is not None:
                x, y = block[0][perm], block[1][perm]
            rows, offset = len(perm), 0
            while offset < rows:
                take = min(batch_size - have, rows - offset)
                mine = keep is None or keep(batch)
                if mine:
                    pending_x.append(x[offset:offset + take])
                    pending_y.append(y[offset:offset + take])
                have, offset = have + take, offset + take
                if have == batch_size:
                    if mine:
                        yield _joined(pending_x), _joined(pending_y)
                    pending_x, pending_y, have, batch = [], [], 0, batch + 1
        if have and (keep is None or keep(batch)):
            yield _joined(pending_x), _joined(pending_y)


    def _read_ahead(self, plan: list) -> Iterator[tuple[np.ndarray, np.ndarray] | None]:
        """The wanted blocks of ``plan`` (None for the others), read ``read_ahead`` ahead on threads of their own:
        the next row groups' I/O overlaps the work on this one."""
        with ThreadPoolExecutor(max_workers=self.read_ahead) as pool:
            pending = collections.deque()
            items = iter(plan)
            for b, _, wanted in itertools.islice(items, self.read_ahead + 1):
                pending.append(pool.submit(self.read_block, b) if wanted else None)
            while pending:
                head = pending.popleft()
                following = next(items, None)
                if following is not None:
                    pending.append(pool.submit(self.read_block, following[0]) if following[2] else None)
                yield None if head is None else head.result()


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
