"""Shared fixtures: a real Dask LocalCluster, a real Prefect test server, small Parquet datasets."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    os.environ["SIMSHARD_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def dask_address(dask_cluster):
    return dask_cluster.scheduler_address


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_env(prefect_server):
    """Environment for CLI subprocesses that run flows: the session's Prefect test server, so that they need not
    each start a temporary one (4-6 s apiece). Tests of the temporary server itself do not use it."""
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


from tests.s3_fixtures import bucket, s3_server  # noqa: E402,F401  (the moto S3 server)
from tests.shard_fixtures import (  # noqa: E402,F401  (session fixtures)
    blob_index,
    blob_shards,
    digits_index,
    digits_shards,
)


def mixture(rows: int, dim: int = 8, clusters: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(clusters, dim))
    y = rng.integers(0, clusters, rows)
    x = (centers[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    return x, y


def write_parquet(path, x, y=None, *, names=None, row_group_size=None):
    names = names or [f"c{j}" for j in range(x.shape[1])]
    cols = {n: x[:, j] for j, n in enumerate(names)}
    if y is not None:
        cols["label"] = y.astype(np.int64)
    pq.write_table(pa.table(cols), path, row_group_size=row_group_size)
    return path
