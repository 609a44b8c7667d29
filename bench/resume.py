"""Benchmark a resumed build: killed at about 80 % of its write pass, started again with the same parameters.

    python bench/resume.py [--rows 2000000] [--dim 64] [--parts 40] [--kill-at 0.8]

Side by side on one Dask LocalCluster (2 worker processes, warmed up by an untimed small build):

1. a full build of the source, timed (the median of ``--repeats``);
2. the same build in a process of its own, SIGKILLed (``SIMSHARD_FAULT=part-written:K``) once the driver has
   seen K of its part files finish, K = ``--kill-at`` of them;
3. the same build again in this process, timed: it claims the killed build's prefix and reuses its scan,
   family, bucket codes and finished part files (:mod:`storage.resume`).

Prints both times and the ratio rerun / full (target: at most 0.4).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.daskrt import dask_client
from storage.demo import write_blobs


def config(src: Path, out: Path, address: str, rows_per_part: int) -> dict:
    return dict(source=str(src), out=str(out), workers=8, family="pca", dask_address=address,
                rows_per_part=rows_per_part)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--parts", type=int, default=40, help="part files of the shard set (about)")
    parser.add_argument("--kill-at", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, dask_client(None, n_workers=2, memory_limit="auto") as client:
        tmp = Path(tmp)
        address = client.scheduler.address
        write_blobs(tmp / "warm.parquet", rows=20_000, dim=args.dim, clusters=8, seed=1)
        build_shards(BuildConfig(**config(tmp / "warm.parquet", tmp / "warm", address, 2_000)))
        src = tmp / "src.parquet"
        write_blobs(src, rows=args.rows, dim=args.dim, clusters=64, seed=0)
        rows_per_part = max(1, args.rows // args.parts)
        full = []
        for r in range(args.repeats):
            start = time.perf_counter()
            manifest = build_shards(BuildConfig(**config(src, tmp / f"full{r}", address, rows_per_part)))
            full.append(time.perf_counter() - start)
        parts = len(manifest.all_files())
        kill_at = max(1, round(args.kill_at * parts))
        out = tmp / "resumed"
        code = ("from pipeline.build import build_shards; from pipeline.config import BuildConfig; "
                f"build_shards(BuildConfig(**{config(src, out, address, rows_per_part)!r}))")
        killed = subprocess.run([sys.executable, "-c", code], env=dict(os.environ,
                                SIMSHARD_FAULT=f"part-written:{kill_at}"), capture_output=True, text=True)
        if killed.returncode != -9:
            raise SystemExit(f"the build was not killed (exit {killed.returncode}): {killed.stderr[-2000:]}")
        start = time.perf_counter()
        resumed = build_shards(BuildConfig(**config(src, out, address, rows_per_part)))
        rerun = time.perf_counter() - start
        assert sorted(f.sha256 for f in resumed.all_files()) == sorted(f.sha256 for f in manifest.all_files())
    median = statistics.median(full)
    print(f"{args.rows:,} rows x {args.dim} float32, 8 shards in {parts} part files, pca")
    print(f"full build: {median:.2f} s (median of {len(full)}: {', '.join(f'{t:.2f}' for t in full)})")
    print(f"killed after {kill_at} of {parts} part files, rerun: {rerun:.2f} s")
    print(f"rerun / full: {rerun / median:.2f} (target <= 0.4); the resumed set's files equal the full build's")


if __name__ == "__main__":
    main()
