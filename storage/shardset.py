"""Write shard part files and read shard sets back, verified.

Part files hold the feature columns as float32 (dictionary encoding off: reference §5), the label as int64
and ``source_row`` (int64). A shard is one file ``shard-00003-of-00008.parquet`` or, when large, a folder
``shard-00003-of-00008/part-00000.parquet``...; the manifest lists the files in order.

Every page is written with a CRC (``write_page_checksum``) and every read verifies it
(``page_checksum_verification``): a flipped bit is a :class:`~storage.errors.DataError` naming the file, as is
a NaN or inf feature value (the build never writes one). Opening a :class:`ShardSet` checks the manifest and
every file's size and row count (:func:`storage.manifest.read_manifest`).
"""

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import urls
from storage.dataset import FeatureSpec, features_of
from storage.errors import DataError
from storage.manifest import ROW_GROUP_ROWS, Manifest, check_files, read_manifest


def part_schema(spec: FeatureSpec) -> pa.Schema:
    """The Arrow schema of a part file: features (float32 columns or one fixed-size list), label int64,
    source_row int64. Every column is declared non-null (Parquet ``required``): a part never holds a null, and
    a required column is written with no definition levels, which took a quarter of the encoding CPU of a
    225k x 66 part (0.042 against 0.057 s, measured)."""
    if spec.layout == "list":
        fields = [(spec.columns[0], pa.list_(pa.float32(), spec.dim))]
    else:
        fields = [(name, pa.float32()) for name in spec.columns]
    fields += [(spec.label, pa.int64())] if spec.label is not None else []
    return pa.schema([pa.field(n, t, nullable=False) for n, t in fields + [("source_row", pa.int64())]])


def part_table(features: np.ndarray, labels: np.ndarray | None, source_row: np.ndarray,
               spec: FeatureSpec) -> pa.Table:
    """Arrow table of (part of) a part file, :func:`part_schema`: ``features`` float32 (rows, dim) (a column-major
    array's columns are taken without a copy), ``labels`` int64 (rows,) or None, ``source_row`` int64 (rows,)."""
    if spec.layout == "list":
        flat = pa.array(np.ascontiguousarray(features, np.float32).reshape(-1))
        cols = [pa.FixedSizeListArray.from_arrays(flat, spec.dim)]
    else:
        cols = [pa.array(features[:, j], pa.float32()) for j in range(spec.dim)]
    cols += [pa.array(labels, pa.int64())] if spec.label is not None else []
    return pa.Table.from_arrays(cols + [pa.array(source_row, pa.int64())], schema=part_schema(spec))


def write_part(table: pa.Table, path: Path, *, label: str | None, row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Write ``table`` to ``path`` (local, or an object store: one put); return {rows, bytes, sha256} and, when
    ``label`` names a column, label_counts (its bincount, a list of ints)."""
    return write_part_groups([table], path, schema=table.schema, label=label, row_group_rows=row_group_rows)


def write_part_groups(tables: Iterable[pa.Table], path: Path, *, schema: pa.Schema, label: str | None,
                      row_group_rows: int = ROW_GROUP_ROWS) -> dict:
    """Like :func:`write_part` for a file whose rows come as consecutive ``tables`` (of ``schema``), each
    encoded as it arrives: a writer needs only one table's rows in memory at a time. The file is the one
    :func:`write_part` makes of their concatenation."""
    tally = _Tally(label)
    options = dict(use_dictionary=[label] if label else False, compression="snappy", write_page_checksum=True,
                   # min/max only for the columns a query engine may filter on: nothing reads them for
                   # features, and computing them took a tenth of a 250k x 66 part's encoding (0.100 against
                   # 0.111 s)
                   write_statistics=[label, "source_row"] if label else ["source_row"])
    size, digest = _write(tally.through(tables), path, schema=schema, row_group_rows=row_group_rows,
                          options=options)
    info = {"rows": tally.rows, "bytes": size, "sha256": digest}
    return info if label is None else {**info, "label_counts": tally.counts.tolist()}


class _Tally:
    """Rows and label bincount of the tables that pass through :meth:`through`."""

    def __init__(self, label: str | None):
        self.label, self.rows, self.counts = label, 0, np.zeros(0, np.int64)

    def through(self, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for table in tables:
            self.rows += table.num_rows
            if self.label is not None and table.num_rows:
                found = np.bincount(table.column(self.label).to_numpy(), minlength=len(self.counts))
                self.counts = found + np.pad(self.counts, (0, len(found) - len(self.counts)))
            yield table


def _encode(tables: Iterable[pa.Table], sink, *, schema: pa.Schema, row_group_rows: int, options: dict) -> None:
    with pq.ParquetWriter(sink, schema, **options) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=row_group_rows)


def _write(tables: Iterable[pa.Table], path: Path, **encoding) -> tuple[int, str]:
    """Encode ``tables`` into ``path``; (bytes, sha256 hex) of the file."""
    if urls.is_remote(path):
        buffer = pa.BufferOutputStream()
        _encode(tables, buffer, **encoding)
        data = buffer.getvalue()
        native = urls.native_s3(path)
        if native is not None:
            with native.open_output_stream(path.path) as out:
                out.write(data)
        else:  # one call: s3fs uploads large data in concurrent parts
            path.fs.pipe_file(path.path, data.to_pybytes())
        return data.size, hashlib.sha256(memoryview(data)).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name and renamed: a killed writer never leaves a half file under the real name,
    # and a task of a killed build still running beside the build resuming it cannot interleave with it
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        _encode(tables, str(partial), **encoding)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with open(partial, "rb") as fh:  # just written, so read back from the page cache
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    size = partial.stat().st_size
    os.replace(partial, path)
    return size, digest


@contextmanager
def verified(path: Path):
    """Turn pyarrow's read errors (a failed page CRC names no file) into a :class:`DataError` naming ``path``."""
    try:
        yield
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path} is corrupt ({str(exc).splitlines()[0]}); rebuild the shard set "
                        "(python -m flows.verify checks every file)") from exc


