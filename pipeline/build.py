"""build_shards as plain steps: check -> prepare -> scan -> fit -> bucket_and_write -> publish.

:func:`build_shards` is the one orchestration: the CLI and the library call it as it is, the Prefect flow
passes ``run_step`` to run each step as a task. Steps hand each other typed results
(:mod:`pipeline.step_results`). Every file goes under the build's own prefix ``OUT/data/<build_id>/`` while the
build holds a lease; ``publish`` commits the manifest last, create-only (:mod:`storage.commit`), so readers see
the new set whole or not at all; ``discard`` removes the prefix after an error, and a later build removes what
a killed one left.
"""

import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from pipeline import bucket as bucket_pass
from pipeline import index as index_build
from pipeline import quality, resident, scratch
from pipeline import scan as scan_pass
from pipeline.config import BuildConfig
from pipeline.daskrt import ProgressFn, dask_client, ordered_map
from pipeline.deal import INDEX_ORDER, deal
from pipeline.families import HashFamily, default_size, fit_family
from pipeline.layout import DestLayout
from pipeline.staged_quality import shard_quality
from pipeline.step_results import Plan, Scanned, Written
from pipeline.write import write_shards
from storage import commit, faults, resume, urls
from storage.dataset import SourceDataset, open_source
from storage.errors import InputError
from storage.manifest import (
    LEGACY_MANIFEST,
    Columns,
    Dropped,
    FamilyInfo,
    FileEntry,
    LabelInfo,
    Manifest,
    ShardEntry,
    SourceInfo,
    Validation,
)
from storage.ownership import check_apart, check_replaceable, remove_legacy
from storage.shardset import ShardSet

log = logging.getLogger("simshard.build")
THREADS_MAX_SOURCE_BYTES = 2**30
StepRunner = Callable[..., Any]  # run_step(name, fn, *args) -> fn(*args)


def call_step(name: str, fn: Callable, *args):
    """The default step runner: a plain call."""
    return fn(*args)


def output_folder(config: BuildConfig) -> Path:
    """``--out`` as a local :class:`Path` or an object-store path carrying ``--storage-options``."""
    return urls.folder(config.out, storage_options=config.storage_options)


def check(config: BuildConfig) -> SourceDataset:
    """Everything checkable before any work starts: the output folder's state, the source (every footer is
    read, columns resolved) and the row count. Raises :class:`InputError`; changes nothing."""
    out = output_folder(config)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another --out")
    label = config.label
    options = config.storage_options
    ds = open_source(config.source, features=config.features, label=label, storage_options=options)
    if label is None and "label" in ds.schema.names and not config.features:
        if pa.types.is_integer(ds.schema.field("label").type):
            ds = open_source(config.source, features=None, label="label", storage_options=options)
    for root in ds.local_roots() if not urls.is_remote(out) else ds.remote_roots():
        check_apart(out, root, output_flag="--out", other_flag="--source")
    if out.exists():
        # what a killed build left (no committed version) is simshard's to reuse without --overwrite
        check_replaceable(out, kind="shards", flag="--overwrite" if config.overwrite else None)
        if (commit.versions(out) or (out / LEGACY_MANIFEST).exists()) and not config.overwrite:
            raise InputError(f"output {out} already exists; pass --overwrite to replace it")
    if ds.num_rows < config.workers:
        raise InputError(f"source has {ds.num_rows} rows, fewer than --workers {config.workers}")
    return ds


# parameters that change how a build runs but not what it writes: a build may resume another's work across them
RUN_ONLY = {"out", "overwrite", "storage_options", "dask_address", "dask_workers", "dask_cluster",
            "dask_memory_limit", "dask_dashboard", "shuffle_method"}


def resume_key(config: BuildConfig, ds: SourceDataset, kind: str) -> str:
    return resume.key(identity=ds.identity(), params={"kind": kind, **config.model_dump(exclude=RUN_ONLY)})


