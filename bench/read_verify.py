"""What verified reads cost: rows/s reading shard files row group by row group (as training does) with and
without page-checksum verification, side by side in one run, runs interleaved.

    python bench/read_verify.py [--rows 2000000] [--dim 64] [--files 8] [--repeats 5]

Target (issue "Nothing lost, nothing silent"): verification costs at most 10 % of read throughput.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from storage.dataset import FeatureSpec, features_of
from storage.shardset import part_table, write_part

SPEC = None


def write_files(folder: Path, *, rows: int, dim: int, files: int) -> list[Path]:
    global SPEC
    SPEC = spec = FeatureSpec(tuple(f"f{j:02d}" for j in range(dim)), "columns", dim, "label")
    rng = np.random.default_rng(0)
    paths = []
    per = rows // files
    for i in range(files):
        x = rng.standard_normal((per, dim), dtype=np.float32)
        table = part_table(x, rng.integers(0, 10, per), np.arange(i * per, (i + 1) * per), spec)
        paths.append(folder / f"shard-{i:05d}.parquet")
        write_part(table, paths[-1], label="label")
    return paths


def read_all(paths: list[Path], *, verify: bool, features: bool) -> tuple[float, int]:
    """Seconds and rows to read every row group; ``features``: also make the float32 feature matrix, as a
    training worker does for each row group."""
    start, rows = time.perf_counter(), 0
    for path in paths:
        pf = pq.ParquetFile(path, page_checksum_verification=verify)
        for g in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(g)
            if features:
                features_of(table, SPEC)
            rows += table.num_rows
    return time.perf_counter() - start, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(Path(tmp), rows=args.rows, dim=args.dim, files=args.files)
        read_all(paths, verify=True, features=False)  # warm the page cache
        times = {(v, f): [] for v in (False, True) for f in (False, True)}
        for _ in range(args.repeats):
            for key in times:
                secs, rows = read_all(paths, verify=key[0], features=key[1])
                times[key].append(secs)
    print(f"{rows:,} rows x {args.dim} float32 in {args.files} files (page cache warm), median of {args.repeats} "
          "interleaved runs")
    for features, what in ((False, "Arrow row groups"), (True, "row groups + feature matrix (as training)")):
        plain, checked = statistics.median(times[(False, features)]), statistics.median(times[(True, features)])
        print(f"  {what}: plain {plain:.3f} s ({rows / plain:,.0f} rows/s), verified {checked:.3f} s "
              f"({rows / checked:,.0f} rows/s): verified / plain throughput {plain / checked:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
