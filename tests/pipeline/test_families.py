import numpy as np
import pytest

from pipeline import families, quality
from pipeline.families import FAMILIES, HashFamily, fit_family, gray_rank
from storage.dataset import open_source
from tests.conftest import mixture


@pytest.fixture(scope="module")
def data():
    x, _ = mixture(20_000, dim=16, clusters=12, seed=3)
    return x


@pytest.mark.parametrize("name", FAMILIES)
def test_near_pairs_collide_more_than_far_pairs(name, data):
    fam = fit_family(name, data[:5000], size=64 if name == "kmeans" else 8, seed=1)
    rng = np.random.default_rng(0)
    base = data[:2000]
    near = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32)
    far = data[rng.permutation(len(data))[:2000]]
    b, _ = fam.encode(base)
    p_near = (fam.encode(near)[0] == b).mean()
    p_far = (fam.encode(far)[0] == b).mean()
    assert p_near > 0.85 and p_far < 0.2 and p_near > 4 * p_far


@pytest.mark.parametrize("name", FAMILIES)
def test_encoding_is_deterministic_and_round_trips(name, data, tmp_path):
    fam = fit_family(name, data[:5000], size=64 if name == "kmeans" else 8, seed=1)
    again = fit_family(name, data[:5000], size=64 if name == "kmeans" else 8, seed=1)
    fam.save(tmp_path / "f")
    loaded = HashFamily.load(tmp_path / "f")
    b, k = fam.encode(data)
    for other in (again, loaded):
        b2, k2 = other.encode(data)
        np.testing.assert_array_equal(b, b2)
        np.testing.assert_array_equal(k, k2)
    np.testing.assert_array_equal(fam.rank(b), loaded.rank(b))
    assert not list(tmp_path.glob("f/*.pkl")) and (tmp_path / "f" / "family.json").is_file()


def test_gray_rank_orders_codes_so_neighbours_differ_in_one_bit():
    codes = np.arange(256, dtype=np.int64)
    ordered = codes[np.argsort(gray_rank(codes, 8))]
    flips = [bin(int(a) ^ int(b)).count("1") for a, b in zip(ordered[:-1], ordered[1:])]
    assert set(flips) == {1}


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown hash family 'minhash'"):
        fit_family("minhash", np.zeros((10, 2), np.float32), size=2, seed=0)


def test_hnsw_quantizer_agrees_with_flat_assignment(data, monkeypatch):
    monkeypatch.setattr(families, "TWO_LEVEL_MIN_CELLS", 10**9)  # a flat family of many cells (older builds)
    fam = fit_family("kmeans", data[:8000], size=300, seed=2)
    flat = fam.encode(data)[0]
    monkeypatch.setattr(type(fam), "flat_max_cells", 100)
    hnsw = type(fam)(dim=fam.dim, size=fam.size, seed=fam.seed, arrays=fam.arrays)
    assert type(hnsw._index()).__name__ == "IndexHNSWFlat"
    assert (hnsw.encode(data)[0] == flat).mean() > 0.99


def locality_quality(family, x: np.ndarray, *, workers: int = 4) -> tuple[float, float]:
    """(group tightness of N-groups cut from the locality order, recall@10) of ``family`` on ``x``."""
    bucket, key = family.encode(x)
    order = np.lexsort((key, family.rank(bucket)))
    heads = [x[order[i::workers]][:2000] for i in range(workers)]
    return quality.group_tightness(heads, x, seed=0), quality.knn_recall(family, x, seed=0)


@pytest.mark.parametrize("source, cells", [("demo:blobs", 1024), ("demo:digits", 32)])
def test_two_level_kmeans_keeps_flat_quality(source, cells, monkeypatch):
    ds = open_source(source, features=None, label="label")
    x = np.concatenate([ds.read_arrays(c).features for c in ds.chunks(10**6)])
    monkeypatch.setattr(families, "TWO_LEVEL_MIN_CELLS", 10**9)
    flat = fit_family("kmeans", x, size=cells, seed=0)
    monkeypatch.setattr(families, "TWO_LEVEL_MIN_CELLS", 2)
    tree = fit_family("kmeans", x, size=cells, seed=0)
    assert "coarse" in tree.arrays and "coarse" not in flat.arrays
    assert len(np.unique(tree.encode(x)[0])) >= 0.9 * cells
    (flat_tight, flat_recall), (tree_tight, tree_recall) = locality_quality(flat, x), locality_quality(tree, x)
    assert tree_tight <= 1.05 * flat_tight, (tree_tight, flat_tight)
    assert tree_recall >= 0.95 * flat_recall, (tree_recall, flat_recall)


@pytest.mark.parametrize("family", ["pca", "itq", "kmeans"])
def test_a_fit_does_not_depend_on_the_drivers_thread_count(family):
    """A driver with its own LocalCluster had 2 OpenMP threads, one on an existing cluster had 1; the PCA moved
    by 4e-7 between them and rows changed buckets. The fit now runs on one thread whatever the caller's setting."""
    import faiss

    x, _ = mixture(20000, dim=32, clusters=8, seed=2)
    fits = []
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        fits.append(fit_family(family, x, size=64, seed=0).arrays)
    assert faiss.omp_get_max_threads() == 2, "the caller's thread count was not restored"
    assert fits[0].keys() == fits[1].keys()
    assert all(np.array_equal(fits[0][k], fits[1][k]) for k in fits[0])
