"""The sharding experiment: does aligned dealing cut epochs-to-target under asynchronous training?

A grid over datasets x sharding x optimizer x workers x learning-rate scale x seeds, run with the
deterministic simulator (a subset also over real RPC to check that the simulator's trend holds). Shard
sets are cached by fingerprint (source fingerprint + build parameters) and reused across cells and runs.
The target accuracy of a dataset is ``target_fraction`` x the mean final accuracy of ``single`` on it.

Shardings: ``aligned-<family>`` (aligned order with that hash family), ``diverse-<family>`` (aligned's
composition, concurrent rows far apart), ``stratified``, ``random``, ``contiguous`` (source order),
``contiguous-sorted`` (the source sorted by label first, the way data often sits in storage) and
``online-<family>`` (no shards: an index of that family, trained with online coordination).
"""

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from experiment.grid import KEYS, Dataset, ExperimentConfig, plan
from experiment.stats import aggregate
from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.daskrt import ProgressFn, ordered_map
from pipeline.index import IndexConfig
from storage import demo
from storage.dataset import open_source
from storage.manifest import read_manifest
from train.config import TrainConfig


def _sorted_copy(source: str) -> str:
    """The source sorted by label, cached as one Parquet file (small experiment datasets only)."""
    ds = open_source(source, label="label")
    path = demo.cache_dir() / "sorted" / f"{ds.fingerprint()[:16]}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(ds.files[0] if len(ds.files) == 1 else source)
        table = table.take(pc.sort_indices(table, [("label", "ascending")]))
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.rename(path)
    return str(path)


def build_config_for(dataset: Dataset, sharding: str, workers: int, seed: int) -> BuildConfig:
    """The build of a sharding; for ``online-<family>`` the index's (one sequence, built with kind "index")."""
    source = _sorted_copy(dataset.source) if sharding == "contiguous-sorted" else dataset.source
    order, _, family = sharding.partition("-")
    if order == "contiguous":
        family = ""
    if order == "online":
        return IndexConfig(source=source, out="-", family=family or "kmeans", seed=seed, label="label").build_config()
    return BuildConfig(source=source, out="-", workers=workers, order=order, family=family or "kmeans",
                       seed=seed, label="label")


def shard_folder(cfg: BuildConfig) -> Path:
    """Cache folder for a shard set, named by the source fingerprint and the build parameters."""
    params = cfg.model_dump(exclude={"out", "overwrite", "dask_address", "dask_workers", "dask_memory_limit",
                                     "dask_cluster", "shuffle_method", "source"})
    key = open_source(cfg.source, label=cfg.label).fingerprint() + json.dumps(params, sort_keys=True)
    return demo.cache_dir() / "shards" / hashlib.sha256(key.encode()).hexdigest()[:20]


def ensure_shards(cfg: BuildConfig, dask_address: str | None, *, kind: str = "shards") -> Path:
    folder = shard_folder(cfg) if kind == "shards" else shard_folder(cfg).with_name(shard_folder(cfg).name + "-index")
    try:
        read_manifest(folder)
        return folder
    except Exception:  # noqa: BLE001 - missing or stale: rebuild
        shutil.rmtree(folder, ignore_errors=True)
    build_shards(cfg.model_copy(update={"out": str(folder), "dask_address": dask_address}), kind=kind)
    return folder


