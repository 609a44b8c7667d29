"""Keep the source in the Dask cluster's memory between passes when it fits, so storage is read once.

When the source's values (features float32 + int64 labels) take under :data:`MEMORY_SHARE` of the cluster's
memory, the scan pass reads every chunk into worker memory as a :class:`~storage.dataset.ChunkArrays` future
and publishes the futures on the scheduler under the build's name (``client.publish_dataset``: they outlive the
scan step's client). The bucket and write passes take them back by name instead of reading the files again;
the build releases them when the write pass ends or fails. Larger sources are read from storage by every pass,
out of core. Either way the passes see the same values, so the output files are identical.
"""

from distributed import Client

from storage.dataset import Chunk, SourceDataset

# the rest of the memory is for the write pass's shuffle, which holds a few copies of the data at its peak
MEMORY_SHARE = 0.25


def cluster_memory(client: Client) -> int:
    """Sum of the workers' memory limits in bytes (0 when a worker has no limit)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    return 0 if not limits or 0 in limits else sum(limits)


def source_bytes(ds: SourceDataset) -> int:
    """In-memory size of the source's values: float32 features, int64 label and row bookkeeping."""
    return ds.num_rows * (ds.spec.dim * 4 + 24)


def fits(client: Client, nbytes: int) -> bool:
    memory = cluster_memory(client)
    return bool(memory) and nbytes < memory * MEMORY_SHARE


def dataset_name(build_id: str) -> str:
    return f"simshard-source-{build_id}"


def hold(client: Client, ds: SourceDataset, chunks: list[Chunk], *, build_id: str) -> list | None:
    """Read every chunk into worker memory and publish the futures; None (nothing held) when it does not fit."""
    if not fits(client, source_bytes(ds)):
        return None
    # row-major: the write pass moves whole rows (pipeline.blockshuffle)
    futures = client.map(ds.read_arrays, chunks, key=[f"read-{build_id}-{c.index}" for c in chunks], row_major=True)
    client.publish_dataset(futures, name=dataset_name(build_id))
    return futures


def held(client: Client, build_id: str) -> list | None:
    """The futures :func:`hold` published for this build, or None."""
    name = dataset_name(build_id)
    return client.get_dataset(name) if name in client.list_datasets() else None


def release(client: Client, build_id: str) -> None:
    """Drop the held chunks (no-op when none are held)."""
    name = dataset_name(build_id)
    if name in client.list_datasets():
        client.unpublish_dataset(name)
