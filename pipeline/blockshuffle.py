"""The write pass's shuffle for data that fits in cluster memory: numpy blocks moved by Dask's own means.

Each output part file is written by one task, which fills the file's rows (features float32, labels int64 or
None, source_row int64) in destination order, one row group at a time, and encodes each. A file's keys run
from its ``Target.first`` with none missing (:mod:`pipeline.layout`), so each row's key is its position: rows
are scattered straight into place, and a lost or repeated row is an error. Whole rows move at once (the held
features are row-major): row by row is about twice as fast as feature by feature, transposing copy included.

How the rows reach the writer depends on where the source chunks are held:

- **Worker processes** (:func:`block_writes`): each chunk is split (one task per chunk) into one block per
  output file, its rows bound there in source order; each writer receives its blocks from every chunk
  (``dask.delayed`` with ``nout``: the scheduler moves them). Four arrays a block instead of a 67-column
  pandas frame: no per-column bookkeeping in the shuffle and no pandas/Arrow round trip.
- **One worker** (:func:`in_place_writes`, an in-process cluster): every chunk is already in the writer's
  process, so a small task per chunk only says which of its rows go where, and each writer gathers its rows
  from the held chunks themselves. No block is made or moved: half the copies of the blocks path.

Larger-than-memory data keeps the DataFrame p2p shuffle (:mod:`pipeline.write`).
"""

import dataclasses
from pathlib import Path

import dask
import numpy as np

from pipeline import scratch
from pipeline.layout import Target
from storage.dataset import Chunk, ChunkArrays, SourceDataset
from storage.shardset import part_schema, part_table, write_part_groups


@dataclasses.dataclass(frozen=True)
class Piece:
    """The rows one part file gets from one source chunk. Entry ``i`` has destination key ``keys[i]``, source
    row ``source_row[i]`` and the values at ``at[i]`` of ``features`` float32 (n, dim) and ``labels`` int64
    (n,) or None: a chunk's held arrays, or (``at`` None, entry i at row i) a block gathered for the file."""

    keys: np.ndarray  # int64 (k,)
    features: np.ndarray
    labels: np.ndarray | None
    source_row: np.ndarray  # int64 (k,)
    at: np.ndarray | None = None  # int64 (k,)


