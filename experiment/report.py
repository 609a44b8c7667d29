"""Experiment outputs: results.parquet, curves.parquet, cells.parquet, results.md and PNG plots."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiment.stats import mean_ci  # noqa: E402

MIN_COMMITS_PER_WORKER = 100  # below this a cell barely trains asynchronously (issue #16): it is flagged


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


def _spread(c) -> str:
    return _fmt(*(c.get(f"final_accuracy_std_{k}", math.nan) for k in ("ratio", "low", "high")))


def markdown_table(cells: pd.DataFrame) -> str:
    """One table row per cell; epochs to target with its 95 % CI and how many seeds reached it."""
    head = ("| mode | dataset | optimizer | workers | lr× | sharding | epochs to target [95% CI] | reached | "
            "ratio to random [95% CI] | final accuracy [95% CI] | spread of final accuracy: ratio to random "
            "[bootstrap 95% CI] | commits per worker (min) | mean conflict (cos) | mean staleness |")
    lines = [head, "|" + "---|" * 14]
    for _, c in cells.iterrows():
        lines.append(
            f"| {c['mode']} | {c.dataset} | {c.optimizer} | {c.workers} | {c.lr_scale:g} | {c.sharding} | "
            f"{_epochs(c)} | "
            f"{c.reached}/{c.seeds} | {_fmt(c.get('ratio_to_random'), c.get('ratio_low'), c.get('ratio_high'))} | "
            f"{_fmt(c.final_accuracy, c.final_accuracy_low, c.final_accuracy_high, 3)} | "
            f"{_spread(c)} | "
            f"{_commits(c)} | "
            f"{_fmt(c.mean_conflict, math.nan, math.nan, 3)} | {_fmt(c.mean_staleness, math.nan, math.nan, 1)} |")
    return "\n".join(lines)


def summary_table(cells: pd.DataFrame, *, mode: str = "sim") -> str:
    """Compact view: per (dataset, optimizer, workers, lr) the epochs `random` needs and, for every other
    sharding, its ratio to random (geometric mean [95 % CI]) or, when some seed never reached the target,
    how many did."""
    sub = cells[(cells["mode"] == mode) & ~cells.optimizer.isin(["single", "averaging"])]
    others = [s for s in sorted(sub.sharding.unique()) if s != "random"]
    lines = ["| dataset | optimizer | workers | lr× | random: epochs to target | " +
             " | ".join(f"{s}: ratio" for s in others) + " |", "|" + "---|" * (5 + len(others))]
    for key, g in sub.groupby(["dataset", "optimizer", "workers", "lr_scale"], sort=True):
        by = g.set_index("sharding")
        cols = []
        for s in others:
            c = by.loc[s]
            if math.isfinite(c.ratio_to_random):
                cols.append(_fmt(c.ratio_to_random, c.ratio_low, c.ratio_high))
            else:
                cols.append(f"reached {c.reached}/{c.seeds}")
        r = by.loc["random"]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:g} | {_epochs(r)} ({r.reached}/{r.seeds}) | " +
                     " | ".join(cols) + " |")
    return "\n".join(lines)


def accuracy_bands(curves: pd.DataFrame, path: Path, *, dataset: str, lr_scale: float) -> Path | None:
    """Validation accuracy by epoch, one line per sharding with a 95 % band over seeds; a panel per
    (workers, optimizer)."""
    sub = curves[(curves.dataset == dataset) & (curves.lr_scale == lr_scale) & (curves["mode"] == "sim")
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
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("epoch")
    fig.supylabel("validation accuracy")
    fig.suptitle(f"{dataset}, lr × {lr_scale:g}: mean and 95 % interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def epochs_bars(cells: pd.DataFrame, path: Path, *, dataset: str) -> Path | None:
    sub = cells[(cells.dataset == dataset) & (cells["mode"] == "sim") & ~cells.optimizer.isin(["single"])]
    if sub.empty:
        return None
    panels = sorted({(o, lr) for o, lr in zip(sub.optimizer, sub.lr_scale)})
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.0, 3.4 * len(panels)), 3.6), squeeze=False,
                             sharey=True)
    for ax, (opt, lr) in zip(axes[0], panels):
        p = sub[(sub.optimizer == opt) & (sub.lr_scale == lr)]
        shardings, workers = sorted(p.sharding.unique()), sorted(p.workers.unique())
        width = 0.8 / len(workers)
        for k, w in enumerate(workers):
            q = p[p.workers == w].set_index("sharding").reindex(shardings)
            err = np.array([q.epochs_to_target - q.epochs_to_target_low, q.epochs_to_target_high - q.epochs_to_target])
            bars = ax.bar(np.arange(len(shardings)) + k * width, q.epochs_to_target, width,
                          yerr=np.nan_to_num(err), label=f"{w} workers", capsize=2)
            for bar, reached, seeds in zip(bars, q.reached, q.seeds):
                if reached < seeds:  # censored: some seed never reached the target
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
                ax.annotate(f"{reached}/{seeds}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=6)
        ax.set_xticks(np.arange(len(shardings)) + 0.4 - width / 2, shardings, rotation=60, fontsize=7)
        ax.set_title(f"{opt}, lr × {lr:g}", fontsize=9)
    axes[0][0].set_ylabel("epochs to target (hatched: censored)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: epochs to target, mean and 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(out: Path, runs: pd.DataFrame, curves: pd.DataFrame, cells: pd.DataFrame, *, header: str
                 ) -> list[Path]:
    runs.to_parquet(out / "results.parquet", index=False)
    curves.to_parquet(out / "curves.parquet", index=False)
    cells.to_parquet(out / "cells.parquet", index=False)
    pngs = []
    for d in sorted(runs.dataset.unique()):
        for lr in sorted(runs.lr_scale.unique()):
            pngs.append(accuracy_bands(curves, out / f"accuracy-{d}-lr{lr:g}.png", dataset=d, lr_scale=lr))
        pngs.append(epochs_bars(cells, out / f"epochs-to-target-{d}.png", dataset=d))
    pngs = [p for p in pngs if p is not None]
    (out / "results.md").write_text(header + "\n\n## Summary\n\n" + summary_table(cells) + "\n\n## All cells\n\n" +
                                    markdown_table(cells) + "\n\n" +
                                    "\n".join(f"![{p.name}]({p.name})" for p in pngs) + "\n")
    return pngs
