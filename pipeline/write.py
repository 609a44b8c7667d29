"""Write pass: move every row to its place with one Dask shuffle and write the part files.

Each kept row has a destination key (:mod:`pipeline.layout`). Data that fits in cluster memory moves as numpy
blocks (:mod:`pipeline.blockshuffle`); larger data goes through a DataFrame shuffle
(:mod:`pipeline.frameshuffle`, p2p). Either way each output part file is written by one task, to an explicitly
named file.
"""

import dataclasses
from pathlib import Path

import numpy as np

from pipeline import resident
from pipeline.blockshuffle import block_writes
from pipeline.daskrt import gather_in_order
from pipeline.layout import DestLayout, Target
from storage.dataset import Chunk, SourceDataset


@dataclasses.dataclass(frozen=True)
class WrittenFile:
    """One part file as written: where it belongs (``target``) and what is in it."""

    target: Target
    rows: int
    bytes: int
    sha256: str


def choose_shuffle(method: str, *, data_bytes: int, client) -> str:
    """``blocks`` (:mod:`pipeline.blockshuffle`) when the data is under a quarter of the cluster's memory
    (fastest here), else ``p2p``."""
    if method != "auto":
        return method
    return "blocks" if resident.fits(client, data_bytes) else "p2p"


def _finish(target: Target, info: dict) -> WrittenFile:
    return WrittenFile(target, info["rows"], info["bytes"], info["sha256"])


def write_shards(ds: SourceDataset, chunks: list[Chunk], dest: np.ndarray, *, out: Path,
                 layout: DestLayout, rows_per_part: int, row_group_rows: int, client,
                 data: list, shuffle_method: str = "auto", progress=None) -> list[WrittenFile]:
    """Shuffle rows into place and write every part file under ``out`` (local or an object store: each task
    writes its own file, so the workers need no shared disk), in key order. ``dest`` int64 (source rows,): each
    row's destination key, -1 for a dropped row. ``data``: per chunk, its :class:`ChunkArrays` future when the
    source is held in memory, else None (read)."""
    # each chunk's slice of dest goes to the cluster as data of its own (8 bytes a row), not through a file
    dests = client.scatter([np.ascontiguousarray(dest[c.offset:c.offset + c.rows], np.int64) for c in chunks])
    targets, divisions = layout.targets(rows_per_part=rows_per_part)
    method = choose_shuffle(shuffle_method, data_bytes=resident.source_bytes(ds), client=client)
    if method == "blocks":
        writes = block_writes(ds, chunks, data, dests=dests, targets=targets, out=out,
                              row_group_rows=row_group_rows, finish=_finish)
    else:
        from pipeline.frameshuffle import frame_writes
        writes = frame_writes(ds, chunks, data, dests=dests, targets=targets, divisions=divisions,
                              method=method, out=out, row_group_rows=row_group_rows, finish=_finish)
    return gather_in_order(client.compute(writes), step="write", progress=progress)