def run_one(run: dict, *, shards: str, out: str, cfg: ExperimentConfig) -> dict:
    """Train one cell (simulated or over RPC); returns the run's row and its accuracy curve."""
    from train.config import DEFAULT_LR
    from train.launcher import launch
    from train.simulate import simulate

    torch.set_num_threads(1)
    base = TrainConfig(optimizer=run["optimizer"])
    single = run["optimizer"] == "single"
    # the grid keeps dist-keras's λ uncapped, as in the published results
    window = None if single else base.default_window()
    per_epoch = sum(read_manifest(shards).rows_per_shard[:run["workers"]]) / cfg.batch_size / (window or 1)
    if run["optimizer"] == "averaging":
        per_epoch /= run["workers"]
    data = {"index": shards} if run["sharding"].startswith("online") else {"shards": shards}
    tc = TrainConfig(**data, out=out, optimizer=run["optimizer"], epochs=cfg.epochs, seed=run["seed"],
                     batch_size=cfg.batch_size, workers=None if single else run["workers"], window=window,
                     lr=DEFAULT_LR[base.resolved_local()] * run["lr_scale"], overwrite=True,
                     eval_every=max(1, round(per_epoch / cfg.evals_per_epoch)))
    start = time.perf_counter()
    summary = simulate(tc, schedule=cfg.schedule, plots=False) if run["mode"] == "sim" else launch(tc)
    metrics = pd.read_parquet(Path(out) / "metrics.parquet")
    evals = metrics[metrics.worker == -2][["epoch", "accuracy"]]
    last_epoch = evals[evals.epoch > evals.epoch.max() - 1].accuracy
    return dict(run, final_accuracy=summary["final_accuracy"], best_accuracy=summary["best_accuracy"],
                last_epoch_accuracy=float(last_epoch.mean()), auc=summary["auc"],
                mean_conflict=summary["mean_conflict"], mean_staleness=summary["mean_staleness"],
                step_tightness=summary.get("step_tightness"),
                # an averaging round (one commit record) has every worker take part
                commits_per_worker=summary["commits"] / (1 if single or run["optimizer"] == "averaging"
                                                         else run["workers"]),
                wall_seconds=time.perf_counter() - start, train_rows=int(per_epoch * cfg.batch_size),
                curve=evals.to_dict("list"))


def epochs_to(curve: dict, target: float) -> tuple[float, bool]:
    """First evaluated epoch with accuracy >= target; (last epoch, False) when never reached (censored)."""
    for e, a in zip(curve["epoch"], curve["accuracy"]):
        if a >= target:
            return float(e), True
    return float(curve["epoch"][-1]) if curve["epoch"] else math.nan, False


def run_experiment(cfg: ExperimentConfig, out: Path, *, client, progress: ProgressFn | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build (or reuse) every shard set, run every cell, and aggregate. Returns (runs, curves, cells)."""
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(cfg)
    datasets = {d.name: d for d in cfg.datasets}
    folders = {}
    keys = sorted({(r["dataset"], r["sharding"], r["workers"], r["seed"]) for r in runs})
    for key in keys:
        kind = "index" if key[1].startswith("online") else "shards"
        folders[key] = str(ensure_shards(build_config_for(datasets[key[0]], key[1], max(key[2], min(cfg.workers)),
                                                          key[3]), client.scheduler.address, kind=kind))
        if progress:
            progress("build", len(folders), len(keys))
    jobs = [dict(run=r, shards=folders[(r["dataset"], r["sharding"], r["workers"], r["seed"])],
                 out=str(out / "runs" / "-".join(str(r[k]) for k in KEYS + ["seed"]))) for r in runs]
    sim = [j for j in jobs if j["run"]["mode"] == "sim"]
    results = ordered_map(client, _run_job, sim, step="simulate", progress=progress, cfg=cfg)
    results += [_run_job(j, cfg=cfg) for j in jobs if j["run"]["mode"] == "rpc"]  # RPC runs use every core
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in results])
    targets = {d: cfg.target_fraction * table[(table.dataset == d) & (table.optimizer == "single")]
               .final_accuracy.mean() for d in datasets}
    reached = [epochs_to(r["curve"], targets[r["dataset"]]) for r in results]
    table["target"] = table.dataset.map(targets)
    table["epochs_to_target"] = [e for e, _ in reached]
    table["reached"] = [ok for _, ok in reached]
    table["samples_to_target"] = table.epochs_to_target * table.train_rows
    curves = pd.DataFrame([dict({k: r[k] for k in KEYS + ["seed"]}, epoch=e, accuracy=a)
                           for r in results for e, a in zip(r["curve"]["epoch"], r["curve"]["accuracy"])])
    cells = aggregate(table, keys=KEYS)
    return table, curves, cells


def _run_job(job: dict, *, cfg: ExperimentConfig) -> dict:
    return run_one(job["run"], shards=job["shards"], out=job["out"], cfg=cfg)
