"""Built-in demo datasets, materialised once as Parquet under the simshard cache folder.

``demo:digits``  scikit-learn's bundled handwritten digits (1,797 x 64, 10 classes, real data).
``demo:blobs?rows=..&dim=..&clusters=..&seed=..``  a seeded mixture of overlapping Gaussian clusters,
written in chunks so that tens of millions of rows never sit in memory.
``demo:mnist1d?rows=..&seed=..``  MNIST-1D (Greydanus 2020: 40 features, 10 classes), generated locally with
the ``mnist1d`` package's ``make_dataset`` (its ``get_dataset`` downloads a pickle: not used); rows are rounded
down to a multiple of 10 (the package makes equal classes). Defaults: 40,000 rows, seed 42 (the package's).

Columns: ``f00``..``fNN`` (float32) and ``label`` (int64).
"""

import os
import random
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import rng as rng_streams
from storage.errors import InputError

BLOB_DEFAULTS = {"rows": 100_000, "dim": 32, "clusters": 10, "seed": 0}
MNIST1D_DEFAULTS = {"rows": 40_000, "seed": 42}
CHUNK_ROWS = 250_000


def cache_dir() -> Path:
    """Folder for materialised demo data: ``$SIMSHARD_CACHE_DIR`` or ``~/.cache/simshard``."""
    return Path(os.environ.get("SIMSHARD_CACHE_DIR", Path.home() / ".cache" / "simshard"))


def feature_names(dim: int) -> list[str]:
    width = max(2, len(str(dim - 1)))
    return [f"f{i:0{width}d}" for i in range(dim)]


def _table(x: np.ndarray, y: np.ndarray) -> pa.Table:
    cols = {name: pa.array(x[:, i], pa.float32()) for i, name in enumerate(feature_names(x.shape[1]))}
    cols["label"] = pa.array(y.astype(np.int64))
    return pa.table(cols)


def _publish(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def parse_params(name: str, query: str, defaults: dict[str, int]) -> dict[str, int]:
    """Integer parameters of ``demo:NAME?query``; :class:`InputError` naming a bad one."""
    params = dict(defaults)
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in defaults:
            raise InputError(f"demo:{name}: unknown parameter {key!r}; use {', '.join(defaults)}")
        try:
            params[key] = int(value)
        except ValueError:
            raise InputError(f"demo:{name}: parameter {key}={value!r} must be an integer") from None
    if any(params[k] < 1 for k in params if k != "seed"):
        raise InputError(f"demo:{name}: {', '.join(k for k in params if k != 'seed')} must be >= 1")
    return params


def parse_blob_params(query: str) -> dict[str, int]:
    return parse_params("blobs", query, BLOB_DEFAULTS)


def blob_centers(dim: int, clusters: int, seed: int) -> np.ndarray:
    """Cluster centres drawn N(0, (4 / sqrt(2 dim))^2) per coordinate, so that two centres lie about 4
    within-cluster standard deviations apart in any dimension: clusters overlap (the nearest-centre
    classifier, Bayes-optimal here, scores about 0.8 with 16 clusters in 64 dimensions)."""
    rng = rng_streams.demo_centres(seed)
    return rng.normal(0.0, 4.0 / np.sqrt(2 * dim), size=(clusters, dim))


def write_blobs(path: Path, *, rows: int, dim: int, clusters: int, seed: int) -> None:
    """Write a seeded Gaussian mixture to ``path`` chunk by chunk (memory independent of ``rows``)."""
    centers = blob_centers(dim, clusters, seed)
    schema = _table(np.zeros((0, dim), np.float32), np.zeros(0, np.int64)).schema
    with pq.ParquetWriter(path, schema, use_dictionary=["label"]) as writer:
        for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            rng = rng_streams.demo_chunk(seed, chunk)
            y = rng.integers(0, clusters, size=n)
            x = (centers[y] + rng.standard_normal((n, dim))).astype(np.float32)
            writer.write_table(_table(x, y), row_group_size=min(n, 131_072))


def write_digits(path: Path) -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32)
    pq.write_table(_table(x, data.target), path, use_dictionary=["label"])


def write_mnist1d(path: Path, *, rows: int, seed: int) -> None:
    """MNIST-1D from the ``mnist1d`` package's generator. It reseeds numpy's and Python's global generators
    (``set_seed``): both are restored afterwards, so nothing else in the process sees a changed stream."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = rows, seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]])
    pq.write_table(_table(x, y), path, use_dictionary=["label"])


def materialise(spec: str) -> Path:
    """Return a local Parquet path for a ``demo:`` spec, writing it into the cache on first use."""
    name, _, query = spec[len("demo:"):].partition("?")
    if name == "digits":
        if query:
            raise InputError("demo:digits takes no parameters")
        final = cache_dir() / "demo" / "digits.parquet"
        writer = write_digits
    elif name == "blobs":
        params = parse_blob_params(query)
        tag = "-".join(f"{k}{params[k]}" for k in sorted(params))
        final = cache_dir() / "demo" / f"blobs-{tag}.parquet"
        writer = lambda p: write_blobs(p, **params)  # noqa: E731
    elif name == "mnist1d":
        params = parse_params("mnist1d", query, MNIST1D_DEFAULTS)
        final = cache_dir() / "demo" / f"mnist1d-rows{params['rows']}-seed{params['seed']}.parquet"
        writer = lambda p: write_mnist1d(p, **params)  # noqa: E731
    else:
        raise InputError(f"unknown demo source {spec!r}: use demo:digits, demo:blobs?rows=&dim=&clusters=&seed= "
                         "or demo:mnist1d?rows=&seed=")
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
    os.close(fd)
    try:
        writer(Path(tmp))
        _publish(Path(tmp), final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final

