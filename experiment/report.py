"""Experiment outputs: results.parquet, curves.parquet, cells.parquet, results.md and PNG plots."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiment.stats import mean_ci, pooled_std_ratio_ci  # noqa: E402

MIN_COMMITS_PER_WORKER = 100  # below this a cell barely trains asynchronously (issue #16): it is flagged
MIN_SEEDS_FOR_SPREAD = 10  # the headline's spread ratio pools only cells with this many seeds (issue #16)


def _fmt(m, lo, hi, digits=2) -> str:
    if m is None or not math.isfinite(m):
        return "–"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _epochs(c) -> str:
    """Epochs to target; '≥ E' when some seed never reached it (censored at its last epoch)."""
    if c.reached < c.seeds:
        return f"≥ {c.epochs_to_target:.2f}"
    return _fmt(c.epochs_to_target, c.epochs_to_target_low, c.epochs_to_target_high)


def _commits(c) -> str:
    """The cell's fewest commits per worker, flagged when under MIN_COMMITS_PER_WORKER (barely asynchronous)."""
    n = c.get("min_commits_per_worker", math.nan)
    if not math.isfinite(n):
        return "–"
    return f"{n:.0f}" + (f" ⚑ under {MIN_COMMITS_PER_WORKER}" if n < MIN_COMMITS_PER_WORKER else "")


def _spread(c, measure: str = "final_accuracy") -> str:
    """A cell's spread ratio, marked when it has fewer seeds than a variance claim needs (MIN_SEEDS_FOR_SPREAD)."""
    text = _fmt(*(c.get(f"{measure}_std_{k}", math.nan) for k in ("ratio", "low", "high")))
    few = text != "–" and c.get("seeds", MIN_SEEDS_FOR_SPREAD) < MIN_SEEDS_FOR_SPREAD
    return text + (f" ({c.seeds} seeds: indicative)" if few else "")


CELL = ["mode", "dataset", "model", "optimizer", "workers", "schedule", "lr_scale", "epochs"]


def markdown_table(cells: pd.DataFrame) -> str:
    """One table row per cell; epochs to target with its 95 % CI and how many seeds reached it."""
    head = ("| mode | dataset | model | optimizer | workers | schedule | lr× | epochs | sharding | "
            "epochs to target [95% CI] | reached | ratio to random [95% CI] | final accuracy [95% CI] | "
            "spread of final accuracy: ratio to random [bootstrap 95% CI] | spread of last-epoch accuracy: ratio "
            "to random | commits per worker (min) | step tightness | mean conflict (cos) | mean staleness |")
    lines = [head, "|" + "---|" * 19]
    for _, c in cells.iterrows():
        lines.append(
            f"| {c['mode']} | {c.dataset} | {c.model} | {c.optimizer} | {c.workers} | {c.schedule} | "
            f"{c.lr_scale:g} | {c.epochs} | {c.sharding} | {_epochs(c)} | "
            f"{c.reached}/{c.seeds} | {_fmt(c.get('ratio_to_random'), c.get('ratio_low'), c.get('ratio_high'))} | "
            f"{_fmt(c.final_accuracy, c.final_accuracy_low, c.final_accuracy_high, 3)} | "
            f"{_spread(c)} | {_spread(c, 'last_epoch_accuracy')} | {_commits(c)} | "
            f"{_fmt(c.get('step_tightness', math.nan), math.nan, math.nan)} | "
            f"{_fmt(c.mean_conflict, math.nan, math.nan, 3)} | {_fmt(c.mean_staleness, math.nan, math.nan, 1)} |")
    return "\n".join(lines)


def asynchronous(cells: pd.DataFrame, mode: str = "sim") -> pd.DataFrame:
    return cells[(cells["mode"] == mode) & ~cells.optimizer.isin(["single", "averaging"])]


def summary_table(cells: pd.DataFrame, *, mode: str = "sim") -> str:
    """Compact view: per cell group the epochs `random` needs and, for every other sharding, its ratio to
    random (geometric mean [95 % CI]) or how many seeds reached the target, then its spread ratio."""
    sub = asynchronous(cells, mode)
    others = [s for s in sorted(sub.sharding.unique()) if s != "random"]
    group = [k for k in CELL if k != "mode"]
    lines = ["| " + " | ".join(group) + " | random: epochs to target | " +
             " | ".join(f"{s}: epochs ratio; spread ratio" for s in others) + " |",
             "|" + "---|" * (len(group) + 1 + len(others))]
    for key, g in sub.groupby(group, sort=True):
        by = g.set_index("sharding")
        cols = []
        for s in others:
            if s not in by.index:
                cols.append("")
                continue
            c = by.loc[s]
            ratio = (_fmt(c.ratio_to_random, c.ratio_low, c.ratio_high) if math.isfinite(c.ratio_to_random)
                     else f"reached {c.reached}/{c.seeds}")
            cols.append(f"{ratio}; {_spread(c)}")
        r = by.loc["random"] if "random" in by.index else None
        shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in key]
        lines.append("| " + " | ".join(shown) + " | " +
                     (f"{_epochs(r)} ({r.reached}/{r.seeds})" if r is not None else "–") + " | " +
                     " | ".join(cols) + " |")
    return "\n".join(lines)


