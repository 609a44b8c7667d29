"""Aggregation over seeds: mean and 95 % Student-t interval of per-seed values, seed-paired ratios of epochs to
target, and ratios of run-to-run spread (standard deviation over seeds) with bootstrap intervals.

A run that never reached the target counts as censored at the last epoch it trained (a lower bound), and
the cell reports how many of its seeds reached the target; it is never dropped as missing.
"""

import math
import warnings

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


BOOTSTRAP_RESAMPLES = 2000


def std_ratio_ci(values, reference, *, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high): the standard deviation over seeds of ``values`` divided by that of ``reference``
    (the same seeds, in the same order), with a paired percentile bootstrap interval (seeds resampled
    together: scipy.stats.bootstrap). nan when fewer than 3 seeds or the reference does not vary."""
    a, b = np.asarray(values, float), np.asarray(reference, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or b.std(ddof=1) == 0:
        return math.nan, math.nan, math.nan
    if np.array_equal(a, b):  # the reference against itself: its bootstrap distribution is one point
        return 1.0, 1.0, 1.0

    def ratio(x, y, axis=-1):
        # a resample that repeats one seed has no spread: x/0 counts as unbounded and 0/0 as no difference, so
        # that a few such resamples (likely with 5 seeds) do not turn the whole interval into nan
        sx, sy = np.std(x, ddof=1, axis=axis), np.std(y, ddof=1, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sy > 0, sx / np.where(sy > 0, sy, 1.0), np.where(sx > 0, np.inf, 1.0))

    with warnings.catch_warnings():  # few seeds make many resamples alike; the percentile interval still holds
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's standard error of resamples that include inf
        res = stats.bootstrap((a, b), ratio, paired=True, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
                              confidence_level=confidence, method="percentile", random_state=seed)
    return float(ratio(a, b)), float(res.confidence_interval.low), float(res.confidence_interval.high)


def pooled_std_ratio_ci(pairs: list[tuple[np.ndarray, np.ndarray]], *, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(ratio, low, high, cells): over several cells, each a pair (values, reference) of per-seed values in
    the same seed order, the geometric mean of the cells' ratios of standard deviations, with a stratified
    paired percentile bootstrap interval (seeds resampled within each cell, each cell's pair together). Cells
    with fewer than 3 seeds or a reference that does not vary are left out; ``cells`` counts those kept."""
    rng = np.random.default_rng(seed)
    kept, logs = 0, np.zeros(BOOTSTRAP_RESAMPLES)
    point = 0.0
    for a, b in pairs:
        a, b = np.asarray(a, float), np.asarray(b, float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        if len(a) < 3 or b.std(ddof=1) == 0:
            continue
        kept += 1
        point += math.log(max(a.std(ddof=1), 1e-300) / b.std(ddof=1))
        idx = rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
        sa, sb = a[idx].std(axis=1, ddof=1), b[idx].std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs += np.log(np.maximum(sa, 1e-300) / sb)  # a resample with no spread in b: inf, dropped below
    if kept == 0:
        return math.nan, math.nan, math.nan, 0
    logs = logs[np.isfinite(logs)] / kept
    alpha = (1 - confidence) / 2
    return (math.exp(point / kept), float(np.exp(np.quantile(logs, alpha))),
            float(np.exp(np.quantile(logs, 1 - alpha))), kept)


def aggregate(runs: pd.DataFrame, *, keys: list[str], reference: str = "random",
              measures=("epochs_to_target", "final_accuracy", "best_accuracy", "auc", "mean_conflict",
                        "mean_staleness", "step_tightness", "commits_per_worker", "wall_seconds"),
              spread=("final_accuracy", "last_epoch_accuracy")) -> pd.DataFrame:
    """One row per cell (``keys`` without ``seed``): per measure its mean/low/high over seeds, the number of
    seeds that reached the target, and the seed-paired ratio of epochs_to_target to the ``reference``
    sharding of the same cell: the geometric mean of the per-seed ratios with its interval (the t-interval of
    the log ratios, exponentiated, so it stays positive). The ratio is left empty (nan) unless both runs of
    every pair reached the target: a ratio of censored values would mean nothing. For each ``spread`` measure
    present: its standard deviation over seeds (``<m>_std``) and the ratio to the reference's
    (``<m>_std_ratio`` with ``_low``/``_high``, :func:`std_ratio_ci`). With ``commits_per_worker`` present,
    ``min_commits_per_worker`` is the cell's smallest."""
    rows = []
    ref = runs[runs.sharding == reference].set_index([k for k in keys if k != "sharding"] + ["seed"])
    for cell, group in runs.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        row["seeds"] = int(group.seed.nunique())
        row["reached"] = int(group.reached.sum())
        for m in (m for m in measures if m in group):
            row[m], row[m + "_low"], row[m + "_high"] = mean_ci(group[m].astype(float))
        if reference in set(runs.sharding):
            idx = [tuple(row[k] for k in keys if k != "sharding") + (s,) for s in group.seed]
            paired = ref.reindex(idx)
            ratio = group.epochs_to_target.to_numpy() / paired.epochs_to_target.to_numpy()
            if not (group.reached.all() and paired.reached.fillna(False).astype(bool).all()):
                ratio = ratio * float("nan")
            row["ratio_to_random"], row["ratio_low"], row["ratio_high"] = np.exp(mean_ci(np.log(ratio)))
            for m in (m for m in spread if m in group):
                row[m + "_std"] = float(group[m].std(ddof=1)) if len(group) > 1 else math.nan
                row[m + "_std_ratio"], row[m + "_std_low"], row[m + "_std_high"] = std_ratio_ci(
                    group[m].to_numpy(), paired[m].to_numpy())
        if "commits_per_worker" in group:
            row["min_commits_per_worker"] = float(group.commits_per_worker.min())
        rows.append(row)
    return pd.DataFrame(rows)
