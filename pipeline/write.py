"""Write pass: move every row to its place with one Dask shuffle and write the part files.

Each kept row gets a destination key ``dest = shard * stride + pos`` (validation rows:
``workers * stride + i``); ``set_index`` with known divisions puts each output part's key range in its
own partition (a hash shuffle would not: reference §5), sorted by key, and each partition is written to an
explicitly named file.
"""

import dataclasses
import math
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from pipeline import resident
from pipeline.daskrt import gather_in_order
from storage.dataset import Chunk, ChunkArrays, SourceDataset
from storage.manifest import shard_name
from storage.shardset import part_table, write_part

DEST_FILE = "dest.i64"


@dataclasses.dataclass(frozen=True)
class Target:
    """One output part file: ``kind`` is "shard" or "validation"."""

    kind: str
    index: int
    part: int
    path: str  # relative to the shard folder
    first: int  # first destination key (inclusive)


def plan_targets(rows_per_shard: list[int], validation_rows: int, *, rows_per_part: int
                 ) -> tuple[list[Target], list[int], int]:
    """Output parts, Dask divisions and the key stride for a shard layout."""
    workers = len(rows_per_shard)
    stride = max(rows_per_shard)
    targets: list[Target] = []

    def add(kind, index, rows, base, stem):
        parts = max(1, math.ceil(rows / rows_per_part))
        for j in range(parts):
            path = f"{stem}.parquet" if parts == 1 else f"{stem}/part-{j:05d}.parquet"
            targets.append(Target(kind, index, j, path, base + j * rows_per_part))

    for i, rows in enumerate(rows_per_shard):
        add("shard", i, rows, i * stride, shard_name(i, workers))
    last = (workers - 1) * stride + rows_per_shard[-1] - 1
    if validation_rows:
        add("validation", 0, validation_rows, workers * stride, "validation")
        last = workers * stride + validation_rows - 1
    divisions = [t.first for t in targets] + [last]
    return targets, divisions, stride


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


def _write_partition(df: pd.DataFrame, target: Target, *, out: str, ds_spec, dim: int) -> dict:
    df = df.sort_index()
    # (rows, dim), a view of the frame's block: column-major for the columns layout, so no copy is made
    feats = df[_names(dim)].to_numpy(np.float32)
    labels = df["label"].to_numpy() if "label" in df else None
    table = part_table(feats, labels, df["source_row"].to_numpy(), ds_spec)
    info = write_part(table, Path(out) / target.path, label=ds_spec.label)
    keys = df.index.to_numpy()
    info.update(path=target.path, kind=target.kind, index=target.index, part=target.part,
                first_key=int(keys[0]) if len(keys) else None)
    return info


def choose_shuffle(method: str, *, data_bytes: int, client) -> str:
    """``tasks`` when the data is under a quarter of the cluster's memory (faster here), else ``p2p``."""
    if method != "auto":
        return method
    return "tasks" if resident.fits(client, data_bytes) else "p2p"


def write_shards(ds: SourceDataset, chunks: list[Chunk], dest: np.ndarray, *, out: Path, workdir: Path,
                 rows_per_shard: list[int], validation_rows: int, rows_per_part: int, client,
                 data: list, shuffle_method: str = "auto", progress=None) -> list[dict]:
    """Shuffle rows into place and write every part file under ``out``; returns per-file info dicts.
    ``data``: per chunk, its :class:`ChunkArrays` future when the source is held in memory, else None (read)."""
    dest_path = workdir / DEST_FILE
    dest.astype(np.int64).tofile(dest_path)
    targets, divisions, _ = plan_targets(rows_per_shard, validation_rows, rows_per_part=rows_per_part)
    columns = {name: np.float32 for name in _names(ds.spec.dim)}
    if ds.spec.label:
        columns["label"] = np.int64
    columns.update(source_row=np.int64, dest=np.int64)
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    ddf = dd.from_map(_load_chunk, chunks, data, ds=ds, dest_path=str(dest_path), meta=meta)
    method = choose_shuffle(shuffle_method, data_bytes=resident.source_bytes(ds), client=client)
    ddf = ddf.set_index("dest", divisions=divisions, sort=True, shuffle_method=method)
    parts = ddf.to_delayed()
    if len(parts) != len(targets):
        raise RuntimeError(f"internal: {len(parts)} partitions for {len(targets)} output files")
    writes = [dask.delayed(_write_partition)(p, t, out=str(out), ds_spec=ds.spec, dim=ds.spec.dim)
              for p, t in zip(parts, targets)]
    return gather_in_order(client.compute(writes), step="write", progress=progress)
