"""Where every row goes: the destination-key layout of a shard set, owned here alone.

A kept training row that is row ``pos`` of shard ``shard`` gets the key ``shard * stride + pos``, with
``stride`` the largest shard's row count; validation row ``i`` gets ``workers * stride + i``. Sorting by key
therefore lays out shard 0, shard 1, ..., then validation, and each output part file is one key range
(``Target.first`` to the next target's first key), which the write pass turns into Dask divisions.
"""

import dataclasses
import math

import numpy as np

from storage.manifest import shard_name


@dataclasses.dataclass(frozen=True)
class Target:
    """One output part file: ``kind`` is "shard" or "validation"."""

    kind: str
    index: int
    part: int
    path: str  # relative to the shard folder
    first: int  # first destination key (inclusive)
    rows: int  # the file's keys are first .. first + rows - 1, every one of them used

    @property
    def end(self) -> int:
        """One past the file's last destination key."""
        return self.first + self.rows


@dataclasses.dataclass(frozen=True)
class DestLayout:
    rows_per_shard: tuple[int, ...]
    validation_rows: int

    @property
    def workers(self) -> int:
        return len(self.rows_per_shard)

    @property
    def stride(self) -> int:
        return max(self.rows_per_shard)

    def keys(self, shard: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """int64 keys of training rows (``shard`` int, ``pos`` int64)."""
        return shard.astype(np.int64) * self.stride + pos

    def validation_keys(self, count: int) -> np.ndarray:
        return self.workers * self.stride + np.arange(count, dtype=np.int64)

    def targets(self, *, rows_per_part: int) -> tuple[list[Target], list[int]]:
        """The output part files in key order and the Dask divisions that put each in its own partition."""
        targets: list[Target] = []

        def add(kind, index, rows, base, stem):
            parts = max(1, math.ceil(rows / rows_per_part))
            for j in range(parts):
                path = f"{stem}.parquet" if parts == 1 else f"{stem}/part-{j:05d}.parquet"
                targets.append(Target(kind, index, j, path, base + j * rows_per_part,
                                      min(rows_per_part, rows - j * rows_per_part)))

        for i, rows in enumerate(self.rows_per_shard):
            add("shard", i, rows, i * self.stride, shard_name(i, self.workers))
        last = (self.workers - 1) * self.stride + self.rows_per_shard[-1] - 1
        if self.validation_rows:
            add("validation", 0, self.validation_rows, self.workers * self.stride, "validation")
            last = self.workers * self.stride + self.validation_rows - 1
        return targets, [t.first for t in targets] + [last]
