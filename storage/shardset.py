"""Write shard part files and read shard sets back.

Part files hold the feature columns as float32 (dictionary encoding off: reference §5), the label as int64
and ``source_row`` (int64). A shard is one file ``shard-00003-of-00008.parquet`` or, when large, a folder
``shard-00003-of-00008/part-00000.parquet``...; the manifest lists the files in order.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.dataset import FeatureSpec, features_of
from storage.manifest import ROW_GROUP_ROWS, read_manifest


def part_table(features: np.ndarray, labels: np.ndarray | None, source_row: np.ndarray,
               spec: FeatureSpec) -> pa.Table:
    """Arrow table of one part: features (float32 columns or one fixed-size list), label, source_row."""
    if spec.layout == "list":
        flat = pa.array(np.ascontiguousarray(features, np.float32).reshape(-1))
        cols = {spec.columns[0]: pa.FixedSizeListArray.from_arrays(flat, spec.dim)}
    else:
        cols = {name: pa.array(features[:, j], pa.float32()) for j, name in enumerate(spec.columns)}
    if spec.label is not None:
        cols[spec.label] = pa.array(labels, pa.int64())
    cols["source_row"] = pa.array(source_row, pa.int64())
    return pa.table(cols)


def write_part(table: pa.Table, path: Path, *, label: str | None, row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Write ``table`` to ``path``; return {rows, bytes, sha256} of the written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, use_dictionary=[label] if label else False, row_group_size=row_group_rows,
                   compression="snappy")
    with open(path, "rb") as fh:  # just written, so read back from the page cache
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"rows": table.num_rows, "bytes": path.stat().st_size, "sha256": digest}


class ShardSet:
    """A validated shard set. ``manifest`` is its :class:`~storage.manifest.Manifest`."""

    def __init__(self, folder: str | Path, *, verify_checksums: bool = False):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder, verify_checksums=verify_checksums)
        cols = self.manifest.columns
        self.spec = FeatureSpec(tuple(cols.features), cols.layout, cols.dim, cols.label)

    @property
    def workers(self) -> int:
        return self.manifest.workers

    def shard_files(self, index: int) -> list[Path]:
        return [self.folder / f.path for f in self.manifest.shards[index].files]

    def validation_files(self) -> list[Path]:
        return [self.folder / f.path for f in self.manifest.validation.files]

    def iter_batches(self, files: list[Path], *, batch_rows: int = 65_536, columns: list[str] | None = None
                     ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``files`` in queue order, never more than ``batch_rows`` rows in memory."""
        for f in files:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)

    def read_arrays(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Whole files as (features float32 (n, d), labels int64 (n,) or None, source_row int64 (n,))."""
        table = pa.concat_tables(pq.read_table(f) for f in files) if files else None
        if table is None or table.num_rows == 0:
            return np.zeros((0, self.spec.dim), np.float32), None, np.zeros(0, np.int64)
        labels = table.column(self.spec.label).to_numpy() if self.spec.label else None
        return features_of(table, self.spec), labels, table.column("source_row").to_numpy()

    def read_shard(self, index: int):
        return self.read_arrays(self.shard_files(index))

    def read_validation(self):
        return self.read_arrays(self.validation_files())
