"""build_index: the training rows bucketed once, for online coordination (``train --index``).

An index is built by the same steps as a shard set (:mod:`pipeline.build`, ``kind="index"``) with one
sequence instead of N shards: every training row in locality order (bucket rank, then in-bucket key), cut
into small row groups, plus a :class:`~storage.manifest.BucketTable` saying where each bucket's rows are.
"""

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.config import BuildConfig
from pipeline.families import FAMILIES
from storage.dataset import DEFAULT_CHUNK_ROWS
from storage.manifest import BucketTable
from storage.urls import known_backend, storage_options_field

# the default family size gives a mean bucket 32 steps' rows of this many workers (128 rows)
NOMINAL_WORKERS = 4
INDEX_ROW_GROUP_ROWS = 4096


class IndexConfig(BaseModel):
    """What to index and how: build_shards' options that apply to one locality-ordered sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("demo:digits", description="Parquet file, folder, glob or fsspec URL; or demo:digits, "
                        "demo:blobs?rows=&dim=&clusters=&seed=, demo:mnist1d?rows=&seed=")
    out: str = Field("./index", description="output folder: a local path or an fsspec URL "
                     "(s3://bucket/prefix, gs://, az://, file://)")
    family: Literal[FAMILIES] = Field("kmeans", description="hash family")
    features: list[str] | None = Field(None, description="feature columns (default: all numeric except the label, "
                                       "or the one fixed-size float list column)")
    label: str | None = Field(None, description="integer label column (default: a column named 'label' if any)")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="seeded share of rows for validation")
    sample_size: int | None = Field(None, description="rows sampled to fit the family (default min(100000, all))")
    size: int | None = Field(None, description="bits (lsh/pca/itq) or cells (kmeans); default: a mean bucket of "
                             "about 128 rows")
    seed: int = Field(0, description="seed for split, sample and family")
    overwrite: bool = Field(False, description="replace an existing index folder simshard made")
    nan: Literal["error", "drop"] = Field("error", description="rows with NaN/inf features: fail or drop them")
    dask_address: str | None = Field(None, description="existing Dask scheduler (default: a LocalCluster)")
    dask_workers: int = Field(2, ge=1, description="LocalCluster worker processes (1 thread each)")
    dask_cluster: Literal["auto", "processes", "threads"] = Field(
        "auto", description="LocalCluster kind: threads for sources under 1 GiB in memory, else processes")
    dask_memory_limit: str = Field("auto", description="LocalCluster memory limit per worker, e.g. '4GiB' "
                                   "(an in-process worker gets it times --dask-workers)")
    dask_dashboard: bool = Field(False, description="serve the LocalCluster's Dask dashboard on a loopback port")
    rows_per_part: int = Field(1_000_000, ge=1, description="the index becomes a folder of parts of this many rows")
    row_group_rows: int = Field(INDEX_ROW_GROUP_ROWS, ge=1, description="rows per Parquet row group (the unit a "
                                "worker's bucket cache reads)")
    chunk_rows: int = Field(DEFAULT_CHUNK_ROWS, ge=1, description="rows per Dask task when reading the source")

    storage_options: dict[str, Any] | None = storage_options_field("--source and --out")
    _known_backend = field_validator("out", "source")(known_backend)

    def build_config(self) -> BuildConfig:
        """The build steps' configuration: one output sequence, hashed (validated like build_shards')."""
        return BuildConfig(**self.model_dump(), storage_options=self.storage_options, workers=1, order="aligned",
                           remainder="keep")


def bucket_table(rank: np.ndarray, file_rows: list[int]) -> BucketTable:
    """Where each bucket's rows lie once the rows (``rank`` int64, one per training row) are written in
    locality order into files of ``file_rows`` rows."""
    buckets, rows = np.unique(rank, return_counts=True)
    start = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    file_start = np.concatenate([[0], np.cumsum(file_rows)[:-1]]).astype(np.int64)
    file = np.searchsorted(file_start, start, side="right") - 1
    return BucketTable(bucket=buckets.tolist(), rows=rows.tolist(), file=file.tolist(),
                       first_row=(start - file_start[file]).tolist())


def quality(table: BucketTable) -> dict:
    """Bucket count and size spread, as the build log and artifact report them."""
    rows = np.asarray(table.rows)
    return {"buckets": int(len(rows)), "max_bucket_rows": int(rows.max()), "mean_bucket_rows": float(rows.mean()),
            "max_over_mean": float(rows.max() / rows.mean())}
