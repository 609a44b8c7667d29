"""The sharding experiment: does aligned dealing cut epochs-to-target under asynchronous training?

A grid over datasets x sharding x optimizer x workers x learning-rate scale x seeds, run with the
deterministic simulator (a subset also over real RPC to check that the simulator's trend holds). Shard
sets are cached by fingerprint (source fingerprint + build parameters) and reused across cells and runs.
The target accuracy of a dataset is ``target_fraction`` x the mean final accuracy of ``single`` on it.

Shardings: ``aligned-<family>`` (aligned order with that hash family), ``diverse-<family>`` (aligned's
composition, concurrent rows far apart), ``stratified``, ``random``, ``contiguous`` (source order),
``contiguous-sorted`` (the source sorted by label first, the way data often sits in storage) and
``online-<family>`` (no shards: an index of that family, trained with online coordination).

Resumable: every finished run is recorded at once as ``<out>/runs/<fingerprint>.json`` (its row and its
accuracy curve, JSON), and a rerun into the same ``out`` runs only what has no record. ``part=(k, K)`` runs
every K-th run of the grid; the parts may share ``out`` or be copied together, and the run that finds every
record aggregates.
"""

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from distributed import as_completed
from tqdm.auto import tqdm

from experiment.grid import KEYS, MODELS, Dataset, ExperimentConfig, Run, part_of, plan
from experiment.stats import aggregate
from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.daskrt import ProgressFn
from pipeline.index import IndexConfig
from storage import demo
from storage.dataset import open_source
from storage.manifest import read_manifest
from train.config import TrainConfig

log = logging.getLogger("simshard")


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


def run_one(run: Run, *, shards: str, out: str, cfg: ExperimentConfig) -> dict:
    """Train one run (simulated or over RPC); returns its record: the run's fields, its results, its accuracy
    curve (``curve``: epochs and validation accuracies) and the CPU seconds it took."""
    from train.config import DEFAULT_LR
    from train.launcher import launch
    from train.simulate import simulate

    torch.set_num_threads(1)
    cpu = time.process_time()
    base = TrainConfig(optimizer=run.optimizer)
    single = run.optimizer == "single"
    # the grid keeps dist-keras's λ uncapped, as in the published results
    window = None if single else base.default_window()
    per_epoch = sum(read_manifest(shards).rows_per_shard[:run.workers]) / cfg.batch_size / (window or 1)
    if run.optimizer == "averaging":
        per_epoch /= run.workers
    data = {"index": shards} if run.sharding.startswith("online") else {"shards": shards}
    tc = TrainConfig(**data, out=out, optimizer=run.optimizer, epochs=run.epochs, seed=run.seed,
                     model=MODELS[run.model], batch_size=cfg.batch_size, workers=None if single else run.workers,
                     window=window, lr=DEFAULT_LR[base.resolved_local()] * run.lr_scale, overwrite=True,
                     eval_every=max(1, round(per_epoch / cfg.evals_per_epoch)))
    start = time.perf_counter()
    train_log = logging.getLogger("simshard.train")
    level = train_log.level
    train_log.setLevel(logging.WARNING)  # a grid's runs would print every evaluation of every run
    try:
        summary = simulate(tc, schedule=run.schedule, plots=False) if run.mode == "sim" else launch(tc)
    finally:
        train_log.setLevel(level)
    metrics = pd.read_parquet(Path(out) / "metrics.parquet")
    evals = metrics[metrics.worker == -2][["epoch", "accuracy"]]
    last_epoch = evals[evals.epoch > evals.epoch.max() - 1].accuracy
    result = dict(asdict(run), order=run.sharding, final_accuracy=summary["final_accuracy"],
                  best_accuracy=summary["best_accuracy"], last_epoch_accuracy=float(last_epoch.mean()),
                  auc=summary["auc"], mean_conflict=summary["mean_conflict"],
                  mean_staleness=summary["mean_staleness"], step_tightness=summary.get("step_tightness"),
                  # an averaging round (one commit record) has every worker take part
                  commits_per_worker=summary["commits"] / (1 if single or run.optimizer == "averaging"
                                                           else run.workers),
                  wall_seconds=time.perf_counter() - start, train_rows=int(per_epoch * cfg.batch_size),
                  unseen_rows=summary.get("unseen_rows"), spills_per_step=summary.get("spills_per_step"),
                  mean_distinct_buckets=summary.get("mean_distinct_buckets"))
    shutil.rmtree(out, ignore_errors=True)  # the record holds what the grid needs
    cpu = time.process_time() - cpu
    return dict(result, cpu_seconds=cpu, curve=evals.to_dict("list"))


def epochs_to(curve: dict, target: float) -> tuple[float, bool]:
    """First evaluated epoch with accuracy >= target; (last epoch, False) when never reached (censored)."""
    for e, a in zip(curve["epoch"], curve["accuracy"]):
        if a >= target:
            return float(e), True
    return float(curve["epoch"][-1]) if curve["epoch"] else math.nan, False


@dataclass(frozen=True)
class GridState:
    """Where a grid stands in ``out``: its runs, their fingerprints, and the records found (fingerprint ->
    record)."""

    runs: list[Run]
    fingerprints: dict[Run, str]
    records: dict[str, dict]

    @property
    def missing(self) -> list[Run]:
        return [r for r in self.runs if self.fingerprints[r] not in self.records]


