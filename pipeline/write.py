"""Write pass: move every row to its place with one Dask shuffle and write the part files.

Each kept row has a destination key (:mod:`pipeline.layout`). Data that fits in cluster memory moves as numpy
blocks (:mod:`pipeline.blockshuffle`), in one go when the source is held in memory, else in up to MAX_WAVES
waves of part files (:func:`waves`); larger data goes through a DataFrame shuffle (:mod:`pipeline.frameshuffle`,
p2p). Either way each output part file is written by one task, to an explicitly named file.
"""

import dataclasses
import functools
import json
import logging
from pathlib import Path

import numpy as np

from pipeline import resident
from pipeline.blockshuffle import block_writes, in_place_writes
from pipeline.daskrt import gather_in_order
from pipeline.layout import DestLayout, Target
from storage import faults, resume
from storage.dataset import Chunk, SourceDataset

log = logging.getLogger("simshard.build")


@dataclasses.dataclass(frozen=True)
class WrittenFile:
    """One part file as written: where it belongs (``target``) and what is in it."""

    target: Target
    rows: int
    bytes: int
    sha256: str
    label_counts: tuple[int, ...] | None = None  # bincount of the file's labels, when it has any and it is known


# beyond this many waves, reading the source once a wave costs more than the p2p shuffle's trip through disk
MAX_WAVES = 4


def choose_shuffle(method: str, *, data_bytes: int, client) -> str:
    """``blocks`` (:mod:`pipeline.blockshuffle`) when the data is under a quarter of the cluster's memory, or
    would be in at most MAX_WAVES waves of that size (:func:`waves`); else ``p2p``."""
    if method != "auto":
        return method
    memory = resident.cluster_memory(client)
    return "blocks" if memory and data_bytes < MAX_WAVES * memory * resident.MEMORY_SHARE else "p2p"


def waves(targets: list[Target], *, row_bytes: int, budget_bytes: float) -> list[list[Target]]:
    """Consecutive runs of ``targets`` (in key order) holding at most ``budget_bytes`` of rows each (one
    target at least): the blocks shuffle of a source not held in memory writes one run at a time, reading the
    source once per run and keeping only that run's rows (measured at 16M x 64 rows, 2 workers: 26 s in one
    wave against 37 s through p2p). No budget (workers without a memory limit) is one wave."""
    if not budget_bytes:
        return [targets] if targets else []
    out: list[list[Target]] = []
    size = 0
    for t in targets:
        if out and size + t.rows * row_bytes <= budget_bytes:
            out[-1].append(t)
            size += t.rows * row_bytes
        else:
            out.append([t])
            size = t.rows * row_bytes
    return out


def _finish(target: Target, info: dict, *, records: Path | None) -> WrittenFile:
    """Runs in the writing task, once its file is complete: the file's completion record, then its result."""
    if records is not None:
        record = resume.part_record(records, target.path)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(info))
    counts = info.get("label_counts")
    return WrittenFile(target, info["rows"], info["bytes"], info["sha256"], None if counts is None else tuple(counts))


def write_shards(ds: SourceDataset, chunks: list[Chunk], dest: np.ndarray, *, out: Path,
                 layout: DestLayout, rows_per_part: int, row_group_rows: int, client,
                 data: list, shuffle_method: str = "auto", progress=None, done: dict[str, dict] | None = None,
                 records: Path | None = None) -> list[WrittenFile]:
    """Shuffle rows into place and write every part file under ``out`` (local or an object store: each task
    writes its own file, so the workers need no shared disk), in key order. ``dest`` int64 (source rows,): each
    row's destination key, -1 for a dropped row. ``data``: per chunk, its :class:`ChunkArrays` future when the
    source is held in memory, else None (read). ``done``: part files a killed run of this build finished
    ({path: {rows, bytes, sha256}}), not written again; ``records``: the prefix whose ``_resume/parts/`` gets each
    new file's completion record (:mod:`storage.resume`)."""
    done = done or {}
    targets, divisions = layout.targets(rows_per_part=rows_per_part)
    pending = [t.path not in done for t in targets]
    if not any(pending):
        return [_finish(t, done[t.path], records=None) for t in targets]
    # each chunk's slice of dest goes to the cluster as data of its own (8 bytes a row), not through a file,
    # under a random key: tokenizing would cost the driver a hash of every slice, for keys nothing shares
    dests = client.scatter([np.ascontiguousarray(dest[c.offset:c.offset + c.rows], np.int64) for c in chunks],
                           hash=False)
    method = choose_shuffle(shuffle_method, data_bytes=resident.source_bytes(ds), client=client)
    finish = functools.partial(_finish, records=records)
    todo = [t for t, p in zip(targets, pending) if p]
    finished = 0

    def progressed(step: str, done_here: int, total: int) -> None:
        faults.part_written(finished + done_here)
        if progress is not None:
            progress(step, finished + done_here, len(todo))

    fresh: list[WrittenFile] = []
    if method == "blocks":
        held = all(d is not None for d in data)
        # one worker holding every chunk (an in-process cluster): writers gather from the chunks themselves
        writer = in_place_writes if held and len(client.scheduler_info()["workers"]) == 1 else block_writes
        budget = 0 if held else resident.cluster_memory(client) * resident.MEMORY_SHARE
        runs = waves(todo, row_bytes=resident.source_bytes(ds) // ds.num_rows, budget_bytes=budget)
        if len(runs) > 1:
            log.info("write pass in %d waves of at most %.1f GiB, the source read once a wave", len(runs),
                     budget / 2**30)
        for run in runs:
            writes = writer(ds, chunks, data, dests=dests, targets=run, out=out, row_group_rows=row_group_rows,
                            finish=finish)
            fresh += gather_in_order(client.compute(writes), step="write", progress=progressed)
            finished += len(run)
    else:
        from pipeline.frameshuffle import frame_writes
        writes = frame_writes(ds, chunks, data, dests=dests, targets=targets, divisions=divisions,
                              method=method, out=out, row_group_rows=row_group_rows, finish=finish)
        fresh = gather_in_order(client.compute([w for w, p in zip(writes, pending) if p]), step="write",
                                progress=progressed)
    new = iter(fresh)
    return [next(new) if p else _finish(t, done[t.path], records=None) for t, p in zip(targets, pending)]
