"""Bucket pass: encode every training row of the source with the fitted family, chunk by chunk on Dask.

Only three small arrays per row come back to the caller (source_row int64, rank int64, key float32:
20 bytes a row); feature values stay on the workers.
"""

import dataclasses

import numpy as np

from pipeline import scratch
from pipeline.deal import locality_key, stable_argsort
from pipeline.families import HashFamily, one_thread
from pipeline.scan import row_masks
from storage.dataset import Chunk, ChunkArrays, SourceDataset


@dataclasses.dataclass
class ChunkBuckets:
    """One chunk's training rows, in locality order within the chunk (by rank, then key, then source row)
    when a family encoded them, else in source order."""

    source_row: np.ndarray  # int64, training rows kept
    rank: np.ndarray  # int64, bucket position in locality order
    key: np.ndarray  # float32, in-bucket order key
    validation_rows: np.ndarray  # int64, rows of this chunk that go to validation


def bucket_chunk(chunk: Chunk, data: ChunkArrays | None = None, *, ds: SourceDataset,
                 family: HashFamily | None, seed: int, validation_fraction: float) -> ChunkBuckets:
    """Encode one chunk (``data`` when held in memory, else read). Rows with NaN/inf are skipped (the scan
    pass already refused them unless dropping). ``family`` None (orders that need no hashing) returns zero
    ranks and keys."""
    if data is None:  # read into this thread's buffer: only the codes leave the task
        data = ds.read_arrays(chunk, out=scratch.array("chunk", (chunk.rows, ds.spec.dim)))
    x = data.features
    rows = np.arange(chunk.offset, chunk.offset + chunk.rows, dtype=np.int64)
    finite, validation = row_masks(x, rows, seed=seed, validation_fraction=validation_fraction)
    train = finite & ~validation
    if family is None:
        rank, key = np.zeros(int(train.sum()), np.int64), np.zeros(int(train.sum()), np.float32)
    else:
        # encoding every row and keeping the training ones is cheaper than gathering them first
        if not finite.all():
            x = np.where(finite[:, None], x, np.float32(0))
        # one BLAS/OpenMP thread per task: Dask runs one task per core already (worker processes get this from
        # Dask's environment; an in-process worker's threads need it here, or FAISS and BLAS oversubscribe)
        with one_thread():
            bucket, key = family.encode(x)
        rank = family.rank(bucket[train])
        key = key[train]
        # the chunk's rows in locality order: the caller's sort of all rows then merges sorted runs
        # (pipeline.deal.locality_order), and the sorting is shared by the workers
        order = stable_argsort(locality_key(rank=rank, key=key))
        return ChunkBuckets(rows[train][order], rank[order], key[order], rows[finite & validation])
    return ChunkBuckets(rows[train], rank, key, rows[finite & validation])


def concat(parts: list[ChunkBuckets]) -> ChunkBuckets:
    return ChunkBuckets(*(np.concatenate([getattr(p, f.name) for p in parts])
                          for f in dataclasses.fields(ChunkBuckets)))