def prepare(config: BuildConfig, kind: str = "shards") -> Plan:
    """:func:`check`, then take a lease and create the build's data prefix (or claim the prefix of a killed
    build with the same source and parameters, to resume it); clear what other killed builds left."""
    ds = check(config)
    out = output_folder(config)
    found = commit.versions(out)
    key = resume_key(config, ds, kind)
    resumed = resume.find(out, key)
    plan = Plan(config, ds, out, resumed or uuid.uuid4().hex[:8], found[-1] if found else 0,
                made_out=not out.exists(), kind=kind, resumed=resumed is not None)
    commit.take_lease(out, plan.build_id)
    removed = commit.collect(out, claimed=resume.claimed)
    if removed:
        log.info("removed %d prefix(es) that killed or superseded builds left in %s", len(removed), out)
    if resumed:
        log.info("resuming build %s, which was killed before it committed: its finished steps are reused", resumed)
    else:
        resume.start(plan.staging, plan.build_id, key)
    plan.work.mkdir(parents=True, exist_ok=True)
    log.info("source %s: %d rows in %d files, %d features (%s), label %s", config.source, ds.num_rows,
             len(ds.files), ds.spec.dim, ds.spec.layout, ds.spec.label)
    return plan


def discard(plan: Plan) -> None:
    """Remove the build's prefix and lease (call once the Dask cluster whose scratch space it holds has closed).
    When nothing was ever committed, the empty folders the build made go too."""
    urls.remove_tree(plan.staging)
    shutil.rmtree(plan.work, ignore_errors=True)
    commit.drop_lease(plan.out, plan.build_id)
    if commit.versions(plan.out) or urls.is_remote(plan.out):  # an object store has no empty folders to remove
        return
    for folder in [plan.out / name for name in commit.NAMESPACES] + ([plan.out] if plan.made_out else []):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def scan(plan: Plan, client, progress: ProgressFn | None = None) -> Scanned:
    """Count rows and non-finite values, split validation, draw the sample (saved to the staging folder).
    The source is read into cluster memory for the later passes when it fits (:mod:`pipeline.resident`)."""
    cfg, ds = plan.config, plan.ds
    record = resume.read_json(plan.staging, "scan.json")
    if record is not None and resume.read_arrays(plan.staging, "sample.npz") is not None:
        log.info("scan and sample: reused from the killed run (%d rows, %d sampled)", record["rows"],
                 record["sample_rows"])
        return Scanned(**record)
    sample_size = cfg.sample_size or min(100_000, ds.num_rows)
    prob = scan_pass.sample_probability(rows=int(ds.num_rows * (1 - cfg.validation_fraction)),
                                        sample_size=sample_size)
    chunks = ds.chunks(cfg.chunk_rows)
    held = resident.hold(client, ds, chunks, build_id=plan.build_id)
    log.info("source read once and kept in cluster memory for the later passes" if held else
             "source not kept in cluster memory (over a quarter of it, or workers without a memory limit): "
             "every pass reads it from storage")
    parts = ordered_map(client, scan_pass.scan_chunk, chunks, held or [None] * len(chunks), step="scan",
                        progress=progress, ds=ds,
                        seed=cfg.seed, validation_fraction=cfg.validation_fraction, sample_prob=prob)
    result = scan_pass.combine(parts, ds=ds, sample_size=sample_size)
    if result.nonfinite_rows and cfg.nan == "error":
        detail = ", ".join(f"{c!r}: {n}" for c, n in result.nonfinite_per_column.items())
        raise InputError(f"NaN or inf in feature column(s) {detail} ({result.nonfinite_rows} rows); "
                         "clean the data or pass --nan drop to drop those rows")
    if any(p.label_min is not None and p.label_min < 0 for p in parts):
        raise InputError(f"label column {ds.spec.label!r} has negative values; labels must be classes 0..C-1")
    train_rows = result.rows - result.nonfinite_rows - result.validation_rows
    if train_rows < cfg.workers:
        raise InputError(f"only {train_rows} training rows remain after validation split and NaN drop, fewer "
                         f"than --workers {cfg.workers}")
    resume.write_arrays(plan.staging, "sample.npz", x=result.sample_x, rows=result.sample_rows)
    if result.nonfinite_rows:
        log.warning("dropped %d rows with NaN/inf features (%s)", result.nonfinite_rows, result.nonfinite_per_column)
    scanned = Scanned(rows=result.rows, train_rows=train_rows, validation_rows=result.validation_rows,
                      nonfinite_rows=result.nonfinite_rows, nonfinite_per_column=result.nonfinite_per_column,
                      sample_rows=int(len(result.sample_x)), chunks=len(chunks),
                      label_counts=None if result.label_counts is None else result.label_counts.tolist())
    resume.write_json(plan.staging, "scan.json", dataclasses.asdict(scanned))
    return scanned


