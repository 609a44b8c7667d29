"""build_shards on an existing Dask cluster: a scheduler and two workers started as separate processes."""

import subprocess
import sys
import time

import numpy as np
from distributed import Client

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage.shardset import ShardSet
from tests.conftest import mixture, write_parquet
from tests.flows.conftest import ROOT, free_port


def test_build_on_a_separately_started_dask_cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs += [subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--host",
                                "127.0.0.1", "--no-dashboard", "--memory-limit", "2GiB"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            # 40 row groups, so the reads (and the work that follows the data) spread over both workers
            x, y = mixture(20000, dim=8, clusters=5, seed=3)
            write_parquet(tmp_path / "src.parquet", x, y, row_group_size=500)
            manifest = build_shards(BuildConfig(source=str(tmp_path / "src.parquet"), out=str(tmp_path / "s"),
                                                workers=3, family="pca", dask_address=address, chunk_rows=500))
            executed = client.run(lambda dask_worker: dask_worker.state.transition_counter)
        assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed
        shards = ShardSet(tmp_path / "s")
        rows = np.concatenate([shards.read_shard(i)[2] for i in range(3)] + [shards.read_validation()[2]])
        assert len(np.unique(rows)) == 20000 == manifest.source.rows
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(0.5)
