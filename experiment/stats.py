"""Aggregation over seeds: mean and 95 % Student-t interval of per-seed values, and seed-paired ratios.

A run that never reached the target counts as censored at the last epoch it trained (a lower bound), and
the cell reports how many of its seeds reached the target; it is never dropped as missing.
"""

import math

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the per-seed values; the interval is Student-t with n-1 degrees of freedom
    (nan for fewer than two values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def aggregate(runs: pd.DataFrame, *, keys: list[str], reference: str = "random",
              measures=("epochs_to_target", "final_accuracy", "auc", "mean_conflict", "mean_staleness",
                        "wall_seconds")) -> pd.DataFrame:
    """One row per cell (``keys`` without ``seed``): per measure its mean/low/high over seeds, the number of
    seeds that reached the target, and the seed-paired ratio of epochs_to_target to the ``reference``
    sharding of the same cell: the geometric mean of the per-seed ratios with its interval (the t-interval of
    the log ratios, exponentiated, so it stays positive). The ratio is left empty (nan) unless both runs of
    every pair reached the target: a ratio of censored values would mean nothing."""
    rows = []
    ref = runs[runs.sharding == reference].set_index([k for k in keys if k != "sharding"] + ["seed"])
    for cell, group in runs.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        row["seeds"] = int(group.seed.nunique())
        row["reached"] = int(group.reached.sum())
        for m in measures:
            row[m], row[m + "_low"], row[m + "_high"] = mean_ci(group[m])
        if reference in set(runs.sharding):
            idx = [tuple(row[k] for k in keys if k != "sharding") + (s,) for s in group.seed]
            paired = ref.reindex(idx)
            ratio = group.epochs_to_target.to_numpy() / paired.epochs_to_target.to_numpy()
            if not (group.reached.all() and paired.reached.fillna(False).astype(bool).all()):
                ratio = ratio * float("nan")
            row["ratio_to_random"], row["ratio_low"], row["ratio_high"] = np.exp(mean_ci(np.log(ratio)))
        rows.append(row)
    return pd.DataFrame(rows)
