"""Prefect flow ``train`` and its command line ``python -m flows.train --shards DIR --out RUN``.

The flow launches the parameter server and n asynchronous workers over torch.distributed.rpc (one per shard;
``single`` trains one process on all rows) and reports the summary and the plots as artifacts. Options are
generated from :class:`train.config.TrainConfig` (``--help``).
"""

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import quick_exit, terminal
from flows.reporting import ProgressReporter, markdown_artifact, png_markdown, rounded, table_artifact
from flows.temporary_server import temporary_server
from storage import cli, urls
from train import session
from train.config import TrainConfig
from train.launcher import launch


@task(name="train-rpc", cache_policy=NO_CACHE)
def train_task(config: TrainConfig, progress) -> dict:
    with cli.cleanup_boundary():
        return launch(config, progress=progress)


def target_text(summary: dict) -> str:
    reached = summary["epochs_to_target"]
    target = summary["target_accuracy"]
    return (f"reached {target:g} at epoch {reached:.2f}" if reached is not None
            else f"did not reach {target:g} in {summary['epochs']} epochs")


def report_markdown(out: str, summary: dict, storage_options: dict | None = None) -> str:
    s = rounded(summary)
    lines = [f"# Training: {s['optimizer']}, {s['workers']} workers", "",
             f"final accuracy **{s['final_accuracy']}**, best {s['best_accuracy']}, {target_text(summary)}, "
             f"mean staleness {s['mean_staleness']}, mean conflict {s['mean_conflict']}", "",
             f"Run folder: `{out}`", ""]
    for name in ("accuracy.png", "staleness.png"):
        lines += [png_markdown(urls.folder(out, storage_options=storage_options) / name, name), ""]
    return "\n".join(lines)


@flow(name="train", log_prints=True)
def train(config: TrainConfig = TrainConfig()) -> dict:
    """Asynchronous parameter-server training on a shard set; returns the summary."""
    logger = get_run_logger()
    progress = ProgressReporter(f"train {config.optimizer} on {config.data}")
    summary = train_task(config, progress)
    progress.set(100)
    table_artifact("train-summary", [{"field": k, "value": v} for k, v in summary.items()],
                   f"Training summary: {config.optimizer} on {config.data}")
    markdown_artifact("train-report", report_markdown(config.out, summary, config.storage_options),
                      "accuracy and staleness plots")
    logger.info("final accuracy %.4f, %s", summary["final_accuracy"], target_text(summary))
    return summary


def summary_line(summary: dict, out: str) -> str:
    return (f"trained {summary['optimizer']} with {summary['workers']} workers for {summary['epochs']} epochs: "
            f"final accuracy {summary['final_accuracy']:.4f} (best {summary['best_accuracy']:.4f}), "
            f"{target_text(summary)}, mean staleness {rounded(summary['mean_staleness'])}, "
            f"{summary['commits_per_second']:.1f} commits/s; outputs in {out}")


def parser(prog: str = "python -m flows.train"):
    return cli.model_parser(TrainConfig, prog=prog, description=(
        "Train with N asynchronous workers (one per shard) through a torch.distributed.rpc parameter server."))


def preflight(config: TrainConfig) -> TrainConfig:
    """Check the shard set, the model and the run folder before any process or server starts."""
    session.prepare(config, create_out=False)
    session.check_run_folder(config)
    return config


def main(argv: list[str] | None = None) -> int:
    values, common = cli.split_common(parser().parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        config = preflight(TrainConfig(**values))
        with temporary_server():
            summary = train(config=config)
        print(summary_line(summary, config.out))
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
