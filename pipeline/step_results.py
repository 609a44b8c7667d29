"""The typed results that the build's steps (:mod:`pipeline.build`) hand each other: the :class:`Plan` from
``prepare``, the :class:`Scanned` counts from ``scan`` and the :class:`Written` files from ``bucket_and_write``.
The family's record between ``fit`` and the rest is :class:`storage.manifest.FamilyInfo`."""

import dataclasses
import tempfile
from pathlib import Path

from pipeline.config import BuildConfig
from pipeline.write import WrittenFile
from storage import commit, urls
from storage.dataset import SourceDataset
from storage.manifest import BucketTable

WORK = "_work"


@dataclasses.dataclass(frozen=True)
class Plan:
    config: BuildConfig
    ds: SourceDataset
    out: Path
    build_id: str  # unique per build: names its data prefix, its lease and the chunks held in cluster memory
    base: int  # the newest committed version when the build began; it commits base + 1
    made_out: bool  # the output folder did not exist before this build
    kind: str = "shards"  # or "index" (build_index: one sequence in locality order)
    resumed: bool = False  # this build carries on in the prefix of a killed one (storage.resume)

    @property
    def staging(self) -> Path:
        """The build's data prefix, ``OUT/data/<build_id>``: invisible to readers until the commit."""
        return self.out / commit.prefix(self.build_id)

    @property
    def work(self) -> Path:
        """The driver's scratch folder (the sample, Dask's spill space): inside the prefix for a local output, a
        local temporary folder for an object store."""
        if urls.is_remote(self.out):
            return Path(tempfile.gettempdir()) / f"simshard-build-{self.build_id}"
        return self.staging / WORK


@dataclasses.dataclass(frozen=True)
class Scanned:
    """What the scan pass learned; the sample itself is saved as ``_work/sample.npz``."""

    rows: int
    train_rows: int
    validation_rows: int
    nonfinite_rows: int
    nonfinite_per_column: dict[str, int]
    sample_rows: int
    chunks: int
    label_counts: list[int] | None


@dataclasses.dataclass(frozen=True)
class Written:
    """What the bucket-and-write pass made."""

    rows_per_shard: list[int]
    groups: int
    partial_group: int
    remainder_rows: int
    validation_rows: int
    files: list[WrittenFile]
    buckets: dict | None  # bucket statistics (None for orders that do not hash)
    bucket_table: BucketTable | None = None  # an index's buckets
    knn_recall_at_10: float | None = None  # quality.knn_recall of the family on the sample (None: no family)