def write_part_file(pieces: list[Piece], target: Target, *, out: Path, ds: SourceDataset,
                    row_group_rows: int) -> dict:
    """Write one part file from its pieces: row ``p`` of the file is the entry with key ``target.first + p``.
    Every key of the file must come exactly once, which is checked before anything is written. The file is
    filled and encoded a row group at a time, in buffers each thread reuses: a few MiB instead of the whole
    part twice over (rows, then columns), memory that this machine makes dear to touch for the first time."""
    rows = sum(len(p.keys) for p in pieces)
    positions = [p.keys - target.first for p in pieces]
    filled = np.zeros(rows, bool)
    for pos in positions:
        if len(pos) and (pos.min() < 0 or pos.max() >= rows):
            raise RuntimeError(f"{target.path}: destination keys outside the file's range")
        filled[pos] = True
    if not filled.all():
        raise RuntimeError(f"{target.path}: {int((~filled).sum())} destination keys received no row")
    groups = max(1, -(-rows // row_group_rows))
    # per piece, its entries grouped by row group (a stable sort of small ints is a radix sort)
    group_of = [(pos // row_group_rows).astype(np.int32) for pos in positions]
    order = [np.argsort(g, kind="stable") for g in group_of]
    bounds = [np.searchsorted(g[o], np.arange(groups + 1)) for g, o in zip(group_of, order)]

    def tables():
        for g in range(groups):
            first, m = g * row_group_rows, min(row_group_rows, rows - g * row_group_rows)
            x = scratch.array("rows", (m, ds.spec.dim))
            labels = None if ds.spec.label is None else np.empty(m, np.int64)
            source_row = np.empty(m, np.int64)
            for piece, pos, o, b in zip(pieces, positions, order, bounds):
                sel = o[b[g]:b[g + 1]]
                at = pos[sel] - first
                src = sel if piece.at is None else piece.at[sel]
                x[at] = np.take(piece.features, src, axis=0)
                if labels is not None:
                    labels[at] = piece.labels[src]
                source_row[at] = piece.source_row[sel]
            # one transposing copy makes every feature column contiguous, for Arrow to take without a copy
            cols = x if ds.spec.layout == "list" else column_major(x, out=scratch.array("columns", (ds.spec.dim, m)))
            yield part_table(cols, labels, source_row, ds.spec)

    return write_part_groups(tables(), out / target.path, schema=part_schema(ds.spec), label=ds.spec.label,
                             row_group_rows=row_group_rows)


def column_major(x: np.ndarray, *, block_rows: int = 1024, out: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``x`` (rows, dim) in Fortran order: each column contiguous. Copied a block of rows at a time,
    which stays in cache: 14 ms against 34 ms for ``np.asfortranarray`` at 250k x 64 float32 (measured).
    ``out``: a (dim, rows) array to copy into."""
    out = np.empty(x.shape[::-1], x.dtype) if out is None else out
    for r in range(0, len(x), block_rows):
        out[:, r:r + block_rows] = x[r:r + block_rows].T
    return out.T


def _by_target(target: np.ndarray, targets: int) -> np.ndarray:
    """Indices grouping rows by target, each target's rows in source order (a stable sort of small ints is a
    radix sort)."""
    return np.argsort(target.astype(np.int32 if targets > 2**15 else np.int16), kind="stable")


def route_chunk(dest: np.ndarray, *, targets: list[Target]) -> tuple:
    """Per target, (rows int64 (k,): the chunk's rows bound there, ascending; their keys int64 (k,)).
    ``targets`` are in key order; rows with other keys (-1: dropped; or another file's, written in another wave
    or by a killed run of the build) are left out."""
    firsts = np.asarray([t.first for t in targets], np.int64)
    ends = np.asarray([t.end for t in targets], np.int64)
    target = np.searchsorted(firsts, dest, side="right") - 1
    kept = np.flatnonzero((target >= 0) & (dest < ends[np.maximum(target, 0)]))
    dest, target = dest[kept], target[kept]
    by_target = _by_target(target, len(firsts))
    cuts = np.searchsorted(target[by_target], np.arange(1, len(firsts)))
    return tuple((kept[sel], dest[sel]) for sel in np.split(by_target, cuts))


def split_chunk(chunk: Chunk, data: ChunkArrays | None, dest: np.ndarray, *, ds: SourceDataset,
                targets: list[Target]) -> tuple:
    """The chunk's rows bound for ``targets`` as one block per target, (dest int64 (k,), features float32 (k,
    dim), labels int64 (k,) or None, source_row int64 (k,)), rows in source order. ``dest`` int64 (rows,): each
    row's destination key, -1 for a dropped row."""
    if data is None:
        # read column-major into this thread's buffer and gather each block's rows from it (the blocks are
        # row-major copies): a wave's third of a 250k x 64 chunk took 58 ms this way against 145 ms through a
        # row-major read of the whole chunk, whose transposing copy costs more than the file's decoding
        data = ds.read_arrays(chunk, out=scratch.array("chunk", (chunk.rows, ds.spec.dim)))
    x, y = data.features, data.labels
    return tuple((keys, np.ascontiguousarray(x[rows]), None if y is None else y[rows], rows + chunk.offset)
                 for rows, keys in route_chunk(dest, targets=targets))


def write_blocks(blocks: list[tuple], target: Target, *, out: Path, ds: SourceDataset, row_group_rows: int) -> dict:
    """Write one part file from its block of every chunk (:func:`split_chunk`)."""
    pieces = [Piece(keys, x, y, rows) for keys, x, y, rows in blocks]
    return write_part_file(pieces, target, out=out, ds=ds, row_group_rows=row_group_rows)


def block_writes(ds: SourceDataset, chunks: list[Chunk], data: list, *, dests: list, targets: list[Target],
                 out: Path, row_group_rows: int, finish) -> list:
    """Delayed writes, one per target, in target order; ``finish(target, info)`` makes each one's result. The
    targets are part files in key order (all of them, or one wave's)."""
    # each function is wrapped once: dask.delayed tokenizes what it wraps, and these closures hold the dataset
    split_task = dask.delayed(split_chunk, nout=len(targets), pure=False)
    split = [split_task(c, d, k, ds=ds, targets=targets) for c, d, k in zip(chunks, data, dests)]

    def write(blocks, target):
        return finish(target, write_blocks(blocks, target, out=out, ds=ds, row_group_rows=row_group_rows))

    write_task = dask.delayed(write, pure=False)
    return [write_task([s[t] for s in split], target) for t, target in enumerate(targets)]


def write_in_place(held: list[ChunkArrays], routes: list[tuple], chunks: list[Chunk], target: Target, *,
                   out: Path, ds: SourceDataset, row_group_rows: int) -> dict:
    """Write one part file by gathering its rows from the held chunks (``routes``: each chunk's
    :func:`route_chunk` entry for this target)."""
    pieces = [Piece(keys, data.features, data.labels, rows + chunk.offset, at=rows)
              for data, (rows, keys), chunk in zip(held, routes, chunks, strict=True)]
    return write_part_file(pieces, target, out=out, ds=ds, row_group_rows=row_group_rows)


def in_place_writes(ds: SourceDataset, chunks: list[Chunk], data: list, *, dests: list, targets: list[Target],
                    out: Path, row_group_rows: int, finish) -> list:
    """Like :func:`block_writes`, for chunks all held by one worker (``data``: their futures)."""
    route_task = dask.delayed(route_chunk, pure=False)
    routes = [route_task(k, targets=targets) for k in dests]

    def write(held, routed, t):
        return finish(targets[t], write_in_place(held, [r[t] for r in routed], chunks, targets[t], out=out, ds=ds,
                                                 row_group_rows=row_group_rows))

    # every writer takes every chunk's routes whole (small, and in its own process), not one getitem task each
    write_task = dask.delayed(write, pure=False)
    return [write_task(data, routes, t) for t in range(len(targets))]
