"""Distribution-aware hash families behind one small interface.

A family is fitted on a sample (float32, shape (n, d)) and then encodes any batch of rows to
``(bucket, key)``: ``bucket`` (int64) names the bucket, ``key`` (float32) orders rows inside it.
``rank(bucket)`` gives each bucket's position in *locality order* (neighbouring ranks hold nearby
buckets), so sorting rows by ``(rank(bucket), key)`` puts similar rows next to each other.

Families:
- ``lsh``: random hyperplanes through the sample mean (the data-independent baseline);
- ``pca``: top principal directions, thresholds at the sample medians (in the spirit of DLSH);
- ``itq``: PCA followed by the ITQ rotation (Gong & Lazebnik), thresholds at zero;
- ``kmeans``: FAISS k-means cells ranked along a nearest-neighbour tour of their centroids. From
  ``TWO_LEVEL_MIN_CELLS`` cells on, a two-level quantizer: about √K coarse cells, then fine cells fitted
  inside each on that coarse cell's sample rows, then a few joint Lloyd steps over all fine cells. A row is
  assigned to the nearest fine cell of its 2 nearest coarse cells, about 3√K distances instead of K;
  the locality order follows the tree (coarse cells along their tour, the fine cells of each along theirs).
  Fewer cells (``--size``) are assigned flat.
Sign families rank codes by their Gray-code position, so adjacent ranks differ in one bit.

Parameters are saved as ``family.json`` + ``family.npz`` (never pickle) and round-trip exactly.
"""

import functools
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import threadpoolctl

from storage import rng as rng_streams
from storage import urls

FAMILIES = ("lsh", "pca", "itq", "kmeans")
# Measured here (FAISS 1.15.1 generic build, one thread, d=64): flat assignment 435k rows/s at 1,024 cells and
# 114k at 4,096, HNSW (M=32, efSearch=64) 28k and 15k. HNSW only pays off for far more cells.
FLAT_ASSIGN_MAX_CELLS = 16_384
MAX_BITS = 24
MAX_CELLS = 1024  # default cap; --size goes up to any count (the reference measured 4096)
TWO_LEVEL_MIN_CELLS = 1024  # below, flat assignment is as fast (measured at d = 32 and 64)
PROBES = 2  # coarse cells searched per row by the two-level quantizer
REFINE_ITERATIONS = 2  # joint Lloyd steps after the per-coarse-cell fits: on demo:blobs at 1,024 cells, 2 steps kept
# recall@10 at 0.978 of flat assignment and tightness at 1.009, against 0.988 and 1.009 with 4 (a fit 0.2 s longer)


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


