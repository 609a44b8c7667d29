import math

import numpy as np
import pandas as pd
from scipy import stats

from experiment.stats import aggregate, mean_ci, std_ratio_ci


def test_mean_ci_is_the_student_t_interval():
    v = [3.0, 4.0, 6.0, 7.0, 5.5]
    m, lo, hi = mean_ci(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == np.mean(v) and math.isclose(lo, ref[0]) and math.isclose(hi, ref[1])
    assert math.isnan(mean_ci([1.0])[1])


def test_ratio_to_random_is_paired_by_seed():
    runs = pd.DataFrame({"sharding": ["random"] * 3 + ["aligned"] * 3, "seed": [0, 1, 2] * 2,
                         "epochs_to_target": [2.0, 4.0, 8.0, 1.0, 4.0, 4.0], "reached": [True] * 6,
                         "dataset": "d"})
    for m in ("final_accuracy", "auc", "mean_conflict", "mean_staleness", "wall_seconds"):
        runs[m] = 1.0
    cells = aggregate(runs, keys=["dataset", "sharding"]).set_index("sharding")
    logs = np.log([0.5, 1.0, 0.5])
    low = np.exp(logs.mean() - stats.t.ppf(0.975, 2) * stats.sem(logs))
    assert math.isclose(cells.loc["aligned", "ratio_to_random"], 0.25 ** (1 / 3))
    assert math.isclose(cells.loc["aligned", "ratio_low"], low) and cells.loc["aligned", "ratio_low"] > 0
    assert cells.loc["random", "ratio_to_random"] == 1.0 and cells.loc["aligned", "reached"] == 3


def test_ratio_is_empty_when_a_run_never_reached_the_target():
    runs = pd.DataFrame({"sharding": ["random"] * 2 + ["aligned"] * 2, "seed": [0, 1] * 2,
                         "epochs_to_target": [8.0, 3.0, 2.0, 2.0], "reached": [False, True, True, True],
                         "dataset": "d"})
    for m in ("final_accuracy", "auc", "mean_conflict", "mean_staleness", "wall_seconds"):
        runs[m] = 1.0
    cells = aggregate(runs, keys=["dataset", "sharding"]).set_index("sharding")
    assert math.isnan(cells.loc["aligned", "ratio_to_random"]) and cells.loc["random", "reached"] == 1


def test_spread_ratio_is_the_ratio_of_standard_deviations_with_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    seeds = 12
    random_acc = 0.8 + rng.normal(0, 0.03, seeds)
    aligned_acc = 0.8 + rng.normal(0, 0.005, seeds)  # six times steadier
    runs = pd.DataFrame({"sharding": ["random"] * seeds + ["aligned"] * seeds, "seed": list(range(seeds)) * 2,
                         "epochs_to_target": 1.0, "reached": True, "dataset": "d",
                         "final_accuracy": np.concatenate([random_acc, aligned_acc]),
                         "commits_per_worker": [150] * seeds + [90] * seeds})
    for m in ("auc", "mean_conflict", "mean_staleness", "wall_seconds"):
        runs[m] = 1.0
    cells = aggregate(runs, keys=["dataset", "sharding"]).set_index("sharding")
    a = cells.loc["aligned"]
    assert math.isclose(a.final_accuracy_std_ratio, aligned_acc.std(ddof=1) / random_acc.std(ddof=1))
    assert a.final_accuracy_std_low < a.final_accuracy_std_ratio < a.final_accuracy_std_high < 1
    assert cells.loc["random", "final_accuracy_std_ratio"] == 1.0
    assert a.min_commits_per_worker == 90 and "last_epoch_accuracy_std" not in cells
    # five seeds: some resamples repeat one seed (no spread), the interval still exists
    ratio, low, high = std_ratio_ci(aligned_acc[:5], random_acc[:5])
    assert low <= ratio <= high and math.isfinite(low)


def test_pooled_spread_ratio_is_the_geometric_mean_of_cell_ratios_with_a_stratified_interval():
    from experiment.stats import pooled_std_ratio_ci

    rng = np.random.default_rng(1)
    steady = [(rng.normal(0, 0.01, 10), rng.normal(0, 0.03, 10)) for _ in range(4)]  # a third of the spread
    ratio, low, high, cells = pooled_std_ratio_ci(steady + [(np.ones(2), np.zeros(2))])  # the last: too few seeds
    expected = math.exp(np.mean([math.log(a.std(ddof=1) / b.std(ddof=1)) for a, b in steady]))
    assert cells == 4 and math.isclose(ratio, expected)
    assert low < ratio < high < 1
    alike = [(rng.normal(0, 0.02, 10), rng.normal(0, 0.02, 10)) for _ in range(6)]  # the same spread
    _, lo, hi, _ = pooled_std_ratio_ci(alike)
    assert lo < 1 < hi
