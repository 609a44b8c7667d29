"""The build_shards parameters: one pydantic model shared by the CLI, the Prefect flow and the library."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.deal import ORDERS
from pipeline.families import FAMILIES
from storage.dataset import DEFAULT_CHUNK_ROWS
from storage.manifest import ROW_GROUP_ROWS
from storage.urls import known_backend, storage_options_field


class BuildConfig(BaseModel):
    """What to shard and how. Every field is a keyword; defaults build the digits demo for 4 workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("demo:digits", description="Parquet file, folder, glob or fsspec URL; or demo:digits, "
                        "demo:blobs?rows=&dim=&clusters=&seed=, demo:mnist1d?rows=&seed=")
    out: str = Field("./shards", description="output folder: a local path or an fsspec URL "
                     "(s3://bucket/prefix, gs://, az://, file://)")
    workers: int = Field(4, description="number of shards N (one per training worker)")
    family: Literal[FAMILIES] = Field("kmeans", description="hash family")
    order: Literal[ORDERS] = Field("aligned", description="dealing order")
    features: list[str] | None = Field(None, description="feature columns (default: all numeric except the label, "
                                       "or the one fixed-size float list column)")
    label: str | None = Field(None, description="integer label column (default: a column named 'label' if any)")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="seeded share of rows for validation")
    sample_size: int | None = Field(None, description="rows sampled to fit the family (default min(100000, all))")
    size: int | None = Field(None, description="bits (lsh/pca/itq) or cells (kmeans); default from data size and N")
    seed: int = Field(0, description="seed for split, sample, family and group order")
    overwrite: bool = Field(False, description="replace an existing output folder")
    nan: Literal["error", "drop"] = Field("error", description="rows with NaN/inf features: fail or drop them")
    remainder: Literal["keep", "drop"] = Field("keep", description="keep the n mod N extra rows (shards differ by "
                                               "one row) or drop them (equal shards)")
    dask_address: str | None = Field(None, description="existing Dask scheduler (default: a LocalCluster)")
    dask_workers: int = Field(2, ge=1, description="LocalCluster worker processes (1 thread each)")
    dask_cluster: Literal["auto", "processes", "threads"] = Field(
        "auto", description="LocalCluster kind: threads (one in-process worker with --dask-workers threads, "
        "starts at once) for sources under 1 GiB in memory, else --dask-workers processes")
    dask_memory_limit: str = Field("auto", description="LocalCluster memory limit per worker, e.g. '4GiB' "
                                   "(an in-process worker gets it times --dask-workers)")
    dask_dashboard: bool = Field(False, description="serve the LocalCluster's Dask dashboard on a loopback port "
                                 "and log its URL")
    shuffle_method: Literal["auto", "blocks", "tasks", "p2p"] = Field(
        "auto", description="Dask shuffle for the write pass: auto picks blocks (numpy blocks between tasks, "
        "fastest) when the data is under a quarter of the cluster's memory, or under four times that (then "
        "written in waves of that size, the source read once a wave), else p2p (a DataFrame shuffle built for "
        "larger-than-memory data); tasks is the DataFrame task shuffle")
    rows_per_part: int = Field(1_000_000, ge=1, description="a shard larger than this becomes a folder of parts")
    row_group_rows: int = Field(ROW_GROUP_ROWS, ge=1, description="rows per Parquet row group of the shard files "
                                "(the unit training reads and reshuffles)")
    chunk_rows: int = Field(DEFAULT_CHUNK_ROWS, ge=1, description="rows per Dask task when reading the source")

    @field_validator("workers")
    @classmethod
    def _workers_positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"--workers must be >= 1 (got {v})")
        return v

    storage_options: dict[str, Any] | None = storage_options_field("--source and --out")
    _known_backend = field_validator("out", "source")(known_backend)

    @field_validator("sample_size", "size")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be >= 1 (got {v})")
        return v

