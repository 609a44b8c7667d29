"""Quality of a shard set, measured on samples.

- ``group_tightness``: mean pairwise distance inside the groups formed by row k of every shard, divided by
  the same for random N-tuples of rows (lower is better; about 1.0 for random or contiguous shards).
- ``bucket_stats``: bucket count, max/mean bucket size, share of rows in buckets smaller than N.
- ``knn_recall``: for sampled queries, the share of their 10 exact nearest neighbours (FAISS IndexFlatL2 on
  up to 20,000 sample rows) that the family puts in the query's bucket.
- ``label_distance``: total-variation distance between each shard's label distribution and the whole's.
"""

import faiss
import numpy as np

from storage import rng as rng_streams

MAX_PAIR_FLOATS = 20_000_000
KNN_BASE_ROWS = 20_000


def mean_pairwise_distance(groups: np.ndarray) -> float:
    """Mean Euclidean distance over distinct pairs inside each group; ``groups`` is (m, N, d), N >= 2."""
    m, n, d = groups.shape
    step = max(1, MAX_PAIR_FLOATS // max(1, n * n * d))
    total, pairs = 0.0, 0
    iu = np.triu_indices(n, 1)
    for s in range(0, m, step):
        g = groups[s:s + step].astype(np.float64)
        sq = (g ** 2).sum(-1)
        d2 = sq[:, :, None] + sq[:, None, :] - 2 * np.einsum("mid,mjd->mij", g, g)
        dist = np.sqrt(np.maximum(d2[:, iu[0], iu[1]], 0))
        total += dist.sum()
        pairs += dist.size
    return total / pairs


def group_tightness(heads: list[np.ndarray], sample: np.ndarray, *, seed: int) -> float | None:
    """``heads[i]`` holds the first m rows of shard i (float32 (m, d)); None when N < 2."""
    if len(heads) < 2:
        return None
    m = min(len(h) for h in heads)
    if m == 0 or len(sample) < len(heads):
        return None
    groups = np.stack([h[:m] for h in heads], axis=1)
    rng = rng_streams.quality_tuples(seed)
    random_tuples = sample[np.stack([rng.choice(len(sample), len(heads), replace=False) for _ in range(m)])]
    return float(mean_pairwise_distance(groups) / mean_pairwise_distance(random_tuples))


def bucket_stats(rank: np.ndarray, *, workers: int) -> dict:
    """Bucket statistics of the rows' bucket ranks ``rank`` int64 (>= 0)."""
    if len(rank) and rank.max() < 4 * len(rank):  # a count per possible rank is cheaper than sorting
        sizes = np.bincount(rank)
        sizes = sizes[sizes > 0]
    else:
        sizes = np.bincount(np.unique(rank, return_inverse=True)[1])
    return {"buckets": int(len(sizes)), "max_over_mean": float(sizes.max() / sizes.mean()),
            "share_rows_in_small_buckets": float(sizes[sizes < workers].sum() / sizes.sum())}


def knn_recall(family, sample: np.ndarray, *, queries: int = 1000, k: int = 10, base: int = KNN_BASE_ROWS,
               seed: int = 0) -> float:
    """Share of each query's ``k`` exact nearest neighbours (FAISS ``IndexFlatL2``) that share its bucket.
    Neighbours are searched among at most ``base`` sampled rows (the queries are drawn from them), which keeps
    the exact search under a second whatever the sample size."""
    rng = rng_streams.knn_queries(seed)
    if len(sample) > base:
        sample = sample[np.sort(rng.choice(len(sample), base, replace=False))]
    if len(sample) <= k:
        return float("nan")
    q = rng.choice(len(sample), min(queries, len(sample)), replace=False)
    index = faiss.IndexFlatL2(sample.shape[1])
    index.add(np.ascontiguousarray(sample, np.float32))
    _, nn = index.search(np.ascontiguousarray(sample[q], np.float32), k + 1)
    bucket, _ = family.encode(sample)
    neighbours = np.where(nn[:, :1] == q[:, None], nn[:, 1:], nn[:, :k])  # drop the query itself
    return float((bucket[neighbours] == bucket[q][:, None]).mean())


def label_distance(shard_counts: list[np.ndarray], *, num_classes: int) -> list[float]:
    """Per shard, the total-variation distance of its labels (``shard_counts[i]``: shard i's bincount) from the
    whole's."""
    counts = np.stack([np.pad(c, (0, num_classes - len(c))) for c in shard_counts]).astype(np.float64)
    whole = counts.sum(0) / counts.sum()
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return (0.5 * np.abs(share - whole).sum(1)).round(6).tolist()
