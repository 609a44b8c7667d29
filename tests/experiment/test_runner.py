"""A small grid through the experiment runner on a real LocalCluster: online coordination and the diverse order
sit beside pre-split shardings, and every run reports what the v2 analysis needs."""

import math

import pandas as pd
from distributed import Client

from experiment.grid import Dataset, ExperimentConfig
from experiment.report import write_report
from experiment.runner import run_experiment


def test_online_and_diverse_cells_run_beside_random(tmp_path, dask_address):
    cfg = ExperimentConfig(datasets=[Dataset(name="digits", source="demo:digits")],
                           shardings=["online-kmeans", "diverse-kmeans", "random"], optimizers=["agn"],
                           references=["single"], workers=[4], lr_scales=[1.0], seeds=[0, 1, 2], epochs=3,
                           schedules=["heterogeneous"])
    out = tmp_path / "exp"
    with Client(dask_address) as client:
        assert run_experiment(cfg, out, client=client, part=(1, 2)) is None, "part 2's runs are still missing"
        half = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
        assert len(half) == (3 * 3 + 3 + 1) // 2  # 3 shardings x 3 seeds of agn and 3 of single, every other run
        runs, curves, cells = run_experiment(cfg, out, client=client, part=(2, 2))
        records = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
        assert len(records) == 12 and all(records[k] == t for k, t in half.items()), "part 2 redid part 1"
        # a rerun finds every record: it trains nothing and aggregates the same
        again, _, again_cells = run_experiment(cfg, out, client=client)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == records
    pd.testing.assert_frame_equal(again, runs)
    pd.testing.assert_frame_equal(again_cells, cells)
    columns = {"dataset", "model", "order", "optimizer", "workers", "schedule", "lr_scale", "seed",
               "commits_per_worker", "epochs_to_target", "final_accuracy", "best_accuracy", "mean_staleness",
               "mean_conflict", "step_tightness"}
    assert columns <= set(runs.columns), columns - set(runs.columns)
    agn = runs[runs.optimizer == "agn"].set_index("sharding")
    assert set(agn.index) == {"online-kmeans", "diverse-kmeans", "random"}
    assert (agn.commits_per_worker >= 3).all() and agn.last_epoch_accuracy.between(0, 1).all()
    tight = agn.groupby(level=0).step_tightness.mean()
    assert tight["online-kmeans"] < tight["random"] < tight["diverse-kmeans"], tight
    cell = cells[(cells.optimizer == "agn") & (cells.sharding == "online-kmeans")].iloc[0]
    assert cell.min_commits_per_worker >= 3 and "final_accuracy_std_ratio" in cells
    assert math.isfinite(cell.final_accuracy_std) and cell.seeds == 3
    pngs = write_report(out, runs, curves, cells, header="# small grid")
    assert {p.name for p in pngs} == {"accuracy-digits-mlp-heterogeneous-lr1-e3.png", "forest-digits.png"}
    table = (out / "results.md").read_text()
    assert "| digits | online-kmeans | 1 | " in table  # the headline: one cell per order
    # 3 epochs of dist-keras's λ = 12: a few commits per worker, which the report flags
    assert table.count("⚑ under 100") == 3 and "spread of final accuracy" in table
