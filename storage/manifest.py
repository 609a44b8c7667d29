"""The manifest: the contract of a shard set, as a pydantic model. Committed last, create-only, as
``_manifests/NNNNNNNN.json`` (:mod:`storage.commit`); a reader takes the newest version and refuses a folder
without one.

A :class:`Manifest` checks its own consistency when it is loaded: one shard entry per worker, in order; each
shard's row count equals the sum of its files' and ``rows_per_shard``; validation rows equal their files'.
:func:`read_manifest` also checks every listed file against the disk: it exists, has the recorded size, and
its Parquet footer holds the recorded row count (sha256 too with ``verify_checksums``). Paths are relative
to the shard folder, with ``/`` separators.

Row-group contract (``row_group_rows``): row group g of every shard file holds positions
``[g * row_group_rows, (g + 1) * row_group_rows)`` of that file, so all shards of a set share one layout and
differ at most in their last rows.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from storage import commit, urls
from storage.errors import ManifestError

FORMAT = "simshard.shards"
FORMAT_VERSION = 2
LEGACY_MANIFEST = "manifest.json"  # format 1: one manifest.json at the top, replaced by rename
ROW_GROUP_ROWS = 65_536


def shard_name(index: int, workers: int) -> str:
    return f"shard-{index:05d}-of-{workers:05d}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FileEntry(_Model):
    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str


class ShardEntry(_Model):
    index: int = Field(ge=0)
    rows: int = Field(ge=0)
    files: list[FileEntry]


class SourceInfo(_Model):
    uri: str
    fingerprint: str
    rows: int
    files: int


class Columns(_Model):
    features: list[str]
    layout: Literal["columns", "list"]
    dim: int = Field(ge=1)
    label: str | None
    schema_: dict[str, str] = Field(alias="schema")


class LabelInfo(_Model):
    column: str
    num_classes: int = Field(ge=1)
    counts: list[int]


class FamilyInfo(_Model):
    name: str
    size: int
    params: str
    arrays: str


class Validation(_Model):
    rows: int = Field(ge=0)
    fraction: float
    files: list[FileEntry]


class Dropped(_Model):
    nonfinite_rows: int = 0
    remainder_rows: int = 0


class BucketTable(_Model):
    """An index's buckets in locality order (parallel lists, one entry per non-empty bucket): bucket ``i`` holds
    ``rows[i]`` rows, stored from row ``first_row[i]`` of file ``file[i]`` (an index into the index's one shard's
    files) on, continuing into the next file when it reaches a file's end. ``bucket[i]`` is its rank in the
    family's locality order."""

    bucket: list[int]
    rows: list[int]
    file: list[int]
    first_row: list[int]

    @model_validator(mode="after")
    def _parallel(self) -> "BucketTable":
        if not len(self.bucket) == len(self.rows) == len(self.file) == len(self.first_row):
            raise ValueError("bucket, rows, file and first_row must have one entry per bucket")
        return self