@functools.cache
def _thread_pools() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def one_thread():
    """A context in which BLAS and OpenMP (FAISS's included) run on one thread. The libraries are looked up
    once per process: ``threadpoolctl.threadpool_limits`` looks them up on every call, 0.7-2 ms each (measured),
    which the bucket pass paid per chunk."""
    return _thread_pools().limit(limits=1)


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
        with (folder / "family.npz").open("wb") as fh:  # a file object: the folder may be on an object store
            np.savez(fh, **self.arrays)
        return {"params": "family.json", "arrays": "family.npz"}

    @staticmethod
    def load(folder: Path) -> "HashFamily":
        folder = urls.folder(folder)
        meta = json.loads((folder / "family.json").read_text())
        cls = FAMILY_CLASSES.get(meta.get("family"))
        if cls is None:
            raise ValueError(f"{folder}/family.json names unknown family {meta.get('family')!r}")
        with (folder / "family.npz").open("rb") as fh, np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
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
        cells = max(1, min(size, len(sample)))
        key_dir, key_offset = _top_direction(sample)
        if cells >= TWO_LEVEL_MIN_CELLS:
            return {**_fit_two_level(sample, cells, seed, key_dir), "key_dir": key_dir, "key_offset": key_offset}
        centroids = _kmeans(sample, cells, seed)
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
        x = np.ascontiguousarray(x, dtype=np.float32)
        if "coarse" in self.arrays:
            return self._encode_two_level(x), self.key(x)
        _, cell = self._index().search(x, 1)
        return cell[:, 0].astype(np.int64), self.key(x)

    def _tree(self) -> tuple:
        """The two levels as FAISS indexes, built once: (top index over the coarse cells, one per coarse cell)."""
        if getattr(self, "_levels", None) is None:
            coarse, start = self.arrays["coarse"], self.arrays["fine_start"]
            fine = [faiss.IndexFlatL2(self.dim) for _ in range(len(coarse))]
            for c, index in enumerate(fine):
                index.add(self.arrays["centroids"][start[c]:start[c + 1]])
            top = faiss.IndexFlatL2(self.dim)
            top.add(coarse)
            self._levels = (top, fine)
        return self._levels

    def _encode_two_level(self, x):
        top, fine = self._tree()
        # the nearest fine cell among the fine cells of the PROBES nearest coarse cells: a row near a coarse
        # boundary still finds its nearest fine cell in the neighbouring coarse cell
        _, parents = top.search(x, min(PROBES, len(fine)))
        probes = parents.shape[1]
        dist = np.empty((probes, len(x)), np.float32)
        cell = np.empty((probes, len(x)), np.int64)
        for p, parent in enumerate(parents.T):
            # a stable sort of 16-bit ints is a radix sort
            by_parent = np.argsort(parent.astype(np.int16 if len(fine) < 2**15 else np.int64), kind="stable")
            bounds = np.searchsorted(parent[by_parent], np.arange(len(fine) + 1))
            for c in range(len(fine)):
                rows = by_parent[bounds[c]:bounds[c + 1]]
                if len(rows):
                    d, f = fine[c].search(x[rows], 1)
                    dist[p, rows], cell[p, rows] = d[:, 0], self.arrays["fine_start"][c] + f[:, 0]
        # the first probe wins ties, as when probes are searched in order keeping only strictly nearer cells
        return cell[np.argmin(dist, axis=0), np.arange(len(x))]

    def rank(self, bucket):
        rank_of = np.empty(len(self.arrays["order"]), np.int64)
        rank_of[self.arrays["order"]] = np.arange(len(self.arrays["order"]))
        return rank_of[bucket]


def _kmeans(sample: np.ndarray, cells: int, seed: int) -> np.ndarray:
    km = faiss.Kmeans(sample.shape[1], cells, niter=10, seed=rng_streams.faiss_seed(seed), verbose=False,
                      spherical=False)
    km.train(np.ascontiguousarray(sample, np.float32))
    return km.centroids.astype(np.float32)


def _single_threaded(fn):
    """``fn`` run with one OpenMP thread on whichever thread calls it: FAISS's thread count is per calling
    thread, and one thread per call keeps each result the same wherever and alongside whatever it runs."""
    def call(*args):
        faiss.omp_set_num_threads(1)
        return fn(*args)
    return call


