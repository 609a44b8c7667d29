"""Prefect flow ``build_shards`` and its command line ``python -m flows.build_shards``.

The flow runs :func:`pipeline.build.build_shards` with each step as a named task and reports artifacts; see
``--help`` for the options (generated from :class:`pipeline.config.BuildConfig`).
"""

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import quick_exit, terminal
from flows.reporting import ProgressReporter, markdown_artifact, png_markdown, rounded, table_artifact
from flows.temporary_server import temporary_server
from pipeline import build as steps
from pipeline.config import BuildConfig
from pipeline.plots import shard_stats_png
from storage import cli
from storage.manifest import Manifest


def prefect_step(name: str, fn, *args):
    """Run one build step as a Prefect task of that name."""
    return task(name=name, cache_policy=NO_CACHE)(fn)(*args)


def quality_rows(manifest: Manifest) -> list[dict]:
    q = manifest.quality
    rows = [{"metric": k, "value": v} for k, v in q.items() if k != "label_distance"]
    distances = q.get("label_distance") or [None] * manifest.workers
    for i, (n, dist) in enumerate(zip(manifest.rows_per_shard, distances)):
        rows.append({"metric": f"shard {i}: rows / label distance", "value": f"{n} / {rounded(dist)}"})
    return rows


@flow(name="build_shards", log_prints=True)
def build_shards(config: BuildConfig = BuildConfig()) -> Manifest:
    """Shard a Parquet dataset into N similarity-aligned per-worker shards; returns the manifest."""
    logger = get_run_logger()
    progress = ProgressReporter(f"build_shards {config.source} -> {config.out}")
    with cli.cleanup_boundary():
        manifest = steps.build_shards(config, progress=progress, run_step=prefect_step)
    progress.set(100)
    png = shard_stats_png(manifest, steps.output_folder(config) / "shard_stats.png")
    title = f"Shard quality for {config.source} ({config.order}, {config.family}, N={config.workers})"
    table_artifact("build-shards-quality", quality_rows(manifest), title)
    markdown_artifact("build-shards-report", f"# {title}\n\n{png_markdown(png, 'shard statistics')}\n",
                      "rows per shard and label distance per shard")
    logger.info("quality: %s", rounded(manifest.quality))
    return manifest


def summary_text(manifest: Manifest, out: str) -> str:
    q = rounded(manifest.quality)
    family = manifest.family.name if manifest.family else "-"
    lines = [f"built {manifest.workers} shards in {out} ({manifest.order}, family {family})",
             f"  rows per shard: {manifest.rows_per_shard}  groups: {manifest.groups}  "
             f"validation rows: {manifest.validation.rows}  dropped: {manifest.dropped.model_dump()}"]
    lines += [f"  {k}: {v}" for k, v in q.items()]
    return "\n".join(lines)


def parser():
    return cli.model_parser(BuildConfig, prog="python -m flows.build_shards", description=(
        "Build N per-worker Parquet shards in which row k of every shard comes from the same group of N "
        "similar rows (Prefect flow on a Dask cluster). With no arguments: the digits demo, 4 workers."))


def main(argv: list[str] | None = None) -> int:
    values, common = cli.split_common(parser().parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        config = BuildConfig(**values)
        steps.check(config)  # bad input fails here, before the Prefect server or Dask starts
        with temporary_server():
            manifest = build_shards(config=config)
        print(summary_text(manifest, config.out))
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
