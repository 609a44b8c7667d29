"""``--quick`` end to end under a real Prefect server: table shape, intervals from per-seed values."""

import math

import numpy as np
import pandas as pd

from experiment.stats import mean_ci
from tests.s3_fixtures import s3fs


def test_quick_experiment_table_and_intervals(prefect_server, bucket, tmp_path, monkeypatch):
    """The quick grid, its results written to the moto S3 server (uploaded when the grid has run); a rerun
    into the same URL finds every run's record there and trains nothing."""
    from prefect.artifacts import Artifact

    from flows.experiment import main

    monkeypatch.chdir(tmp_path)
    out = f"{bucket}/exp"
    assert main(["--quick", "--out", out]) == 0
    assert not list(tmp_path.iterdir()), "the experiment wrote to the working directory"
    runs = pd.read_parquet(f"{out}/results.parquet")
    cells = pd.read_parquet(f"{out}/cells.parquet")
    assert len(runs) == 3 * 3 + 3  # 3 shardings x 3 seeds of agn, and 3 seeds of single
    assert sorted(cells.sharding[cells.optimizer == "agn"]) == ["aligned-kmeans", "contiguous-sorted", "random"]
    assert (cells.seeds == 3).all()
    for _, cell in cells.iterrows():
        per_seed = runs[(runs.optimizer == cell.optimizer) & (runs.sharding == cell.sharding)]
        for measure in ("epochs_to_target", "final_accuracy"):
            m, lo, hi = mean_ci(per_seed[measure])
            assert math.isclose(cell[measure], m) and math.isclose(cell[measure + "_low"], lo, abs_tol=1e-12)
            assert cell[measure + "_low"] <= cell[measure] <= cell[measure + "_high"]
        assert cell.reached == per_seed.reached.sum()
        random = runs[(runs.optimizer == cell.optimizer) & (runs.sharding == "random")].set_index("seed")
        ratios = per_seed.set_index("seed").epochs_to_target / random.epochs_to_target
        if per_seed.reached.all() and random.reached.all():
            assert math.isclose(cell.ratio_to_random, math.exp(np.log(ratios).mean()))
        else:
            assert math.isnan(cell.ratio_to_random)
    md = s3fs().cat(f"{out}/results.md").decode()
    assert md.count("| sim | digits |") == len(cells) and f"--out {out}" in md
    assert s3fs().glob(f"{out}/*.png")
    assert Artifact.get("experiment-results") is not None
    records = s3fs().cat(s3fs().glob(f"{out}/runs/*.json"))
    assert len(records) == len(runs)
    assert main(["--quick", "--out", out]) == 0
    # a run trained again would differ at least in its wall_seconds
    assert s3fs().cat(s3fs().glob(f"{out}/runs/*.json")) == records
    pd.testing.assert_frame_equal(pd.read_parquet(f"{out}/results.parquet"), runs)
