"""The LocalCluster simshard starts for itself: its worker processes' environment, and Dask's settings left as
they were."""

import os

import dask
import pytest

from pipeline.daskrt import dask_client


def worker_environ(name: str) -> str | None:
    return os.environ.get(name)


@pytest.mark.parametrize("inherited, expected", [
    (None, None),  # Dask's config default alone
    ("65536", None),  # what an earlier cluster's Nanny left in this process's environment
    ("1048576", "1048576"),  # a value someone chose
])
def test_own_worker_processes_run_without_dasks_malloc_trim_threshold(inherited, expected, monkeypatch):
    if inherited is None:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", inherited)
    before = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    assert before["MALLOC_TRIM_THRESHOLD_"] == 65536
    with dask_client(None, n_workers=1, processes=True, memory_limit="1GiB") as client:
        trim = client.run(worker_environ, "MALLOC_TRIM_THRESHOLD_")
        blas = client.run(worker_environ, "OPENBLAS_NUM_THREADS")
    assert list(trim.values()) == [expected]
    assert list(blas.values()) == ["1"]  # the rest of Dask's pre-spawn environment stays
    assert dask.config.get("distributed.nanny.pre-spawn-environ") == before
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == inherited
