"""build_shards on an existing Dask cluster: a scheduler and two workers started as separate processes, sharing no
disk with the driver: the source is read from and the shard set written to the moto S3 server."""

import json
import subprocess
import sys
import time

import numpy as np
from distributed import Client

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from storage.shardset import ShardSet
from tests.conftest import mixture, write_parquet
from tests.flows.conftest import ROOT
from tests.s3_fixtures import s3fs


def _address_from(scheduler_file, scheduler, log):
    """The scheduler's address once it has written its file (it picks its own port, so no port can be raced)."""
    deadline = time.monotonic() + 120
    while not scheduler_file.exists() or not scheduler_file.read_text().strip():
        assert scheduler.poll() is None, f"dask scheduler exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no scheduler file after 120 s: {log.read_text()[-2000:]}"
        time.sleep(0.1)
    return json.loads(scheduler_file.read_text())["address"]


def test_build_on_a_separately_started_dask_cluster_from_s3_to_s3(tmp_path, bucket):
    scheduler_file, log = tmp_path / "scheduler.json", tmp_path / "dask.log"
    out = open(log, "w")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(scheduler_file)], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT)]
    try:
        address = _address_from(scheduler_file, procs[0], log)
        procs += [subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--host",
                                    "127.0.0.1", "--no-dashboard", "--memory-limit", "2GiB"], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT) for _ in range(2)]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            # 40 row groups, so the reads (and the work that follows the data) spread over both workers
            x, y = mixture(20000, dim=8, clusters=5, seed=3)
            write_parquet(tmp_path / "src.parquet", x, y, row_group_size=500)
            s3fs().put(str(tmp_path / "src.parquet"), f"{bucket}/src/src.parquet")
            manifest = build_shards(BuildConfig(source=f"{bucket}/src", out=f"{bucket}/s",
                                                workers=3, family="pca", dask_address=address, chunk_rows=500))
            executed = client.run(lambda dask_worker: dask_worker.state.transition_counter)
        assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed
        shards = ShardSet(f"{bucket}/s")
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
        out.close()
