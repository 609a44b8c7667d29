"""Every random stream simshard draws from, in one place.

Each stream is a numpy ``Generator`` keyed by the run's seed and a fixed stream id, so two streams never
share numbers and a change of one never shifts another. The ids are part of the on-disk contract: the same
seed gives the same files and the same training order, so they never change once published.

Per-row streams (:mod:`pipeline.rowhash`) use the ids ``ROW_*``: a hash of (seed, stream, source_row), not a
Generator, so that which rows are picked does not depend on how the source is cut.
"""

import numpy as np

# per-row hash streams (pipeline.rowhash.uniform)
ROW_VALIDATION = 1
ROW_SAMPLE = 2


def _gen(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def lsh_planes(seed: int) -> np.random.Generator:
    """Random hyperplanes of the ``lsh`` family."""
    return np.random.default_rng(seed)


def group_order(seed: int) -> np.random.Generator:
    """The shuffled order of groups (aligned/stratified) and the IID permutation (random)."""
    return _gen(seed, 7)


def stratify(seed: int, shard: int) -> np.random.Generator:
    """The per-shard shuffle of the ``stratified`` order."""
    return _gen(seed, 8, shard)


def quality_tuples(seed: int) -> np.random.Generator:
    """Random N-tuples that group tightness compares against."""
    return _gen(seed, 11)


def knn_queries(seed: int) -> np.random.Generator:
    """Queries and base rows of the recall@10 measurement."""
    return _gen(seed, 12)


def epoch_blocks(seed: int, epoch: int) -> np.random.Generator:
    """The order of row groups in an epoch, the same on every worker."""
    return _gen(seed, epoch, 0)


def epoch_rows(seed: int, epoch: int, block: int) -> np.random.Generator:
    """The order of rows inside row group ``block`` in an epoch, the same on every worker."""
    return _gen(seed, epoch, 1, block)


def epoch_all_rows(seed: int, epoch: int) -> np.random.Generator:
    """The IID order of every training row for the ``single`` reference."""
    return _gen(seed, epoch, 2)


def bucket_rows(seed: int, epoch: int, bucket: int) -> np.random.Generator:
    """The order of an index bucket's rows in an epoch (online coordination), the same on every worker."""
    return _gen(seed, epoch, 3, bucket)


def coordinator_draws(seed: int, epoch: int) -> np.random.Generator:
    """The leading workers' draws from an epoch's unused rows (online coordination)."""
    return _gen(seed, epoch, 4)


def tightness_pairs(seed: int) -> np.random.Generator:
    """The random row pairs that ``step_tightness`` compares against."""
    return _gen(seed, 13)


def simulator_schedule(seed: int) -> np.random.Generator:
    """Which worker the simulator's ``random`` schedule serves next."""
    return _gen(seed, 99)


def worker_speeds(seed: int) -> np.random.Generator:
    """The per-worker speeds of the simulator's ``heterogeneous`` schedule."""
    return _gen(seed, 98)


def demo_centres(seed: int) -> np.random.Generator:
    """Cluster centres of ``demo:blobs``."""
    return _gen(seed, 1)


def demo_chunk(seed: int, chunk: int) -> np.random.Generator:
    """Rows of chunk ``chunk`` of ``demo:blobs``."""
    return _gen(seed, 2, chunk)


def faiss_seed(seed: int) -> int:
    """Seed of FAISS's own generators (k-means initialisation, the ITQ rotation): the run's seed."""
    return int(seed)


def model_init_seed(seed: int) -> int:
    """``torch.manual_seed`` before building the model: the same starting point in every process."""
    return int(seed)


def worker_torch_seed(seed: int, worker: int) -> int:
    """``torch.manual_seed`` of worker ``worker`` (dropout and other torch-side randomness)."""
    return seed * 1000 + worker + 1
