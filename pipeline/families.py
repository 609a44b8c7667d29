"""Distribution-aware hash families behind one small interface.

A family is fitted on a sample (float32, shape (n, d)) and then encodes any batch of rows to
``(bucket, key)``: ``bucket`` (int64) names the bucket, ``key`` (float32) orders rows inside it.
``rank(bucket)`` gives each bucket's position in *locality order* (neighbouring ranks hold nearby
buckets), so sorting rows by ``(rank(bucket), key)`` puts similar rows next to each other.

Families:
- ``lsh``: random hyperplanes through the sample mean (the data-independent baseline);
- ``pca``: top principal directions, thresholds at the sample medians (in the spirit of DLSH);
- ``itq``: PCA followed by the ITQ rotation (Gong & Lazebnik), thresholds at zero;
- ``kmeans``: FAISS k-means cells, assigned with an HNSW quantizer when cells are many, cells ranked
  along a nearest-neighbour tour of their centroids.
Sign families rank codes by their Gray-code position, so adjacent ranks differ in one bit.

Parameters are saved as ``family.json`` + ``family.npz`` (never pickle) and round-trip exactly.
"""

import json
import math
from pathlib import Path

import faiss
import numpy as np

from storage import rng as rng_streams

FAMILIES = ("lsh", "pca", "itq", "kmeans")
# Measured here (FAISS 1.15.1 generic build, one thread, d=64): flat assignment 435k rows/s at 1,024 cells and
# 114k at 4,096, HNSW (M=32, efSearch=64) 28k and 15k. HNSW only pays off for far more cells.
FLAT_ASSIGN_MAX_CELLS = 16_384
MAX_BITS = 24
MAX_CELLS = 1024  # default cap; --size goes up to any count (the reference measured 4096)