def open_verified(path: Path) -> pq.ParquetFile:
    """A Parquet file whose every page read is checked against its CRC."""
    with verified(path):
        # pre_buffer: a row group's column chunks in a few coalesced reads, not one request per column (on an
        # object store each is a round trip)
        return pq.ParquetFile(urls.open_input(path), page_checksum_verification=True,
                              pre_buffer=urls.is_remote(path))


def read_verified(path: Path, row_group: int | None = None, *, columns: list[str] | None = None) -> pa.Table:
    """One row group (or the whole file) of ``path``, page checksums verified."""
    pf = open_verified(path)
    with verified(path):
        return pf.read() if row_group is None else pf.read_row_group(row_group, columns=columns)


def check_finite(x: np.ndarray, spec: FeatureSpec, path: Path) -> None:
    """Raise :class:`DataError` naming ``path`` and the column when ``x`` (rows, dim) holds NaN or inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        column = spec.columns[0] if spec.layout == "list" else spec.columns[int(cols[0])]
        raise DataError(f"{path}: column {column!r} holds NaN or inf ({len(rows)} values); the build never "
                        "writes them, so the file was changed: rebuild the shard set")


class ShardSet:
    """A validated shard set. ``manifest`` is its :class:`~storage.manifest.Manifest`."""

    def __init__(self, folder: str | Path, *, verify_checksums: bool = False, manifest: Manifest | None = None,
                 storage_options: dict | None = None, only: list[int] | None = None):
        """Open the newest committed shard set in ``folder`` (a local path or an fsspec URL, read with
        ``storage_options``); or, given ``manifest`` (a build measuring its own files before it commits them),
        the files that manifest lists. ``only``: check just these shards' files (the others are not read)."""
        self.folder = urls.folder(folder, storage_options=storage_options)
        if manifest is None:
            manifest = read_manifest(self.folder, verify_checksums=verify_checksums, only=only)
        else:
            check_files(self.folder, manifest, where=self.folder, verify_checksums=verify_checksums)
        self.manifest = manifest
        cols = self.manifest.columns
        self.spec = FeatureSpec(tuple(cols.features), cols.layout, cols.dim, cols.label)

    @property
    def workers(self) -> int:
        return self.manifest.workers

    def family_folder(self) -> Path | None:
        """Where the fitted hash family's files are (None for orders that do not hash)."""
        family = self.manifest.family
        return None if family is None else self.folder / Path(family.params).parent

    def shard_files(self, index: int) -> list[Path]:
        return [self.folder / f.path for f in self.manifest.shards[index].files]

    def validation_files(self) -> list[Path]:
        return [self.folder / f.path for f in self.manifest.validation.files]

    def iter_batches(self, files: list[Path], *, batch_rows: int = 65_536, columns: list[str] | None = None
                     ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``files`` in queue order, never more than ``batch_rows`` rows in memory."""
        for f in files:
            pf = open_verified(f)
            with verified(f):
                yield from pf.iter_batches(batch_size=batch_rows, columns=columns)

    def read_arrays(self, files: list[Path]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Whole files as (features float32 (n, d), labels int64 (n,) or None, source_row int64 (n,)); pages
        and values verified."""
        if not files:
            return np.zeros((0, self.spec.dim), np.float32), None, np.zeros(0, np.int64)
        xs, ys, rows = [], [], []
        for f in files:
            table = read_verified(f)
            x = features_of(table, self.spec)
            check_finite(x, self.spec, f)
            xs.append(x)
            ys.append(table.column(self.spec.label).to_numpy() if self.spec.label else None)
            rows.append(table.column("source_row").to_numpy())
        labels = np.concatenate(ys) if self.spec.label else None
        return np.concatenate(xs), labels, np.concatenate(rows)

    def read_shard(self, index: int):
        return self.read_arrays(self.shard_files(index))

    def read_validation(self):
        return self.read_arrays(self.validation_files())


@dataclasses.dataclass(frozen=True)
class Verified:
    """What :func:`verify` checked: ``files`` files holding ``rows`` rows, ``bytes`` bytes."""

    files: int
    rows: int
    bytes: int


def verify(folder: str | Path, *, storage_options: dict | None = None) -> Verified:
    """Check a shard set completely: the manifest, every file's size, row count and sha256, every page's CRC
    and every feature value (finite). Raises :class:`~storage.errors.ManifestError` or :class:`DataError`."""
    shards = ShardSet(folder, verify_checksums=True, storage_options=storage_options)
    entries = shards.manifest.all_files()
    for entry in entries:
        path = shards.folder / entry.path
        table = read_verified(path)
        check_finite(features_of(table, shards.spec), shards.spec, path)
    return Verified(len(entries), sum(e.rows for e in entries), sum(e.bytes for e in entries))
