"""Prefect flow ``build_index`` and its command line ``python -m flows.build_index``.

The flow runs the build steps of :mod:`pipeline.build` with ``kind="index"`` (:mod:`pipeline.index`): the same
scan, sample, fit and bucket tasks as build_shards, then one locality-ordered sequence and its bucket table.
``train --index`` trains from it with online coordination.
"""

from prefect import flow, get_run_logger

from flows import quick_exit, terminal
from flows.build_shards import prefect_step
from flows.reporting import ProgressReporter, markdown_artifact, png_markdown, rounded, table_artifact
from flows.temporary_server import temporary_server
from pipeline import build as steps
from pipeline.index import IndexConfig
from pipeline.plots import bucket_sizes_png
from storage import cli
from storage.manifest import Manifest


@flow(name="build_index", log_prints=True)
def build_index(config: IndexConfig = IndexConfig()) -> Manifest:
    """Bucket a Parquet dataset once, for training with online coordination; returns the index manifest."""
    logger = get_run_logger()
    build = config.build_config()
    progress = ProgressReporter(f"build_index {config.source} -> {config.out}")
    with cli.cleanup_boundary():
        manifest = steps.build_shards(build, progress=progress, run_step=prefect_step, kind="index")
    progress.set(100)
    png = bucket_sizes_png(manifest, steps.output_folder(build) / "bucket_sizes.png")
    title = f"Index quality for {config.source} ({config.family})"
    table_artifact("build-index-quality", [{"metric": k, "value": v} for k, v in manifest.quality.items()], title)
    markdown_artifact("build-index-report", f"# {title}\n\n{png_markdown(png, 'rows per bucket')}\n",
                      "rows per bucket in locality order")
    logger.info("index quality: %s", rounded(manifest.quality))
    return manifest


def summary_text(manifest: Manifest, out: str) -> str:
    q = rounded(manifest.quality)
    return "\n".join([f"built an index of {manifest.rows_per_shard[0]} rows in {out} (family {manifest.family.name})",
                      f"  validation rows: {manifest.validation.rows}  dropped: {manifest.dropped.model_dump()}",
                      *[f"  {k}: {v}" for k, v in q.items()]])


def parser():
    return cli.model_parser(IndexConfig, prog="python -m flows.build_index", description=(
        "Bucket a Parquet dataset once (Prefect flow on a Dask cluster) for train --index, where workers "
        "coordinate their batches online. With no arguments: the digits demo."))


def main(argv: list[str] | None = None) -> int:
    values, common = cli.split_common(parser().parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        config = IndexConfig(**values)
        steps.check(config.build_config())  # bad input fails here, before the Prefect server or Dask starts
        with temporary_server():
            manifest = build_index(config=config)
        print(summary_text(manifest, config.out))
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
