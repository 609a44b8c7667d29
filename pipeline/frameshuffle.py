"""The write pass's shuffle for larger-than-memory data: a Dask DataFrame ``set_index`` (p2p, or tasks).

``set_index`` with known divisions puts each output part's key range in its own partition (a hash shuffle
would not: reference §5), sorted by key, and each partition is written to an explicitly named file. Imported
only when used: dask.dataframe costs half a second to import.
"""

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from pipeline.layout import Target
from storage.dataset import Chunk, ChunkArrays, SourceDataset
from storage.shardset import part_table, write_part


def _load_chunk(chunk: Chunk, data: ChunkArrays | None, dest: np.ndarray, ds: SourceDataset) -> pd.DataFrame:
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


def _write_partition(df: pd.DataFrame, target: Target, *, out: Path, ds_spec, dim: int, row_group_rows: int,
                     finish) -> dict:
    df = df.sort_index()
    # (rows, dim), a view of the frame's block: column-major for the columns layout, so no copy is made
    feats = df[_names(dim)].to_numpy(np.float32)
    labels = df["label"].to_numpy() if "label" in df else None
    table = part_table(feats, labels, df["source_row"].to_numpy(), ds_spec)
    return finish(target, write_part(table, out / target.path, label=ds_spec.label,
                                     row_group_rows=row_group_rows))


def frame_writes(ds: SourceDataset, chunks: list[Chunk], data: list, *, dests: list, targets: list[Target],
                 divisions: list[int], method: str, out: Path, row_group_rows: int, finish) -> list:
    """Delayed writes, one per target, in target order; ``finish(target, info)`` makes each one's result."""
    columns = {name: np.float32 for name in _names(ds.spec.dim)}
    if ds.spec.label:
        columns["label"] = np.int64
    columns.update(source_row=np.int64, dest=np.int64)
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    ddf = dd.from_map(_load_chunk, chunks, data, dests, ds=ds, meta=meta)
    ddf = ddf.set_index("dest", divisions=divisions, sort=True, shuffle_method=method)
    parts = ddf.to_delayed()
    if len(parts) != len(targets):
        raise RuntimeError(f"internal: {len(parts)} partitions for {len(targets)} output files")
    return [dask.delayed(_write_partition)(p, t, out=out, ds_spec=ds.spec, dim=ds.spec.dim,
                                           row_group_rows=row_group_rows, finish=finish)
            for p, t in zip(parts, targets)]
