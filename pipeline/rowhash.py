"""Seeded per-row uniform numbers that depend only on (seed, stream, source_row).

Sampling and the validation split use them, so which rows are chosen does not depend on how the source
is cut into files, row groups or Dask partitions (the same rows for any number of workers).
"""

import numpy as np

from storage import rng

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

STREAM_VALIDATION = rng.ROW_VALIDATION
STREAM_SAMPLE = rng.ROW_SAMPLE


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniform(rows: np.ndarray, *, seed: int, stream: int) -> np.ndarray:
    """float64 in [0, 1) for each int64 row number; a splitmix64 finaliser of (seed, stream, row)."""
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(stream))
        z = _mix(rows.astype(np.uint64) * _GOLDEN + base)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
