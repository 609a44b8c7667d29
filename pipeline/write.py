"""Write pass: move every row to its place with one Dask shuffle and write the part files.

Each kept row has a destination key (:mod:`pipeline.layout`). Data that fits in cluster memory moves as numpy
blocks (:mod:`pipeline.blockshuffle`). Otherwise a DataFrame ``set_index`` with known divisions (p2p, or
tasks) puts each output part's key range in its own partition (a hash shuffle would not: reference §5),
sorted by key, and each partition is written to an explicitly named file.
"""

import dataclasses
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from pipeline import resident
from pipeline.blockshuffle import block_writes
from pipeline.daskrt import gather_in_order
from pipeline.layout import DestLayout, Target
from storage.dataset import Chunk, ChunkArrays, SourceDataset
from storage.shardset import part_table, write_part

DEST_FILE = "dest.i64"


def _load_chunk(chunk: Chunk, data: ChunkArrays | None, ds: SourceDataset, dest_path: str) -> pd.DataFrame:
    with open(dest_path, "rb") as fh:
        fh.seek(chunk.offset * 8)
        dest = np.frombuffer(fh.read(chunk.rows * 8), dtype=np.int64)
    data = ds.read_arrays(chunk) if data is None else data
    keep = dest >= 0
    sel = slice(None) if keep.all() else keep  # a view, not a copy, when every row is kept
    # pandas keeps same-dtype columns as one (columns, rows) block: hand it the features in that layout so
    # that the shuffle's takes and the writer's per-column Arrow arrays work on contiguous memory, uncopied
    # (a view of held data is safe: pandas copies on write)
    x = data.features.T[:, sel].T if ds.spec.layout == "columns" else data.features[sel]
    df = pd.DataFrame(x, columns=_names(ds.spec.dim), copy=False)
    y = data.labels
    if y is not None:
        df["label"] = y[sel]
    df["source_row"] = np.arange(chunk.offset, chunk.offset + chunk.rows, dtype=np.int64)[sel]
    df["dest"] = dest[sel]
    return df


def _names(dim: int) -> list[str]:
    return [f"x{j}" for j in range(dim)]


@dataclasses.dataclass(frozen=True)
class WrittenFile:
    """One part file as written: where it belongs (``target``) and what is in it."""

    target: Target
    rows: int
    bytes: int
    sha256: str


def _write_partition(df: pd.DataFrame, target: Target, *, out: str, ds_spec, dim: int,
                     row_group_rows: int) -> WrittenFile:
    df = df.sort_index()
    # (rows, dim), a view of the frame's block: column-major for the columns layout, so no copy is made
    feats = df[_names(dim)].to_numpy(np.float32)
    labels = df["label"].to_numpy() if "label" in df else None
    table = part_table(feats, labels, df["source_row"].to_numpy(), ds_spec)
    info = write_part(table, Path(out) / target.path, label=ds_spec.label, row_group_rows=row_group_rows)
    return WrittenFile(target, info["rows"], info["bytes"], info["sha256"])


def choose_shuffle(method: str, *, data_bytes: int, client) -> str:
    """``blocks`` (:mod:`pipeline.blockshuffle`) when the data is under a quarter of the cluster's memory
    (fastest here), else ``p2p``."""
    if method != "auto":
        return method
    return "blocks" if resident.fits(client, data_bytes) else "p2p"


def _finish(target: Target, info: dict) -> WrittenFile:
    return WrittenFile(target, info["rows"], info["bytes"], info["sha256"])


def write_shards(ds: SourceDataset, chunks: list[Chunk], dest: np.ndarray, *, out: Path, workdir: Path,
                 layout: DestLayout, rows_per_part: int, row_group_rows: int, client,
                 data: list, shuffle_method: str = "auto", progress=None) -> list[WrittenFile]:
    """Shuffle rows into place and write every part file under ``out``, in key order.
    ``data``: per chunk, its :class:`ChunkArrays` future when the source is held in memory, else None (read)."""
    dest_path = workdir / DEST_FILE
    dest.astype(np.int64).tofile(dest_path)
    targets, divisions = layout.targets(rows_per_part=rows_per_part)
    method = choose_shuffle(shuffle_method, data_bytes=resident.source_bytes(ds), client=client)
    if method == "blocks":
        writes = block_writes(ds, chunks, data, dest_path=str(dest_path), targets=targets, out=str(out),
                              row_group_rows=row_group_rows, finish=_finish)
        return gather_in_order(client.compute(writes), step="write", progress=progress)
    columns = {name: np.float32 for name in _names(ds.spec.dim)}
    if ds.spec.label:
        columns["label"] = np.int64
    columns.update(source_row=np.int64, dest=np.int64)
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    ddf = dd.from_map(_load_chunk, chunks, data, ds=ds, dest_path=str(dest_path), meta=meta)
    ddf = ddf.set_index("dest", divisions=divisions, sort=True, shuffle_method=method)
    parts = ddf.to_delayed()
    if len(parts) != len(targets):
        raise RuntimeError(f"internal: {len(parts)} partitions for {len(targets)} output files")
    writes = [dask.delayed(_write_partition)(p, t, out=str(out), ds_spec=ds.spec, dim=ds.spec.dim,
                                            row_group_rows=row_group_rows)
              for p, t in zip(parts, targets)]
    return gather_in_order(client.compute(writes), step="write", progress=progress)