def headline(runs: pd.DataFrame, cells: pd.DataFrame, *, mode: str = "sim") -> pd.DataFrame:
    """Per dataset and order, pooled over its asynchronous cells: the geometric mean of the seed-paired
    epochs-to-target ratios to random over every pair where both runs reached the target (t-interval of the
    log ratios; pairs from different cells are treated as independent), and the geometric mean of the cells'
    spread ratios (final accuracy's standard deviation over seeds, to random's) with a stratified bootstrap
    interval (:func:`pooled_std_ratio_ci`) over the cells with at least MIN_SEEDS_FOR_SPREAD seeds, and how many
    cells' own intervals lie wholly below or above 1."""
    sub = asynchronous(cells, mode)
    async_runs = runs[(runs["mode"] == mode) & ~runs.optimizer.isin(["single", "averaging"])]
    group = [k for k in CELL] + ["seed"]
    ref = async_runs[async_runs.sharding == "random"].set_index(group)
    rows = []
    for (dataset, order), g in sub[sub.sharding != "random"].groupby(["dataset", "sharding"], sort=True):
        pairs = async_runs[(async_runs.dataset == dataset) & (async_runs.sharding == order)]
        paired = ref.reindex(pd.MultiIndex.from_frame(pairs[group]))
        both = pairs.reached.to_numpy() & paired.reached.fillna(False).to_numpy().astype(bool)
        logs = np.log(pairs.epochs_to_target.to_numpy()[both] / paired.epochs_to_target.to_numpy()[both])
        m, lo, hi = np.exp(mean_ci(logs)) if len(logs) else (math.nan,) * 3
        by_cell = pairs.assign(reference=paired.final_accuracy.to_numpy()).groupby(CELL)
        spread, spread_lo, spread_hi, _ = pooled_std_ratio_ci(
            [(c.final_accuracy.to_numpy(), c.reference.to_numpy()) for _, c in by_cell
             if c.seed.nunique() >= MIN_SEEDS_FOR_SPREAD])
        spread_cells = int((g.seeds >= MIN_SEEDS_FOR_SPREAD).sum())
        rows.append(dict(dataset=dataset, order=order, cells=len(g), spread_cells=spread_cells,
                         pairs_reached=int(both.sum()),
                         pairs=len(pairs), epochs_ratio=m, epochs_ratio_low=lo, epochs_ratio_high=hi,
                         spread_ratio=spread, spread_ratio_low=spread_lo, spread_ratio_high=spread_hi,
                         spread_cells_below_1=int((g.final_accuracy_std_high < 1).sum()),
                         spread_cells_above_1=int((g.final_accuracy_std_low > 1).sum()),
                         step_tightness=float(g.step_tightness.mean()) if "step_tightness" in g else math.nan))
    return pd.DataFrame(rows)


def headline_table(head: pd.DataFrame) -> str:
    lines = ["| dataset | order | cells | pairs where both reached the target | epochs to target: ratio to random "
             f"[95% CI] | spread of final accuracy: ratio to random, geometric mean over the cells of ≥ "
             f"{MIN_SEEDS_FOR_SPREAD} seeds [bootstrap 95% CI] (cells) | cells with spread ratio CI below 1 / "
             "above 1 | step tightness |", "|" + "---|" * 8]
    for _, h in head.iterrows():
        lines.append(f"| {h.dataset} | {h.order} | {h.cells} | {h.pairs_reached}/{h.pairs} | "
                     f"{_fmt(h.epochs_ratio, h.epochs_ratio_low, h.epochs_ratio_high)} | "
                     f"{_fmt(h.spread_ratio, h.spread_ratio_low, h.spread_ratio_high)} ({h.spread_cells}) | "
                     f"{h.spread_cells_below_1} / "
                     f"{h.spread_cells_above_1} | {_fmt(h.step_tightness, math.nan, math.nan)} |")
    return "\n".join(lines)


