"""The write pass's shuffle for data that fits in cluster memory: numpy blocks moved by Dask's own means.

Each source chunk is split (one task per chunk) into one block per output part file: the chunk's rows bound
for that file, as (dest int64 (k,), features float32 (dim, k) one contiguous row per feature, labels int64
(k,) or None, source_row int64 (k,)). Each part file's writer task receives its blocks from every chunk
(``dask.delayed`` with ``nout``: the scheduler moves them), puts its rows in destination order and writes.
Four arrays a block instead of a 67-column pandas frame: no per-column bookkeeping in the shuffle and no
pandas/Arrow round trip. Larger-than-memory data keeps the DataFrame p2p shuffle (:mod:`pipeline.write`).
"""

from pathlib import Path

import dask
import numpy as np

from pipeline.layout import Target
from storage.dataset import Chunk, ChunkArrays, SourceDataset
from storage.shardset import part_table, write_part


def split_chunk(chunk: Chunk, data: ChunkArrays | None, dest: np.ndarray, *, ds: SourceDataset,
                firsts: np.ndarray) -> tuple:
    """The chunk's kept rows as one block per target (``firsts``: each target's first destination key; ``dest``
    int64 (rows,): each row's destination key, -1 for a dropped row)."""
    data = ds.read_arrays(chunk) if data is None else data
    kept = np.flatnonzero(dest >= 0)
    order = kept[np.argsort(dest[kept], kind="stable")]
    dest = dest[order]
    cuts = np.searchsorted(dest, firsts[1:])
    x = data.features.T  # (dim, rows): contiguous per feature for the columns layout
    y = data.labels
    rows = np.arange(chunk.offset, chunk.offset + chunk.rows, dtype=np.int64)
    blocks = []
    for sel, d in zip(np.split(order, cuts), np.split(dest, cuts)):
        blocks.append((d, x[:, sel], None if y is None else y[sel], rows[sel]))
    return tuple(blocks)


def write_target(blocks: list[tuple], target: Target, *, out: Path, ds: SourceDataset, row_group_rows: int):
    """Put one part file's rows (from every chunk's block) in destination order and write it."""
    dest = np.concatenate([b[0] for b in blocks])
    order = np.argsort(dest, kind="stable")
    feats = np.concatenate([b[1] for b in blocks], axis=1)[:, order]  # (dim, k)
    labels = None if blocks[0][2] is None else np.concatenate([b[2] for b in blocks])[order]
    source_row = np.concatenate([b[3] for b in blocks])[order]
    table = part_table(feats.T, labels, source_row, ds.spec)  # feats.T: column j is contiguous
    return write_part(table, out / target.path, label=ds.spec.label, row_group_rows=row_group_rows)


def block_writes(ds: SourceDataset, chunks: list[Chunk], data: list, *, dests: list, targets: list[Target],
                 out: Path, row_group_rows: int, finish) -> list:
    """Delayed writes, one per target, in target order; ``finish(target, info)`` makes each one's result."""
    firsts = np.asarray([t.first for t in targets], np.int64)
    split = [dask.delayed(split_chunk, nout=len(targets), pure=False)(c, d, k, ds=ds, firsts=firsts)
             for c, d, k in zip(chunks, data, dests)]

    def write(blocks, target):
        return finish(target, write_target(blocks, target, out=out, ds=ds, row_group_rows=row_group_rows))

    return [dask.delayed(write, pure=False)([s[t] for s in split], target) for t, target in enumerate(targets)]