def grid_state(cfg: ExperimentConfig, out: Path) -> GridState:
    runs = plan(cfg)
    fps = {r: r.fingerprint(cfg) for r in runs}
    paths = {fp: out / "runs" / f"{fp}.json" for fp in fps.values()}
    return GridState(runs, fps, {fp: json.loads(p.read_text()) for fp, p in paths.items() if p.exists()})


def _save(out: Path, fp: str, record: dict) -> None:
    path = out / "runs" / f"{fp}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # a killed grid leaves whole records only


@dataclass
class Eta:
    """Progress of the runs left: done/total, CPU seconds so far, and a finish estimate from the pace."""

    total: int
    start: float = 0.0
    done: int = 0
    cpu_seconds: float = 0.0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else math.nan
        eta = f"{left / 60:.0f} min left" if math.isfinite(left) else "estimating"
        return (f"{self.done}/{self.total} runs, {elapsed / 60:.1f} min elapsed, {self.cpu_seconds / 60:.1f} CPU "
                f"min, {eta}")


def run_experiment(cfg: ExperimentConfig, out: Path, *, client, progress: ProgressFn | None = None,
                   part: tuple[int, int] | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """Build (or reuse) the shard sets of the runs without a record, run them, and aggregate every record.
    Returns (runs, curves, cells), or None when runs of other parts are still missing."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    state = grid_state(cfg, out)
    todo = [r for r in part_of(state.runs, part) if state.fingerprints[r] not in state.records]
    log.info("experiment: %d runs in the grid, %d recorded, %d to run%s", len(state.runs), len(state.records),
             len(todo), f" (part {part[0]}/{part[1]})" if part else "")
    datasets = {d.name: d for d in cfg.datasets}
    folders = {}
    keys = sorted({(r.dataset, r.sharding, r.workers, r.seed) for r in todo})
    min_workers = min(r.workers for r in state.runs if r.optimizer != "single")
    for key in tqdm(keys, desc="build", unit="set", leave=False, disable=None):
        kind = "index" if key[1].startswith("online") else "shards"
        folders[key] = str(ensure_shards(build_config_for(datasets[key[0]], key[1], max(key[2], min_workers),
                                                          key[3]), client.scheduler.address, kind=kind))
        if progress:
            progress("build", len(folders), len(keys))
    jobs = {r: dict(run=r, shards=folders[(r.dataset, r.sharding, r.workers, r.seed)],
                    out=str(out / "work" / r.name())) for r in todo}
    eta = Eta(total=len(todo), start=time.perf_counter())
    sim = [r for r in todo if r.mode == "sim"]
    futures = {client.submit(_run_job, jobs[r], cfg=cfg, pure=False): r for r in sim}
    with tqdm(total=len(todo), desc="runs", unit="run", leave=False, disable=None) as bar:
        def finished(run: Run, record: dict) -> None:
            _save(out, state.fingerprints[run], record)
            state.records[state.fingerprints[run]] = record
            eta.done += 1
            eta.cpu_seconds += record["cpu_seconds"]
            bar.update()
            if progress:
                progress("simulate", eta.done, eta.total)
            if eta.done % max(1, eta.total // 20) == 0 or eta.done == eta.total:
                log.info("experiment: %s", eta.line())

        try:
            for future in as_completed(futures):
                finished(futures[future], future.result())
        finally:
            for f in futures:
                f.cancel()
        for run in (r for r in todo if r.mode == "rpc"):  # RPC runs use every core
            finished(run, _run_job(jobs[run], cfg=cfg))
    shutil.rmtree(out / "work", ignore_errors=True)
    if state.missing:
        log.info("experiment: %d of %d runs still have no record (other parts)", len(state.missing), len(state.runs))
        return None
    return aggregate_records(cfg, [state.records[state.fingerprints[r]] for r in state.runs])


def aggregate_records(cfg: ExperimentConfig, records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, curves, cells) from the run records: targets, epochs to target, and per-cell statistics."""
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in records])
    group = [k for k in KEYS if k != "sharding"]
    if cfg.target == "single":
        single = table[table.optimizer == "single"].groupby(["dataset", "model"]).final_accuracy.mean()
        table["target"] = [cfg.target_fraction * single[(d, m)] for d, m in zip(table.dataset, table.model)]
    else:
        random = table[table.sharding == "random"].groupby(group).final_accuracy.mean()
        table["target"] = [cfg.target_fraction * random[tuple(row)] for row in table[group].itertuples(index=False)]
    reached = [epochs_to(r["curve"], t) for r, t in zip(records, table.target)]
    table["epochs_to_target"] = [e for e, _ in reached]
    table["reached"] = [ok for _, ok in reached]
    table["samples_to_target"] = table.epochs_to_target * table.train_rows
    curves = pd.DataFrame([dict({k: r[k] for k in KEYS + ["seed"]}, epoch=e, accuracy=a)
                           for r in records for e, a in zip(r["curve"]["epoch"], r["curve"]["accuracy"])])
    cells = aggregate(table, keys=KEYS)
    return table, curves, cells


def _run_job(job: dict, *, cfg: ExperimentConfig) -> dict:
    return run_one(job["run"], shards=job["shards"], out=job["out"], cfg=cfg)
