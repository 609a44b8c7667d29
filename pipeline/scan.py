"""Scan pass: one read of the source that counts rows and non-finite values, splits off validation rows
and draws the sample the hash family is fitted on.

Row ``r`` goes to validation when ``uniform(r, stream=VALIDATION) < validation_fraction`` and is a sample
candidate when ``uniform(r, stream=SAMPLE) < p``; the sample is the ``sample_size`` candidates with the
smallest draws. Both depend only on (seed, source_row), never on the partitioning.
"""

import dataclasses

import numpy as np

from pipeline import rowhash, scratch
from pipeline.deal import stable_argsort
from storage.dataset import Chunk, ChunkArrays, SourceDataset


@dataclasses.dataclass
class ChunkScan:
    rows: int
    nonfinite_per_column: np.ndarray  # (columns,) int64: non-finite values per feature column
    nonfinite_rows: int
    validation_rows: int
    label_counts: np.ndarray | None  # bincount of labels
    label_min: int | None
    sample_x: np.ndarray  # (k, d) float32
    sample_y: np.ndarray | None
    sample_u: np.ndarray  # (k,) float64 draws, for picking the smallest overall
    sample_rows: np.ndarray  # (k,) int64 source rows


@dataclasses.dataclass
class ScanResult:
    rows: int
    nonfinite_per_column: dict[str, int]
    nonfinite_rows: int
    validation_rows: int
    label_counts: np.ndarray | None
    sample_x: np.ndarray
    sample_y: np.ndarray | None
    sample_rows: np.ndarray


def finite_rows(x: np.ndarray) -> np.ndarray:
    """bool (rows,): whether every value in that row of ``x`` (rows, d) float32 is finite, exactly as
    ``np.isfinite(x).all(axis=1)``. A row's sum is NaN or inf whenever one of its values is, so only rows whose
    sum is not finite (a NaN or inf, or finite values whose sum overflows) are checked value by value. The sum
    is one matrix-vector product: 1.9 ms against 10.5 ms at 250k x 64 (measured)."""
    if x.size == 0:
        return np.ones(len(x), bool)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(x @ np.ones(x.shape[1], x.dtype))
    suspect = np.flatnonzero(~finite)
    if len(suspect):
        finite[suspect] = np.isfinite(x[suspect]).all(axis=1)
    return finite


def row_masks(x: np.ndarray, rows: np.ndarray, *, seed: int, validation_fraction: float):
    """(finite, validation) boolean masks for a chunk's rows."""
    finite = finite_rows(x)
    validation = rowhash.uniform(rows, seed=seed, stream=rowhash.STREAM_VALIDATION) < validation_fraction
    return finite, validation


def scan_chunk(chunk: Chunk, data: ChunkArrays | None = None, *, ds: SourceDataset, seed: int,
               validation_fraction: float, sample_prob: float) -> ChunkScan:
    """Scan one chunk: ``data`` when the source is held in memory, else read from storage."""
    if data is None:  # read into this thread's buffer: the sample below is a copy
        data = ds.read_arrays(chunk, out=scratch.array("chunk", (chunk.rows, ds.spec.dim)))
    x, y = data.features, data.labels
    rows = np.arange(chunk.offset, chunk.offset + chunk.rows, dtype=np.int64)
    finite, validation = row_masks(x, rows, seed=seed, validation_fraction=validation_fraction)
    per_col = np.zeros(len(ds.spec.columns), np.int64)
    if not finite.all():
        per_col[:] = (~finite).sum() if ds.spec.layout == "list" else (~np.isfinite(x)).sum(axis=0)
    u = rowhash.uniform(rows, seed=seed, stream=rowhash.STREAM_SAMPLE)
    pick = finite & ~validation & (u < sample_prob)
    return ChunkScan(
        rows=chunk.rows, nonfinite_per_column=per_col, nonfinite_rows=int((~finite).sum()),
        validation_rows=int((validation & finite).sum()),
        label_counts=None if y is None or len(y) == 0 or y.min() < 0 else np.bincount(y),
        label_min=None if y is None or len(y) == 0 else int(y.min()),
        sample_x=x[pick], sample_y=None if y is None else y[pick], sample_u=u[pick], sample_rows=rows[pick])


def combine(scans: list[ChunkScan], *, ds: SourceDataset, sample_size: int) -> ScanResult:
    """Merge per-chunk scans; keep the ``sample_size`` candidates with the smallest draws (row order)."""
    u = np.concatenate([s.sample_u for s in scans])
    keep = np.sort(stable_argsort(u)[:sample_size])
    ys = [s.sample_y for s in scans]
    counts = None
    if all(s.label_counts is not None for s in scans) and ds.spec.label:
        width = max(len(s.label_counts) for s in scans)
        counts = sum(np.pad(s.label_counts, (0, width - len(s.label_counts))) for s in scans)
    per_col = sum(s.nonfinite_per_column for s in scans)
    names = ds.spec.columns
    return ScanResult(
        rows=sum(s.rows for s in scans),
        nonfinite_per_column={names[j]: int(n) for j, n in enumerate(per_col) if n},
        nonfinite_rows=sum(s.nonfinite_rows for s in scans),
        validation_rows=sum(s.validation_rows for s in scans),
        label_counts=counts,
        sample_x=np.concatenate([s.sample_x for s in scans])[keep],
        sample_y=None if ys[0] is None else np.concatenate(ys)[keep],
        sample_rows=np.concatenate([s.sample_rows for s in scans])[keep])


def sample_probability(*, rows: int, sample_size: int) -> float:
    """Bernoulli rate that yields at least ``sample_size`` candidates with overwhelming probability."""
    if sample_size >= rows:
        return 1.0
    expected = sample_size * 1.1 + 6 * np.sqrt(sample_size) + 100
    return float(min(1.0, expected / rows))
