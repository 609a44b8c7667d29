
from pipeline.families import fit_family
from pipeline.quality import knn_recall
from tests.conftest import mixture


def test_knn_recall_on_a_subsampled_base_separates_good_and_poor_families():
    x, _ = mixture(30_000, dim=16, clusters=12, seed=3)
    cells = fit_family("kmeans", x[:5000], size=12, seed=1)  # one cell per cluster keeps neighbours together
    fine = fit_family("lsh", x[:5000], size=16, seed=1)  # 2^16 random buckets split them apart
    good = knn_recall(cells, x, base=5000, seed=0)  # 30,000 rows: the neighbour base is subsampled
    poor = knn_recall(fine, x, base=5000, seed=0)
    assert good > 0.9 and poor < 0.5
    assert knn_recall(cells, x, base=5000, seed=0) == good  # seeded: the same base and queries
    assert knn_recall(cells, x[:5000], base=5000, seed=0) > 0.9  # base as large as the sample: no subsampling
