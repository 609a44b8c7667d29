"""Prefect flow ``build_shards`` and its command line ``python -m flows.build_shards``.

The flow only wires the plain steps of :mod:`pipeline.build` together as named tasks, owns the Dask cluster
(or connects to ``--dask-address``) and reports artifacts; see ``--help`` for the options.
"""

import argparse
import json
import sys

from distributed import Client
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.cli import run_cli
from flows.reporting import ProgressReporter, table_artifact
from pipeline import build as steps
from pipeline.config import BuildConfig
from pipeline.deal import ORDERS
from pipeline.families import FAMILIES
from pipeline.daskrt import dask_client
from pipeline.plots import shard_stats_png


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(config: BuildConfig) -> steps.Plan:
    return steps.prepare(config)


@task(name="scan-and-sample", cache_policy=NO_CACHE)
def scan_task(plan: steps.Plan, address: str, progress) -> dict:
    with Client(address) as client:
        return steps.scan(plan, client, progress)


@task(name="fit-family", cache_policy=NO_CACHE)
def fit_task(plan: steps.Plan, scanned: dict) -> dict | None:
    return steps.fit(plan, scanned)


@task(name="bucket-and-deal", cache_policy=NO_CACHE)
def bucket_task(plan: steps.Plan, address: str, family_info: dict | None, progress) -> dict:
    with Client(address) as client:
        return steps.bucket_and_write(plan, client, family_info, progress)


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(plan: steps.Plan, scanned: dict, family_info: dict | None, written: dict) -> dict:
    return steps.publish(plan, scanned, family_info, written)


def quality_rows(manifest: dict) -> list[dict]:
    q = manifest["quality"]
    rows = [{"metric": k, "value": v} for k, v in q.items() if k != "label_distance"]
    for i, (n, dist) in enumerate(zip(manifest["rows_per_shard"], q.get("label_distance") or [None] * 99)):
        rows.append({"metric": f"shard {i}: rows / label distance", "value": f"{n} / {dist}"})
    return rows


@flow(name="build_shards", log_prints=True)
def build_shards(config: BuildConfig = BuildConfig()) -> dict:
    """Shard a Parquet dataset into N similarity-aligned per-worker shards; returns the manifest."""
    logger = get_run_logger()
    progress = ProgressReporter(f"build_shards {config.source} -> {config.out}")
    plan = prepare_task(config)
    try:
        with dask_client(config.dask_address, n_workers=config.dask_workers,
                         memory_limit=config.dask_memory_limit, local_directory=str(plan.work)) as client:
            address = client.scheduler.address
            logger.info("Dask scheduler %s (dashboard off)", address)
            try:
                scanned = scan_task(plan, address, progress)
                family_info = fit_task(plan, scanned)
                written = bucket_task(plan, address, family_info, progress)
            except BaseException:
                steps.discard(plan, client)  # also drops source chunks held in the cluster's memory
                raise
        manifest = publish_task(plan, scanned, family_info, written)
    except BaseException:
        steps.discard(plan)
        raise
    progress.set(100)
    shard_stats_png(manifest, steps.Path(config.out) / "shard_stats.png")
    table_artifact("build-shards-quality", quality_rows(manifest),
                   f"Shard quality for {config.source} ({config.order}, {config.family}, N={config.workers})")
    logger.info("quality: %s", json.dumps(manifest["quality"]))
    return manifest


def parser() -> argparse.ArgumentParser:
    fields = BuildConfig.model_fields
    p = argparse.ArgumentParser(prog="python -m flows.build_shards", description=(
        "Build N per-worker Parquet shards in which row k of every shard comes from the same group of N "
        "similar rows (Prefect flow on a Dask cluster). With no arguments: the digits demo, 4 workers."))

    def opt(name, **kw):
        field = fields[name]
        kw.setdefault("default", field.default)
        kw.setdefault("help", f"{field.description} (default: %(default)s)")
        p.add_argument("--" + name.replace("_", "-"), dest=name, **kw)

    opt("source")
    opt("out")
    opt("workers", type=int)
    opt("family", choices=FAMILIES)
    opt("order", choices=ORDERS)
    opt("features", type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        help="comma-separated feature columns (default: all numeric columns except the label, or the one "
             "fixed-size float list column)")
    opt("label")
    opt("validation_fraction", type=float)
    opt("sample_size", type=int)
    opt("size", type=int)
    opt("seed", type=int)
    opt("overwrite", action="store_true", default=False)
    opt("nan", choices=["error", "drop"])
    opt("remainder", choices=["keep", "drop"])
    opt("dask_address")
    opt("dask_workers", type=int)
    opt("dask_memory_limit")
    opt("shuffle_method", choices=["auto", "tasks", "p2p"])
    opt("rows_per_part", type=int)
    p.add_argument("--debug", action="store_true", help="show tracebacks on error")
    return p


def summary_text(manifest: dict, out: str) -> str:
    q = manifest["quality"]
    lines = [f"built {manifest['workers']} shards in {out} ({manifest['order']}, family "
             f"{(manifest['family'] or {}).get('name', '-')})",
             f"  rows per shard: {manifest['rows_per_shard']}  groups: {manifest['groups']}  "
             f"validation rows: {manifest['validation']['rows']}  dropped: {manifest['dropped']}"]
    lines += [f"  {k}: {v}" for k, v in q.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    debug = args.pop("debug")
    code, config, manifest = run_cli(lambda: BuildConfig(**args), lambda c: build_shards(config=c), debug=debug)
    if code == 0:
        print(summary_text(manifest, config.out))
    return code


if __name__ == "__main__":
    sys.exit(main())