def _fit_two_level(sample: np.ndarray, cells: int, seed: int, key_dir: np.ndarray) -> dict[str, np.ndarray]:
    """About √cells coarse cells; inside each, fine cells in proportion to its sample rows (at least one), fitted
    on those rows. Fine cell ids are global: coarse cell c owns ``fine_start[c] .. fine_start[c + 1] - 1``.
    ``order`` walks the coarse tour and, inside each coarse cell, a tour of its fine cells that starts next to
    where the previous coarse cell's tour ended.

    The fine fits and the refine steps' assignments are independent per coarse cell and per row, so they run
    on the machine's cores at once (FAISS releases the GIL), each on one OpenMP thread: the result is the same
    for any number of cores."""
    sample = np.ascontiguousarray(sample, np.float32)
    n_coarse = max(2, round(math.sqrt(cells)))
    coarse = _kmeans(sample, n_coarse, seed)
    index = faiss.IndexFlatL2(sample.shape[1])
    index.add(coarse)
    parent = index.search(sample, 1)[1][:, 0]
    members = np.bincount(parent, minlength=n_coarse)
    share = _apportion(cells, members)

    def fit_fine(c: int) -> np.ndarray:
        rows = sample[parent == c]
        return coarse[c:c + 1] if share[c] == 1 or len(rows) < 2 else _kmeans(rows, int(share[c]), seed + c + 1)

    cores = max(1, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(cores, thread_name_prefix="simshard-fit") as pool:
        fine = list(pool.map(_single_threaded(fit_fine), range(n_coarse)))
        start = np.cumsum([0] + [len(f) for f in fine]).astype(np.int64)
        centroids = np.concatenate(fine)
        tree = KMeansFamily(dim=sample.shape[1], size=cells, seed=seed,
                            arrays={"centroids": centroids, "coarse": coarse, "fine_start": start})
        parts = np.array_split(np.arange(len(sample)), cores)
        for _ in range(REFINE_ITERATIONS):  # Lloyd steps over all fine cells at once, assigned through the tree
            tree._levels = None
            tree._tree()
            cell = np.concatenate(list(pool.map(_single_threaded(lambda rows: tree._encode_two_level(sample[rows])),
                                                parts)))
            by_cell = np.argsort(cell, kind="stable")
            used, first, counts = np.unique(cell[by_cell], return_index=True, return_counts=True)
            sums = np.add.reduceat(sample[by_cell].astype(np.float64), first, axis=0)
            centroids[used] = (sums / counts[:, None]).astype(np.float32)
    fine = [centroids[start[c]:start[c + 1]] for c in range(n_coarse)]
    order, previous = [], None
    for c in _tour(coarse, key_dir):
        local = _tour(fine[c], key_dir, start_at=previous)
        order.extend(start[c] + local)
        previous = fine[c][local[-1]]
    return {"centroids": centroids, "order": np.asarray(order, np.int64), "coarse": coarse, "fine_start": start}


def _apportion(cells: int, members: np.ndarray) -> np.ndarray:
    """Fine cells per coarse cell, in proportion to its sample rows (largest remainders), at least one each and
    never more than its rows: the shares add up to ``cells`` when the rows allow."""
    quota = cells * members / members.sum()
    share = np.clip(np.floor(quota).astype(np.int64), 1, np.maximum(1, members))
    for c in np.argsort(-(quota - np.floor(quota)), kind="stable"):
        if share.sum() >= cells:
            break
        if share[c] < members[c]:
            share[c] += 1
    return share


def _tour(centroids: np.ndarray, start_dir: np.ndarray, *, start_at: np.ndarray | None = None) -> np.ndarray:
    """Greedy nearest-neighbour tour over centroids, starting at the lowest along ``start_dir`` (or at the
    centroid nearest ``start_at``). Returns cell ids in tour order (int64)."""
    k = len(centroids)
    visited = np.zeros(k, bool)
    order = np.empty(k, np.int64)
    if start_at is None:
        current = int(np.argmin(centroids @ start_dir))
    else:
        current = int(np.argmin(((centroids - start_at) ** 2).sum(1)))
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
    """Fit family ``name`` on ``sample`` (rows, dim) float32, on one thread: FAISS's and BLAS's reductions
    round differently with other thread counts (a PCA moved by 4e-7 between a driver with 2 OpenMP threads
    and one with 1, which moved rows across buckets), and the same seed must give the same shards wherever
    the driver runs."""
    if name not in FAMILY_CLASSES:
        raise ValueError(f"unknown hash family {name!r}; choose one of {', '.join(FAMILIES)}")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with one_thread():
            return FAMILY_CLASSES[name].fit(sample, size=size, seed=seed)
    finally:
        faiss.omp_set_num_threads(threads)