def default_size(family: str, *, rows: int, workers: int, sample_rows: int) -> int:
    """Bits (sign families) or cells (kmeans) so that a mean bucket holds about 32 groups of N rows."""
    buckets = max(1, rows // (32 * max(1, workers)))
    if family == "kmeans":
        return int(max(1, min(buckets, MAX_CELLS, sample_rows // 39)))
    return int(min(MAX_BITS, max(1, math.floor(math.log2(max(2, buckets))))))


def _affine_of(transform, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with transform(x) == x @ A + b for a FAISS linear transform (probed on 0 and the identity)."""
    zero = np.zeros((1, d), np.float32)
    b = transform.apply(zero)[0]
    a = transform.apply(np.eye(d, dtype=np.float32)) - b
    return a.astype(np.float32), b.astype(np.float32)


def _top_direction(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First principal direction (d,) and offset (1,): ``x @ dir + offset`` is the centred projection."""
    pca = faiss.PCAMatrix(sample.shape[1], 1)
    pca.train(sample)
    a, b = _affine_of(pca, sample.shape[1])
    return a[:, 0].copy(), b[:1].copy()


def gray_rank(code: np.ndarray, bits: int) -> np.ndarray:
    """Position of each Gray code in the reflected Gray sequence (inverse Gray transform)."""
    rank = code.copy()
    shift = 1
    while shift < bits:
        rank ^= rank >> shift
        shift <<= 1
    return rank


class HashFamily:
    """Base class. Subclasses set ``name`` and implement ``_fit``, ``encode`` and ``rank``."""

    name = ""

    def __init__(self, *, dim: int, size: int, seed: int, arrays: dict[str, np.ndarray]):
        self.dim, self.size, self.seed, self.arrays = dim, size, seed, arrays

    @classmethod
    def fit(cls, sample: np.ndarray, *, size: int, seed: int) -> "HashFamily":
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2 or len(sample) < 2:
            raise ValueError(f"{cls.name}: need a 2-D sample with at least 2 rows, got shape {sample.shape}")
        arrays = cls._fit(sample, size, seed)
        if "proj" in arrays:  # sign families may use fewer bits than asked (at most the dimension for ITQ)
            size = arrays["proj"].shape[1]
        return cls(dim=sample.shape[1], size=size, seed=seed, arrays=arrays)

    @property
    def num_buckets(self) -> int:
        """Upper bound on distinct bucket ids."""
        return 1 << self.size if self.name != "kmeans" else self.size

    def key(self, x: np.ndarray) -> np.ndarray:
        """In-bucket order key: position along the sample's first principal direction."""
        return (x @ self.arrays["key_dir"] + self.arrays["key_offset"][0]).astype(np.float32)

    def save(self, folder: Path) -> dict[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"family": self.name, "format_version": 1, "dim": self.dim, "size": self.size, "seed": self.seed,
                "size_means": "cells" if self.name == "kmeans" else "bits", "arrays": sorted(self.arrays)}
        (folder / "family.json").write_text(json.dumps(meta, indent=2))
        np.savez(folder / "family.npz", **self.arrays)
        return {"params": "family.json", "arrays": "family.npz"}

    @staticmethod
    def load(folder: Path) -> "HashFamily":
        meta = json.loads((Path(folder) / "family.json").read_text())
        cls = FAMILY_CLASSES.get(meta.get("family"))
        if cls is None:
            raise ValueError(f"{folder}/family.json names unknown family {meta.get('family')!r}")
        with np.load(Path(folder) / "family.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(dim=meta["dim"], size=meta["size"], seed=meta["seed"], arrays=arrays)


class SignFamily(HashFamily):
    """Projections ``z = x @ A + b``, bit j = ``z_j > threshold_j``, first direction most significant."""

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = x @ self.arrays["proj"] + self.arrays["offset"]
        bits = z > self.arrays["threshold"]
        weights = (np.int64(1) << np.arange(self.size - 1, -1, -1, dtype=np.int64))
        return bits.astype(np.int64) @ weights, self.key(x)

    def rank(self, bucket: np.ndarray) -> np.ndarray:
        return gray_rank(bucket, self.size)


class LSHFamily(SignFamily):
    name = "lsh"

    @staticmethod
    def _fit(sample, size, seed):
        rng = rng_streams.lsh_planes(seed)
        proj = rng.standard_normal((sample.shape[1], size)).astype(np.float32)
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        key_dir, key_offset = _top_direction(sample)
        return {"proj": proj, "offset": -(mean @ proj), "threshold": np.zeros(size, np.float32),
                "key_dir": key_dir, "key_offset": key_offset}


class PCAFamily(SignFamily):
    name = "pca"

    @staticmethod
    def _fit(sample, size, seed):
        d = sample.shape[1]
        pca = faiss.PCAMatrix(d, min(size, d))
        pca.train(sample)
        proj, offset = _affine_of(pca, d)
        if size > d:  # more bits than dimensions: repeat directions with quantile thresholds
            reps = math.ceil(size / d)
            proj, offset = np.tile(proj, reps)[:, :size], np.tile(offset, reps)[:size]
        z = sample @ proj + offset
        qs = np.repeat(np.arange(1, math.ceil(size / d) + 1), d)[:size] / (math.ceil(size / d) + 1)
        threshold = np.array([np.quantile(z[:, j], q) for j, q in enumerate(qs)], np.float32)
        return {"proj": proj, "offset": offset, "threshold": threshold,
                "key_dir": proj[:, 0].copy(), "key_offset": offset[:1].copy()}


class ITQFamily(SignFamily):
    name = "itq"

    @staticmethod
    def _fit(sample, size, seed):
        d = sample.shape[1]
        bits = min(size, d)
        itq = faiss.ITQTransform(d, bits, True)
        itq.itq.seed = rng_streams.faiss_seed(seed)
        itq.train(sample)
        proj, offset = _affine_of(itq, d)
        key_dir, key_offset = _top_direction(sample)
        return {"proj": proj, "offset": offset, "threshold": np.zeros(bits, np.float32),
                "key_dir": key_dir, "key_offset": key_offset}


class KMeansFamily(HashFamily):
    name = "kmeans"
    flat_max_cells = FLAT_ASSIGN_MAX_CELLS

    @staticmethod
    def _fit(sample, size, seed):
        d = sample.shape[1]
        cells = max(1, min(size, len(sample)))
        km = faiss.Kmeans(d, cells, niter=10, seed=rng_streams.faiss_seed(seed), verbose=False, spherical=False)
        km.train(sample)
        centroids = km.centroids.astype(np.float32)
        key_dir, key_offset = _top_direction(sample)
        return {"centroids": centroids, "order": _tour(centroids, key_dir), "key_dir": key_dir,
                "key_offset": key_offset}

    def _index(self):
        if getattr(self, "_quantizer", None) is None:
            c = self.arrays["centroids"]
            if len(c) <= self.flat_max_cells:
                index = faiss.IndexFlatL2(c.shape[1])
            else:
                index = faiss.IndexHNSWFlat(c.shape[1], 32)
                index.hnsw.efSearch = 64
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # single-threaded build: the same graph, hence the same cells, every run
            try:
                index.add(c)
            finally:
                faiss.omp_set_num_threads(threads)
            self._quantizer = index
        return self._quantizer

    def encode(self, x):
        _, cell = self._index().search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return cell[:, 0].astype(np.int64), self.key(x)

    def rank(self, bucket):
        rank_of = np.empty(len(self.arrays["order"]), np.int64)
        rank_of[self.arrays["order"]] = np.arange(len(self.arrays["order"]))
        return rank_of[bucket]


def _tour(centroids: np.ndarray, start_dir: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour tour over centroids, starting at the lowest along ``start_dir``.
    Returns cell ids in tour order (int64)."""
    k = len(centroids)
    visited = np.zeros(k, bool)
    order = np.empty(k, np.int64)
    current = int(np.argmin(centroids @ start_dir))
    sq = (centroids.astype(np.float64) ** 2).sum(1)
    for i in range(k):
        order[i] = current
        visited[current] = True
        if i == k - 1:
            break
        dist = sq - 2 * centroids @ centroids[current].astype(np.float64)
        dist[visited] = np.inf
        current = int(np.argmin(dist))
    return order


FAMILY_CLASSES: dict[str, type[HashFamily]] = {
    c.name: c for c in (LSHFamily, PCAFamily, ITQFamily, KMeansFamily)
}


def fit_family(name: str, sample: np.ndarray, *, size: int, seed: int) -> HashFamily:
    if name not in FAMILY_CLASSES:
        raise ValueError(f"unknown hash family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILY_CLASSES[name].fit(sample, size=size, seed=seed)
