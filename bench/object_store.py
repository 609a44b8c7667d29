"""Benchmark Parquet on an S3 API: pyarrow's native S3 filesystem against fsspec's s3fs, and simshard's PyTorch
dataset against a plain pyarrow read of the same shard files, side by side on one moto server.

    python bench/object_store.py [--file-rows 500000] [--rows 4000000] [--dim 64] [--repeats 3]

A ``moto`` server on 127.0.0.1, in a process of its own, stands in for S3 (it keeps objects in memory and
serves them from Python, so absolute figures are a loopback's, not a network's; the ratios between clients
are the point). Prints, for
the same table and the same keys:

1. write and read MB/s of one Parquet file through ``pyarrow.fs.S3FileSystem`` and through s3fs (pyarrow
   reading through ``PyFileSystem(FSSpecHandler(s3fs))``), and simshard's own write of a part file (encoded in
   memory with its sha256, then one upload: pyarrow's client here, as the options are empty; its read is the
   s3fs one);
2. rows/s of ``AlignedShards`` (rank 0 of 4, one epoch of batches of 256, a plain ``DataLoader``) from a
   local shard set and from the same set on the server, against a plain pyarrow read of that rank's files
   (``pq.read_table`` then ``to_numpy``) from the same place (target: at least 0.8x).
"""

import argparse
import atexit
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def start_moto() -> str:
    """moto's server in a process of its own (as S3 is: serving must not share this process's GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(server.terminate)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return endpoint
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.1)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file-rows", type=int, default=500_000, help="rows of the one-file comparison")
    parser.add_argument("--rows", type=int, default=4_000_000, help="rows of the shard set (4 shards)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    endpoint = start_moto()
    import boto3
    import fsspec

    boto3.client("s3").create_bucket(Bucket="bench")
    s3 = fsspec.filesystem("s3")
    native = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                               access_key="bench", secret_key="bench", region="us-east-1")
    via_fsspec = pafs.PyFileSystem(pafs.FSSpecHandler(s3))
    rng = np.random.default_rng(0)
    table = pa.table({f"f{j:02d}": rng.standard_normal(args.file_rows, np.float32) for j in range(args.dim)})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="snappy", write_page_checksum=True)
    mb = buffer.getvalue().size / 2**20
    print(f"one Parquet file: {args.file_rows:,} rows x {args.dim} float32, {mb:.0f} MiB, moto at {endpoint}")
    options = dict(compression="snappy", write_page_checksum=True)
    write = {"pyarrow S3FileSystem": best(lambda: pq.write_table(table, "bench/native.parquet", filesystem=native,
                                                                  **options), args.repeats),
             "s3fs (fsspec)": best(lambda: pq.write_table(table, "bench/fsspec.parquet", filesystem=via_fsspec,
                                                          **options), args.repeats)}
    read = {"pyarrow S3FileSystem": best(lambda: pq.read_table("bench/native.parquet", filesystem=native),
                                         args.repeats),
            "s3fs (fsspec)": best(lambda: pq.read_table("bench/fsspec.parquet", filesystem=via_fsspec),
                                  args.repeats)}
    from storage.shardset import write_part
    from storage.urls import folder

    target = folder("s3://bench/simshard.parquet")
    write["simshard write_part"] = best(lambda: write_part(table, target, label=None), args.repeats)
    read["simshard write_part"] = read["s3fs (fsspec)"]
    for name in write:
        print(f"  {name:22s} write {mb / write[name]:7.1f} MiB/s   read {mb / read[name]:7.1f} MiB/s")
    ratio = read["s3fs (fsspec)"] / read["pyarrow S3FileSystem"]
    print(f"  read time s3fs / native: {ratio:.2f}; write time s3fs / native: "
          f"{write['s3fs (fsspec)'] / write['pyarrow S3FileSystem']:.2f}")
    dataset_bench(args, s3)


def dataset_bench(args, s3) -> None:
    from torch.utils.data import DataLoader

    from pipeline.build import build_shards
    from pipeline.config import BuildConfig
    from storage.demo import write_blobs
    from storage.shardset import ShardSet
    from storage.torch_dataset import AlignedShards

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_blobs(tmp / "src.parquet", rows=args.rows, dim=args.dim, clusters=32, seed=0)
        build_shards(BuildConfig(source=str(tmp / "src.parquet"), out=str(tmp / "shards"), workers=4,
                                 family="pca", dask_cluster="threads"))
        s3.put(str(tmp / "shards"), "bench/shards", recursive=True)
        print(f"AlignedShards, rank 0 of 4, one epoch, batch 256 ({args.rows:,} rows x {args.dim} built into 4 "
              "shards):")
        for where, folder in (("local disk", str(tmp / "shards")), ("moto S3", "s3://bench/shards")):
            shards = ShardSet(folder)
            rows = shards.manifest.rows_per_shard[0]

            def plain(shards=shards, where=where):
                for f in shards.shard_files(0):
                    t = pq.read_table(str(f) if where == "local disk" else f.path,
                                      filesystem=None if where == "local disk" else pafs.PyFileSystem(
                                          pafs.FSSpecHandler(s3)))
                    np.stack([c.to_numpy() for c in t.columns[:args.dim]], 1)

            def dataset(folder=folder):
                for _ in DataLoader(AlignedShards(folder, batch_size=256, rank=0, world_size=4), batch_size=None):
                    pass

            t_plain, t_dataset = best(plain, args.repeats), best(dataset, args.repeats)
            print(f"  {where:10s}: dataset {rows / t_dataset:10,.0f} rows/s, plain pyarrow read "
                  f"{rows / t_plain:10,.0f} rows/s, ratio {t_plain / t_dataset:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