def _sample(plan: Plan) -> np.ndarray:
    return resume.read_arrays(plan.staging, "sample.npz")["x"]


def _needs_family(config: BuildConfig) -> bool:
    return config.order in ("aligned", "stratified", "diverse")


def fit(plan: Plan, scanned: Scanned) -> FamilyInfo | None:
    """Fit the hash family on the sample; save it under ``family/``. None for orders that do not hash."""
    if not _needs_family(plan.config):
        return None
    cfg = plan.config
    record = resume.read_json(plan.staging, "family.json")
    if record is not None:
        log.info("%s family: reused from the killed run", cfg.family)
        return FamilyInfo(**record)
    sample = _sample(plan)
    workers = cfg.workers if plan.kind == "shards" else index_build.NOMINAL_WORKERS
    size = cfg.size or default_size(cfg.family, rows=scanned.train_rows, workers=workers, sample_rows=len(sample))
    family = fit_family(cfg.family, sample, size=size, seed=cfg.seed)
    files = family.save(plan.staging / "family")
    log.info("fitted %s family: size %d on %d sample rows", cfg.family, family.size, len(sample))
    info = FamilyInfo(name=cfg.family, size=family.size, params=f"family/{files['params']}",
                      arrays=f"family/{files['arrays']}")
    resume.write_json(plan.staging, "family.json", info.model_dump())
    return info


def bucket_and_write(plan: Plan, client, family_info: FamilyInfo | None,
                     progress: ProgressFn | None = None) -> Written:
    """Encode every row, group and deal, then shuffle rows into place and write all part files."""
    cfg, ds = plan.config, plan.ds
    family = HashFamily.load(plan.staging / "family") if family_info else None
    chunks = ds.chunks(cfg.chunk_rows)
    held = resident.held(client, plan.build_id)
    log.info("bucket and write passes %s", "use the source kept in cluster memory" if held else "read the source")
    try:
        return _bucket_and_write(plan, client, family, chunks, held, progress)
    finally:
        resident.release(client, plan.build_id)


def _bucket_and_write(plan: Plan, client, family: HashFamily | None, chunks, held, progress) -> Written:
    cfg, ds = plan.config, plan.ds
    data = held or [None] * len(chunks)  # per chunk: its held values, or None to read it
    record = resume.read_json(plan.staging, "deal.json")
    arrays = resume.read_arrays(plan.staging, "dest.npz") if record else None
    if record is not None and arrays is not None:
        log.info("bucket codes and deal: reused from the killed run")
        dest, rank = arrays["dest"], arrays["rank"]
    else:
        parts = ordered_map(client, bucket_pass.bucket_chunk, chunks, data, step="bucket", progress=progress, ds=ds,
                            family=family, seed=cfg.seed, validation_fraction=cfg.validation_fraction)
        rows = bucket_pass.concat(parts)
        dealt = deal(source_row=rows.source_row, rank=rows.rank, key=rows.key, workers=cfg.workers,
                     order=INDEX_ORDER if plan.kind == "index" else cfg.order, seed=cfg.seed,
                     remainder=cfg.remainder)
        layout = DestLayout(tuple(dealt.rows_per_shard), len(rows.validation_rows))
        dest = np.full(ds.num_rows, -1, np.int64)
        kept = dealt.shard >= 0
        dest[rows.source_row[kept]] = layout.keys(dealt.shard[kept], dealt.pos[kept])
        dest[rows.validation_rows] = layout.validation_keys(len(rows.validation_rows))
        rank = rows.rank
        record = {"rows_per_shard": [int(n) for n in dealt.rows_per_shard], "groups": int(dealt.groups),
                  "partial_group": int(dealt.partial_group), "dropped": int(dealt.dropped),
                  "validation_rows": int(len(rows.validation_rows)),
                  "expected_rows": int(kept.sum()) + int(len(rows.validation_rows)),
                  "buckets": quality.bucket_stats(rank, workers=cfg.workers) if family else None}
        resume.write_arrays(plan.staging, "dest.npz", dest=dest, rank=rank)
        resume.write_json(plan.staging, "deal.json", record)
    layout = DestLayout(tuple(record["rows_per_shard"]), record["validation_rows"])
    done = resume.finished_parts(plan.staging) if plan.resumed else {}
    if done:
        log.info("write pass: %d part file(s) reused from the killed run", len(done))
    with concurrent.futures.ThreadPoolExecutor(1) as beside:
        # the quality's exact k-NN search needs only the family and the sample, so it runs on a driver thread
        # during the write pass, whose last part file leaves a core idle (measured at 2M rows: publish took
        # 0.15-0.18 s against 0.20-0.24 s when the search ran in it)
        recall = None if family is None else beside.submit(_knn_recall, plan, family)
        files = write_shards(ds, chunks, dest, out=plan.staging, layout=layout,
                             rows_per_part=cfg.rows_per_part, row_group_rows=cfg.row_group_rows, client=client,
                             shuffle_method=cfg.shuffle_method, progress=progress, data=data, done=done,
                             records=plan.staging)
        recall = None if recall is None else recall.result()
    faults.point("after-data")
    written = sum(f.rows for f in files)
    if written != record["expected_rows"]:
        raise RuntimeError(f"wrote {written} rows, expected {record['expected_rows']}: the shuffle lost or "
                           "duplicated rows")
    table = None
    if plan.kind == "index":
        table = index_build.bucket_table(rank, [f.rows for f in files if f.target.kind == "shard"])
    return Written(rows_per_shard=record["rows_per_shard"], groups=record["groups"],
                   partial_group=record["partial_group"], remainder_rows=record["dropped"],
                   validation_rows=record["validation_rows"], files=files, buckets=record["buckets"],
                   bucket_table=table, knn_recall_at_10=recall)


