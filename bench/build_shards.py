"""Benchmark build_shards against a plain pyarrow read+write copy of the same data, side by side.

    python bench/build_shards.py [--rows 2000000] [--scale 8] [--families pca,kmeans]

Prints rows/s of each run, the ratio to the copy, and peak memory (sum of RSS over this process and its
children, sampled every 0.2 s). The Dask cluster is started before timing and reused.
"""

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.daskrt import dask_client
from storage.demo import write_blobs


class PeakMemory:
    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            procs = [me] + me.children(recursive=True)
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(fn):
    with PeakMemory() as mem:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start, mem.peak / 2**30


def pyarrow_copy(src: Path, dst: Path):
    with pq.ParquetFile(src) as f, pq.ParquetWriter(dst, f.schema_arrow, use_dictionary=False) as w:
        for batch in f.iter_batches(batch_size=262_144):
            w.write_batch(batch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--scale", type=int, default=8, help="also run at rows x scale (0 to skip)")
    ap.add_argument("--families", default="pca,kmeans")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--memory-limit", default="3GiB", help="per Dask worker")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    sizes = [args.rows] + ([args.rows * args.scale] if args.scale else [])
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, \
            dask_client(None, n_workers=2, memory_limit=args.memory_limit) as client:
        tmp = Path(tmp)
        print(f"{'rows':>10} {'run':>16} {'seconds':>8} {'rows/s':>11} {'vs copy':>8} {'peak GiB':>9}")
        for rows in sizes:
            src = tmp / f"blobs-{rows}.parquet"
            write_blobs(src, rows=rows, dim=args.dim, clusters=64, seed=0)
            secs, peak = timed(lambda: pyarrow_copy(src, tmp / "copy.parquet"))
            copy_rate = rows / secs
            print(f"{rows:>10} {'pyarrow copy':>16} {secs:>8.2f} {copy_rate:>11,.0f} {1.0:>8.2f} {peak:>9.2f}",
                  flush=True)
            os.unlink(tmp / "copy.parquet")
            for family in args.families.split(","):
                cfg = BuildConfig(source=str(src), out=str(tmp / "out"), workers=args.workers, family=family,
                                  overwrite=True, dask_address=client.scheduler.address)
                secs, peak = timed(lambda: build_shards(cfg))
                print(f"{rows:>10} {'simshard ' + family:>16} {secs:>8.2f} {rows / secs:>11,.0f} "
                      f"{rows / secs / copy_rate:>8.2f} {peak:>9.2f}", flush=True)
            os.unlink(src)


if __name__ == "__main__":
    main()