def forest(cells: pd.DataFrame, path: Path, *, dataset: str) -> Path | None:
    """Forest plot: per asynchronous cell, its epochs-to-target ratio and its spread ratio to random with their
    95 % intervals, on a log axis (1 = no difference)."""
    sub = asynchronous(cells)
    sub = sub[(sub.dataset == dataset) & (sub.sharding != "random")]
    if sub.empty:
        return None
    sub = sub.sort_values(["sharding", "optimizer", "workers", "schedule", "lr_scale", "model"])
    labels = [f"{c.sharding} · {c.optimizer} · {c.workers}w · {c.schedule} · lr×{c.lr_scale:g} · {c.model}"
              for c in sub.itertuples()]
    y = np.arange(len(sub))[::-1]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(11, max(3.0, 0.22 * len(sub) + 1.2)))
    for ax, (col, lo, hi, title) in zip(axes, [
            ("ratio_to_random", "ratio_low", "ratio_high", "epochs to target / random"),
            ("final_accuracy_std_ratio", "final_accuracy_std_low", "final_accuracy_std_high",
             "spread of final accuracy / random")]):
        m = sub[col].to_numpy(float)
        with np.errstate(invalid="ignore"):  # an unbounded interval (inf) gets no bar rather than an overflow
            err = np.array([m - sub[lo].to_numpy(float), sub[hi].to_numpy(float) - m])
        ok = np.isfinite(m)
        ax.errorbar(m[ok], y[ok], xerr=np.nan_to_num(err[:, ok], nan=0.0, posinf=0.0, neginf=0.0), fmt="o", ms=3,
                    capsize=2, lw=1)
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, labels, fontsize=6)
    fig.suptitle(f"{dataset}: ratios to random shards, 95 % intervals (missing: censored or no spread)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def accuracy_bands(curves: pd.DataFrame, path: Path, *, dataset: str, model: str, schedule: str, lr_scale: float,
                   epochs: int) -> Path | None:
    """Validation accuracy by epoch, one line per order (sharding) with a 95 % band over seeds; a panel per
    (workers, optimizer)."""
    sub = curves[(curves.dataset == dataset) & (curves.model == model) & (curves.schedule == schedule)
                 & (curves.lr_scale == lr_scale) & (curves.epochs == epochs) & (curves["mode"] == "sim")
                 & ~curves.optimizer.isin(["single", "averaging"])]
    if sub.empty:
        return None
    workers, optimizers = sorted(sub.workers.unique()), sorted(sub.optimizer.unique())
    fig, axes = plt.subplots(len(workers), len(optimizers), squeeze=False, sharey=True,
                             figsize=(max(6.0, 3.2 * len(optimizers)), max(3.5, 2.6 * len(workers))))
    grid = np.linspace(0, sub.epoch.max(), 40)
    for (i, w), (j, opt) in ((a, b) for a in enumerate(workers) for b in enumerate(optimizers)):
        ax = axes[i][j]
        for sharding, g in sub[(sub.workers == w) & (sub.optimizer == opt)].groupby("sharding"):
            per_seed = np.array([np.interp(grid, s.epoch, s.accuracy, left=np.nan)
                                 for _, s in g.groupby("seed")])
            stats = np.array([mean_ci(col) for col in per_seed.T])
            ax.plot(grid, stats[:, 0], label=sharding, lw=1.2)
            ax.fill_between(grid, stats[:, 1], stats[:, 2], alpha=0.2)
        ax.set_title(f"{opt}, {w} workers", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("epoch")
    fig.supylabel("validation accuracy")
    fig.suptitle(f"{dataset}, {model}, {schedule}, lr × {lr_scale:g}: mean and 95 % interval over seeds",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(out: Path, runs: pd.DataFrame, curves: pd.DataFrame, cells: pd.DataFrame, *, header: str
                 ) -> list[Path]:
    """results.parquet (a row per run), curves.parquet, cells.parquet, headline.parquet, results.md and the
    plots: accuracy with seed bands per order, and a forest plot of the ratios per dataset."""
    runs.to_parquet(out / "results.parquet", index=False)
    curves.to_parquet(out / "curves.parquet", index=False)
    cells.to_parquet(out / "cells.parquet", index=False)
    head = headline(runs, cells)
    head.to_parquet(out / "headline.parquet", index=False)
    pngs = []
    panels = asynchronous(cells)[["dataset", "model", "schedule", "lr_scale", "epochs"]].drop_duplicates()
    for p in panels.sort_values(list(panels.columns)).itertuples(index=False):
        name = f"accuracy-{p.dataset}-{p.model}-{p.schedule}-lr{p.lr_scale:g}-e{p.epochs}.png"
        pngs.append(accuracy_bands(curves, out / name, **p._asdict()))
    for d in sorted(runs.dataset.unique()):
        pngs.append(forest(cells, out / f"forest-{d}.png", dataset=d))
    pngs = [p for p in pngs if p is not None]
    rpc = ""
    if (runs["mode"] == "rpc").any():
        rpc = ("\n\n## Real RPC check\n\nThe same measures over real torch.distributed.rpc processes, beside the "
               "simulator's cell of the same settings (in the summary below).\n\n" +
               headline_table(headline(runs, cells, mode="rpc")) + "\n\n" + summary_table(cells, mode="rpc"))
    (out / "results.md").write_text(
        header + "\n\n## Headline\n\n" + headline_table(head) + rpc + "\n\n## Summary\n\n" + summary_table(cells) +
        "\n\n## All cells\n\n" + markdown_table(cells) + "\n\n" +
        "\n".join(f"![{p.name}]({p.name})" for p in pngs) + "\n")
    return pngs