def _knn_recall(plan: Plan, family: HashFamily) -> float:
    faiss.omp_set_num_threads(1)  # per calling thread: the search shares the cores with the write pass
    return quality.knn_recall(family, _sample(plan), seed=plan.config.seed)


def _quality(plan: Plan, shards: ShardSet, family_info: FamilyInfo | None, written: Written, label_counts) -> dict:
    if plan.kind == "index":
        return {**index_build.quality(written.bucket_table), "knn_recall_at_10": written.knn_recall_at_10}
    measured = shard_quality(shards, sample=_sample(plan), seed=plan.config.seed, files=written.files,
                             num_classes=None if label_counts is None else len(label_counts))
    out = {"group_tightness": measured.pop("group_tightness")}
    if family_info:
        out.update(written.buckets)
        out["knn_recall_at_10"] = written.knn_recall_at_10
    return {**out, **measured}  # the label distance last, as the report lists it


def publish(plan: Plan, scanned: Scanned, family_info: FamilyInfo | None, written: Written) -> Manifest:
    """Measure quality on the staged files, then commit the manifest (create-only, version base + 1)."""
    cfg, ds = plan.config, plan.ds
    base = commit.prefix(plan.build_id)

    def entries(kind: str, index: int = 0) -> list[FileEntry]:
        return [FileEntry(path=f"{base}/{f.target.path}", rows=f.rows, bytes=f.bytes, sha256=f.sha256)
                for f in written.files if f.target.kind == kind and f.target.index == index]

    counts = scanned.label_counts
    recorded = json.loads(cfg.model_dump_json(exclude={"workers", "order", "remainder"} if plan.kind == "index"
                                              else None))
    manifest = Manifest(
        kind=plan.kind, buckets=written.bucket_table,
        build_id=plan.build_id,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        source=SourceInfo(uri=cfg.source, fingerprint=ds.fingerprint(), rows=ds.num_rows, files=len(ds.files)),
        workers=cfg.workers, order=cfg.order, seed=cfg.seed, remainder=cfg.remainder,
        rows_per_shard=written.rows_per_shard, groups=written.groups, partial_group=written.partial_group,
        row_group_rows=cfg.row_group_rows,
        columns=Columns(features=list(ds.spec.columns), layout=ds.spec.layout, dim=ds.spec.dim, label=ds.spec.label,
                        schema={f.name: str(f.type) for f in ds.schema}),
        label=None if counts is None else LabelInfo(column=ds.spec.label, num_classes=len(counts), counts=counts),
        family=None if family_info is None else family_info.model_copy(update={
            "params": f"{base}/{family_info.params}", "arrays": f"{base}/{family_info.arrays}"}),
        validation=Validation(rows=written.validation_rows, fraction=cfg.validation_fraction,
                              files=entries("validation")),
        dropped=Dropped(nonfinite_rows=scanned.nonfinite_rows, remainder_rows=written.remainder_rows),
        config=recorded,
        shards=[ShardEntry(index=i, rows=written.rows_per_shard[i], files=entries("shard", i))
                for i in range(cfg.workers)])
    # quality is measured on the staged files through the same reader users get
    measured = _quality(plan, ShardSet(plan.out, manifest=manifest), family_info, written, counts)
    manifest = manifest.model_copy(update={"quality": measured})
    shutil.rmtree(plan.work, ignore_errors=True)
    faults.point("before-commit")
    version = commit.commit(plan.out, manifest.to_json(), base=plan.base)
    faults.point("after-commit")
    try:  # committed: from here on nothing may fail the build (a later build tidies up what this leaves)
        urls.remove_tree(plan.staging / resume.RESUME)  # committed: nothing is left to resume
        commit.drop_lease(plan.out, plan.build_id)
        commit.collect(plan.out, claimed=resume.claimed)
        remove_legacy(plan.out)  # a format-1 set this build replaced
    except OSError as exc:
        log.warning("committed, but could not tidy %s: %s", plan.out, exc)
    if plan.kind == "index":
        log.info("published an index of %d rows in %d buckets to %s (version %d)", written.rows_per_shard[0],
                 len(written.bucket_table.rows), plan.out, version)
    else:
        log.info("published %d shards (%s rows) to %s (version %d)", cfg.workers, written.rows_per_shard, plan.out,
                 version)
    return manifest


