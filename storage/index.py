"""Read an index (build_index) bucket by bucket, through a bounded cache of row groups.

An index is one sequence of training rows in locality order; its manifest's
:class:`~storage.manifest.BucketTable` says where each bucket's rows lie. A worker trained with online
coordination asks for rows by takes (bucket, offset, count) of that bucket's ring in the epoch
(:meth:`BucketIndex.positions`); :meth:`BucketIndex.read` maps their positions to row groups (row group g of
a file holds its positions ``[g * row_group_rows, (g + 1) * row_group_rows)``: :mod:`storage.manifest`) and
reads those through :class:`RowGroupCache`, so a worker holds at most ``cache_bytes`` of the index (plus the
one row group in use) whatever the index's size.
"""

import collections
import dataclasses
from pathlib import Path

import numpy as np

from storage import rng as rng_streams
from storage.dataset import features_of
from storage.errors import InputError, ManifestError
from storage.shardset import ShardSet, check_finite, open_verified, verified


def open_index(folder: str | Path, *, flag: str = "--index") -> ShardSet:
    """The index in ``folder``; a shard set there is a one-line :class:`InputError` saying to use --shards."""
    try:
        shards = ShardSet(folder)
    except ManifestError as exc:
        raise InputError(str(exc)) from exc
    if shards.manifest.kind != "index":
        raise InputError(f"{flag} {folder} is a shard set (build_shards), not an index; pass it as --shards, or "
                         "build an index with python -m flows.build_index")
    return shards


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else float("nan")


class RowGroupCache:
    """Least-recently-used row groups of ``files``: (features float32 (n, d), labels int64 (n,), source_row
    int64 (n,)), verified on read, at most ``max_bytes`` held (always at least the one just read)."""

    def __init__(self, shards: ShardSet, files: list[Path], *, max_bytes: int):
        self.shards, self.files, self.max_bytes = shards, files, max_bytes
        self.entries: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()
        self.bytes = 0
        self.stats = CacheStats()
        self._open: dict[int, object] = {}

    def get(self, file: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (file, group)
        if key in self.entries:
            self.stats.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.stats.misses += 1
        value = self._read(file, group)
        size = sum(a.nbytes for a in value)
        while self.entries and self.bytes + size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old)
        self.entries[key] = value
        self.bytes += size
        return value

    def _read(self, file: int, group: int):
        path = self.files[file]
        if file not in self._open:
            self._open[file] = open_verified(path)
        with verified(path):
            table = self._open[file].read_row_group(group)
        spec = self.shards.spec
        x = features_of(table, spec)
        check_finite(x, spec, path)
        y = table.column(spec.label).to_numpy() if spec.label else np.zeros(table.num_rows, np.int64)
        return x, y.astype(np.int64, copy=False), table.column("source_row").to_numpy()


class BucketIndex:
    """An index's buckets (in locality order, ``0..buckets-1``) and their rows."""

    def __init__(self, shards: ShardSet, *, cache_bytes: int, seed: int):
        m = shards.manifest
        self.shards, self.seed = shards, seed
        self.bucket_rows = np.asarray(m.buckets.rows, np.int64)
        file_rows = np.asarray([f.rows for f in m.shards[0].files], np.int64)
        self.file_start = np.concatenate([[0], np.cumsum(file_rows)[:-1]])
        self.bucket_start = self.file_start[np.asarray(m.buckets.file)] + np.asarray(m.buckets.first_row)
        self.row_group_rows = m.row_group_rows
        self.cache = RowGroupCache(shards, shards.shard_files(0), max_bytes=cache_bytes)
        self._rotations: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    @property
    def buckets(self) -> int:
        return len(self.bucket_rows)

    def rotation(self, epoch: int) -> np.ndarray:
        """Per bucket, the row (0..rows-1 in the bucket) epoch ``epoch`` starts reading it at: a bucket is read
        as a ring in its stored (in-bucket key) order from a seeded per-epoch offset, so a take is contiguous."""
        if epoch not in self._rotations:
            self._rotations[epoch] = (rng_streams.bucket_rows(self.seed, epoch, 0).random(self.buckets)
                                      * self.bucket_rows).astype(np.int64)
            if len(self._rotations) > 2:
                self._rotations.popitem(last=False)
        return self._rotations[epoch]

    def positions(self, epoch: int, takes: list[tuple[int, int, int]]) -> np.ndarray:
        """Index positions (int64) of the rows of ``takes`` ((bucket, offset, count): rows ``offset ..
        offset + count`` of the bucket's ring in epoch ``epoch``), in take order."""
        if not takes:
            return np.zeros(0, np.int64)
        bucket, offset, count = (np.asarray(a, np.int64) for a in zip(*takes))
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        ring = np.repeat(offset + self.rotation(epoch)[bucket], count) + within
        return np.repeat(self.bucket_start[bucket], count) + ring % np.repeat(self.bucket_rows[bucket], count)

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows at index ``positions`` (int64, any order), in that order: features (k, d) float32, labels (k,)
        int64, source_row (k,) int64."""
        file = np.searchsorted(self.file_start, positions, side="right") - 1
        within = positions - self.file_start[file]
        group, row = within // self.row_group_rows, within % self.row_group_rows
        x = np.empty((len(positions), self.shards.spec.dim), np.float32)
        y = np.empty(len(positions), np.int64)
        src = np.empty(len(positions), np.int64)
        key = file * (int(group.max(initial=0)) + 1) + group
        by_key = np.argsort(key, kind="stable")
        starts = np.flatnonzero(np.diff(key[by_key], prepend=-1))
        for lo, hi in zip(starts, [*starts[1:], len(by_key)]):
            sel = by_key[lo:hi]
            gx, gy, gs = self.cache.get(int(file[sel[0]]), int(group[sel[0]]))
            x[sel], y[sel], src[sel] = gx[row[sel]], gy[row[sel]], gs[row[sel]]
        return x, y, src
