"""Run outputs: metrics.parquet, summary.json, model.pt, accuracy.png, staleness.png, checkpoint.pt."""

import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from storage.errors import InputError  # noqa: E402

METRIC_COLUMNS = ["time", "epoch", "commit", "worker", "staleness", "update_norm", "conflict", "train_loss",
                  "loss", "accuracy", "step", "step_tightness", "distinct_buckets", "spills"]
EVAL_ROW, STEP_ROW = -2, -3  # worker values of evaluation rows and of sampled online-coordination steps
CHECKPOINT = "checkpoint.pt"


def metrics_frame(records: list[dict], evals: list[dict], steps: list[dict] = ()) -> pd.DataFrame:
    """One row per commit (worker k, or -1 for a model-averaging round), one per evaluation (worker -2:
    ``loss`` and ``accuracy``), and one per step sampled for ``step_tightness`` (worker -3, sorted first:
    ``epoch`` (integer), ``step``, that step's ``step_tightness``, and with online coordination
    ``distinct_buckets`` and ``spills``). Columns a row does not use are empty."""
    rows = [dict(r, loss=np.nan, accuracy=np.nan) for r in records]
    rows += [{"time": np.nan, "commit": 0, "worker": STEP_ROW, "staleness": 0, **s} for s in steps]
    rows += [{"time": e["time"], "epoch": e["epoch"], "commit": e["commit"], "worker": -2, "staleness": 0,
              "update_norm": np.nan, "conflict": np.nan, "train_loss": np.nan, "loss": e["loss"],
              "accuracy": e["accuracy"]} for e in evals]
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return df.sort_values(["commit", "worker"], kind="stable").reset_index(drop=True)


def summarize(df: pd.DataFrame, *, optimizer: str, workers: int, epochs: int, target: float,
              unseen_rows: int, dead_workers: list[int], training_seconds: float) -> dict:
    evals = df[df.worker == EVAL_ROW]
    commits = df[df.worker >= -1]
    reached = evals[evals.accuracy >= target]
    nanmean = lambda s: None if s.dropna().empty else float(s.dropna().mean())  # noqa: E731
    return {
        "optimizer": optimizer, "workers": workers, "epochs": epochs,
        "final_accuracy": None if evals.empty else float(evals.accuracy.iloc[-1]),
        "best_accuracy": None if evals.empty else float(evals.accuracy.max()),
        "final_loss": None if evals.empty else float(evals.loss.iloc[-1]),
        "target_accuracy": target,
        "epochs_to_target": None if reached.empty else float(reached.epoch.iloc[0]),
        "seconds_to_target": None if reached.empty else float(reached.time.iloc[0]),
        "commits": int(len(commits)),
        "commits_per_second": float(len(commits) / training_seconds) if training_seconds > 0 else None,
        "mean_staleness": nanmean(commits.staleness.astype(float)) if len(commits) else None,
        "mean_conflict": nanmean(commits.conflict),
        "unseen_rows": int(unseen_rows), "dead_workers": dead_workers, "training_seconds": training_seconds,
    }


def auc(df: pd.DataFrame) -> float:
    """Area under validation accuracy by epoch (trapezoid), divided by the epoch span."""
    evals = df[df.worker == -2]
    if len(evals) < 2:
        return math.nan
    span = evals.epoch.iloc[-1] - evals.epoch.iloc[0]
    return float(np.trapezoid(evals.accuracy, evals.epoch) / span) if span > 0 else math.nan


def write_plots(df: pd.DataFrame, out: Path, title: str) -> list[Path]:
    evals = df[df.worker == -2]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(evals.epoch, evals.accuracy, marker=".")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=title, ylim=(0, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    st = df[df.worker >= 0].staleness
    ax.hist(st, bins=np.arange(st.max() + 2) - 0.5 if len(st) else 10, color="tab:purple")
    ax.set(xlabel="staleness τ (commits between pull and commit)", ylabel="commits", title=title)
    fig.tight_layout()
    fig.savefig(out / "staleness.png", dpi=90)
    plt.close(fig)
    return [out / "accuracy.png", out / "staleness.png"]


def write_outputs(out: Path, *, df: pd.DataFrame, summary: dict, state_dict: dict, title: str,
                  plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "metrics.parquet", index=False)
    torch.save(state_dict, out / "model.pt")
    if plots:
        write_plots(df, out, title)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")


def update_summary(out: Path, **fields) -> dict:
    """Add ``fields`` to ``out/summary.json`` (rewritten atomically); returns the summary."""
    summary = dict(json.loads((out / "summary.json").read_text()), **fields)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")
    return summary


def save_checkpoint(out: Path, cut, *, optimizer: str, workers: int, evals: list[dict], records: list[dict]) -> None:
    """A :class:`~train.server.Cut` as checkpoint.pt: θ̃, clock, per-worker cursors, rows seen and local
    optimizer states (``{}`` for a worker that died), and the history up to the clock. Tensors, numbers,
    strings, lists and dicts only: it loads with ``weights_only=True``."""
    out.mkdir(parents=True, exist_ok=True)
    blob = {"centre": cut.centre, "clock": cut.clock, "cursors": torch.tensor(cut.cursors, dtype=torch.int64),
            "samples": torch.tensor(cut.samples, dtype=torch.int64), "optimizer": optimizer,
            "optimizer_states": [cut.states.get(k, {}) for k in range(workers)], "elapsed": cut.elapsed, "evals": evals,
            "records": records}
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, out / CHECKPOINT)


def load_checkpoint(out: Path) -> dict:
    path = out / CHECKPOINT
    if not path.is_file():
        raise InputError(f"--resume: no {CHECKPOINT} in {out}; train without --resume first")
    return torch.load(path, weights_only=True)