def use_processes(config: BuildConfig, ds: SourceDataset) -> bool:
    """Whether the LocalCluster runs worker processes. ``dask_cluster`` "auto" uses one in-process worker with
    ``dask_workers`` threads for a source of under THREADS_MAX_SOURCE_BYTES in memory (about 3.8M rows of 64
    features): it starts in a fraction of a second, and the work is numpy, Arrow and FAISS, which release the
    GIL, so threads share the held chunks with no copy between processes (measured at 2M x 64: 2.3 s against
    4.2 s on two processes). Larger sources keep worker processes, under each process's memory limit: they
    are read from storage on every pass (the write pass in waves, or through p2p when larger still)."""
    if config.dask_cluster != "auto":
        return config.dask_cluster == "processes"
    return resident.source_bytes(ds) >= THREADS_MAX_SOURCE_BYTES


def _release_scratch(client) -> None:
    """Free the passes' reusable arrays (:mod:`pipeline.scratch`) on every worker."""
    with contextlib.suppress(Exception):  # a worker or cluster that is gone holds none, and must not mask an error
        client.run(scratch.release, on_error="ignore")


def build_shards(config: BuildConfig, *, progress: ProgressFn | None = None,
                 run_step: StepRunner = call_step, kind: str = "shards") -> Manifest:
    """Run every step on a Dask client of its own (``config.dask_address`` or a LocalCluster) and return the
    manifest. ``kind="index"`` writes an index (:mod:`pipeline.index`) instead of N shards.
    ``run_step(name, fn, *args)`` runs each step (the Prefect flow makes each a task). Nothing is
    left behind on error: the staging folder and any source chunks held in cluster memory are dropped."""
    plan = run_step("prepare", prepare, config, kind)
    try:
        with dask_client(config.dask_address, n_workers=config.dask_workers, memory_limit=config.dask_memory_limit,
                         local_directory=str(plan.work), dashboard=config.dask_dashboard,
                         processes=use_processes(config, plan.ds)) as client:
            try:
                scanned = run_step("scan-and-sample", scan, plan, client, progress)
                family_info = run_step("fit-family", fit, plan, scanned)
                written = run_step("bucket-and-write", bucket_and_write, plan, client, family_info, progress)
            except BaseException:
                resident.release(client, plan.build_id)
                raise
            finally:
                _release_scratch(client)
        # the staging folder goes only after the cluster has closed: it holds the workers' scratch space
        return run_step("publish", publish, plan, scanned, family_info, written)
    except OSError as exc:
        discard(plan)
        if exc.errno == errno.ENOSPC and not exc.filename:  # pyarrow's write errors name no file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(plan.out)) from exc
        raise
    except BaseException:
        discard(plan)
        raise
