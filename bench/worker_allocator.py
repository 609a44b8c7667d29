"""Worker processes with and without Dask's MALLOC_TRIM_THRESHOLD_=65536, side by side.

    python bench/worker_allocator.py [--gib 4] [--mib 16] [--repeats 3]

One task on a one-worker cluster makes and frees ``--gib`` GiB of ``--mib`` MiB float32 arrays in the worker's
thread, as the build's writers and readers do; it reports wall and kernel seconds. The first cluster is
simshard's own (``pipeline.daskrt.dask_client``, which leaves the variable out), the second a LocalCluster on
Dask's defaults, which sets it and so turns off glibc's adaptive mmap threshold (every array over 128 KiB is
mapped fresh and handed back on free).
"""

import argparse
import os
import resource
import statistics
import time

import numpy as np
from distributed import Client, LocalCluster

from pipeline.daskrt import dask_client


def churn(gib: float, mib: int) -> tuple[float, float, str | None]:
    """(wall s, kernel CPU s, MALLOC_TRIM_THRESHOLD_) of making and freeing ``gib`` GiB of ``mib`` MiB arrays."""
    n = mib * 2**20 // 4
    start, kernel = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for _ in range(int(gib * 1024 // mib)):
        a = np.ones(n, np.float32)
        a.sum()
        del a
    return (time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel,
            os.environ.get("MALLOC_TRIM_THRESHOLD_"))


def measure(client: Client, args) -> tuple[float, float, str | None]:
    runs = [client.submit(churn, args.gib, args.mib, pure=False).result() for _ in range(args.repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4.0)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with dask_client(None, n_workers=1, memory_limit="2GiB") as client:
        own = measure(client, args)
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      memory_limit="2GiB") as cluster, Client(cluster) as client:
        dask_default = measure(client, args)
    print(f"{args.gib:g} GiB of {args.mib} MiB arrays made and freed in a worker thread, median of {args.repeats}")
    for name, (wall, kernel, trim) in (("simshard's LocalCluster", own), ("Dask's defaults", dask_default)):
        print(f"  {name:<24} MALLOC_TRIM_THRESHOLD_={trim}: {wall:.2f} s, kernel {kernel:.2f} s")
    print(f"  ratio (Dask's defaults / simshard's): {dask_default[0] / own[0]:.2f}x")


if __name__ == "__main__":
    main()