class Manifest(_Model):
    """A shard set's manifest (format_version 2). ``kind`` "index" (build_index) is one shard in locality
    order, with its :class:`BucketTable`; train reads it with ``--index``."""

    format: Literal["simshard.shards"] = FORMAT
    format_version: Literal[2] = FORMAT_VERSION
    kind: Literal["shards", "index"] = "shards"
    build_id: str  # every file lies under data/<build_id>/
    created: str
    source: SourceInfo
    workers: int = Field(ge=1)
    order: str
    seed: int
    remainder: str
    rows_per_shard: list[int]
    groups: int
    partial_group: int
    row_group_rows: int = ROW_GROUP_ROWS
    columns: Columns
    label: LabelInfo | None
    family: FamilyInfo | None
    validation: Validation
    dropped: Dropped
    config: dict[str, Any]
    quality: dict[str, Any] = {}
    shards: list[ShardEntry]
    buckets: BucketTable | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if (self.kind == "index") != (self.buckets is not None):
            raise ValueError("an index (and only an index) lists buckets")
        if self.buckets is not None and sum(self.buckets.rows) != sum(self.rows_per_shard):
            raise ValueError(f"the buckets hold {sum(self.buckets.rows)} rows, the index {sum(self.rows_per_shard)}")
        if len(self.shards) != self.workers or len(self.rows_per_shard) != self.workers:
            raise ValueError(f"lists {len(self.shards)} shards and {len(self.rows_per_shard)} shard sizes for "
                             f"{self.workers} workers")
        for i, shard in enumerate(self.shards):
            listed = sum(f.rows for f in shard.files)
            if shard.index != i or shard.rows != self.rows_per_shard[i] or listed != shard.rows:
                raise ValueError(f"shard {i} is inconsistent: index {shard.index}, rows {shard.rows}, "
                                 f"rows_per_shard {self.rows_per_shard[i]}, its files hold {listed}")
        if sum(f.rows for f in self.validation.files) != self.validation.rows:
            raise ValueError("validation rows differ from the sum of its files' rows")
        return self

    def all_files(self) -> list[FileEntry]:
        return [f for s in self.shards for f in s.files] + list(self.validation.files)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_manifest(text: str, *, where: Path) -> Manifest:
    """Parse and validate manifest JSON; :class:`ManifestError` names ``where`` and the first problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{where} is not a simshard shard-set manifest (format is not {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where} has format_version {data.get('format_version')}; this simshard reads "
                            f"{FORMAT_VERSION}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or "manifest"
        raise ManifestError(f"{where} is invalid: {field}: {err['msg'].removeprefix('Value error, ')}; "
                            "rebuild the shard set") from exc


def read_manifest(folder: str | Path, *, verify_checksums: bool = False, only: list[int] | None = None) -> Manifest:
    """Load the newest committed manifest of a shard set, validate it and check its files against the disk
    (exists, size, Parquet row count; sha256 with ``verify_checksums``): all of them, or with ``only`` the
    files of those shards (a reader of one shard on an object store need not fetch every footer). Raises
    :class:`ManifestError` naming what is wrong."""
    folder = urls.folder(folder)
    if not folder.is_dir():
        raise ManifestError(f"shard folder {folder} does not exist; pass the --out of a build_shards run")
    path = commit.current(folder)
    if path is None:
        if (folder / LEGACY_MANIFEST).is_file():
            raise ManifestError(f"{folder} was written by an older simshard (format 1); rebuild it with "
                                "build_shards --overwrite")
        raise ManifestError(f"{folder} is not a simshard shard set: it has no committed manifest "
                            f"({commit.MANIFESTS}/*.json; an interrupted build leaves none: run the build again)")
    manifest = parse_manifest(path.read_text(), where=path)
    check_files(folder, manifest, where=path, verify_checksums=verify_checksums, only=only)
    return manifest


def check_files(folder: Path, manifest: Manifest, *, where: Path, verify_checksums: bool = False,
                only: list[int] | None = None) -> None:
    """Every file the manifest lists (or, with ``only``, those of these shards) exists under ``folder`` with its
    recorded size and row count."""
    entries = manifest.all_files() if only is None else [f for i in only for f in manifest.shards[i].files]
    for entry in entries:
        file = folder / entry.path
        if not file.is_file():
            raise ManifestError(f"{where} lists {entry.path}, which is missing")
        size = file.stat().st_size
        if size != entry.bytes:
            raise ManifestError(f"{file} has {size} bytes, the manifest says {entry.bytes}; rebuild the shard set")
        try:
            rows = pq.ParquetFile(urls.open_input(file)).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any unreadable footer is the same problem for the user
            raise ManifestError(f"{file} is not a readable Parquet file ({exc}); rebuild the shard set") from exc
        if rows != entry.rows:
            raise ManifestError(f"{file} holds {rows} rows, the manifest says {entry.rows}; rebuild the shard set")
        if verify_checksums and sha256_of(file) != entry.sha256:
            raise ManifestError(f"{file} does not match its sha256 in the manifest")
