"""A small grid through the experiment runner on a real LocalCluster: online coordination and the diverse order
sit beside pre-split shardings, and every run reports what the v2 analysis needs."""

import math

from distributed import Client

from experiment.grid import Dataset, ExperimentConfig
from experiment.report import write_report
from experiment.runner import run_experiment


def test_online_and_diverse_cells_run_beside_random(tmp_path, dask_address):
    cfg = ExperimentConfig(datasets=[Dataset(name="digits", source="demo:digits")],
                           shardings=["online-kmeans", "diverse-kmeans", "random"], optimizers=["agn"],
                           references=["single"], workers=[4], lr_scales=[1.0], seeds=[0, 1, 2], epochs=3,
                           schedule="heterogeneous")
    with Client(dask_address) as client:
        runs, curves, cells = run_experiment(cfg, tmp_path / "exp", client=client)
    agn = runs[runs.optimizer == "agn"].set_index("sharding")
    assert set(agn.index) == {"online-kmeans", "diverse-kmeans", "random"}
    assert (agn.commits_per_worker >= 3).all() and agn.last_epoch_accuracy.between(0, 1).all()
    tight = agn.groupby(level=0).step_tightness.mean()
    assert tight["online-kmeans"] < tight["random"] < tight["diverse-kmeans"], tight
    cell = cells[(cells.optimizer == "agn") & (cells.sharding == "online-kmeans")].iloc[0]
    assert cell.min_commits_per_worker >= 3 and "final_accuracy_std_ratio" in cells
    assert math.isfinite(cell.final_accuracy_std) and cell.seeds == 3
    write_report(tmp_path / "exp", runs, curves, cells, header="# small grid")
    table = (tmp_path / "exp" / "results.md").read_text()
    # 3 epochs of dist-keras's λ = 12: a few commits per worker, which the report flags
    assert table.count("⚑ under 100") == 3 and "spread of final accuracy" in table
