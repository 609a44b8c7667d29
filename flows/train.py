"""Prefect flow ``train`` and its command line ``python -m flows.train --shards DIR --out RUN``.

The flow validates the shard set, launches the parameter server and n asynchronous workers over
torch.distributed.rpc (one per shard; ``single`` trains one process on all rows) and reports the summary
and the plots as artifacts.
"""

import argparse
import base64
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.cli import run_cli
from flows.reporting import ProgressReporter, table_artifact
from train.config import OPTIMIZERS, TrainConfig
from train import session
from train.launcher import launch


@task(name="train-rpc", cache_policy=NO_CACHE)
def train_task(config: TrainConfig, progress) -> dict:
    return launch(config, progress=progress)


def plots_markdown(out: str, summary: dict) -> str:
    lines = [f"# Training: {summary['optimizer']}, {summary['workers']} workers", "",
             f"final accuracy **{summary['final_accuracy']:.4f}**, best {summary['best_accuracy']:.4f}, epochs to "
             f"target {summary['epochs_to_target']}, mean staleness {summary['mean_staleness']}, mean conflict "
             f"{summary['mean_conflict']}", "", f"Run folder: `{out}`", ""]
    for name in ("accuracy.png", "staleness.png"):
        data = base64.b64encode(open(f"{out}/{name}", "rb").read()).decode()
        lines += [f"![{name}](data:image/png;base64,{data})", ""]
    return "\n".join(lines)


@flow(name="train", log_prints=True)
def train(config: TrainConfig = TrainConfig()) -> dict:
    """Asynchronous parameter-server training on a shard set; returns the summary."""
    logger = get_run_logger()
    progress = ProgressReporter(f"train {config.optimizer} on {config.shards}")
    summary = train_task(config, progress)
    progress.set(100)
    table_artifact("train-summary", [{"field": k, "value": v} for k, v in summary.items()],
                   f"Training summary: {config.optimizer} on {config.shards}")
    create_markdown_artifact(key="train-report", markdown=plots_markdown(config.out, summary),
                             description="accuracy and staleness plots")
    logger.info("final accuracy %.4f, epochs to target %s", summary["final_accuracy"], summary["epochs_to_target"])
    return summary


def parser(prog: str = "python -m flows.train") -> argparse.ArgumentParser:
    fields = TrainConfig.model_fields
    p = argparse.ArgumentParser(prog=prog, description=(
        "Train with N asynchronous workers (one per shard) through a torch.distributed.rpc parameter server."))
    types = {"workers": int, "window": int, "batch_size": int, "epochs": int, "eval_every": int, "seed": int,
             "checkpoint_every": int, "threads": int, "lr": float, "rho": float, "gamma": float,
             "target_accuracy": float, "join_timeout": float, "worker_timeout": float}
    choices = {"optimizer": list(OPTIMIZERS), "local_optimizer": ["sgd", "momentum", "adam"]}
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (default: %(default)s)"
        if field.annotation is bool:
            p.add_argument(flag, dest=name, action="store_true", default=False, help=field.description)
        else:
            p.add_argument(flag, dest=name, default=field.default, type=types.get(name, str),
                           choices=choices.get(name), help=help_text)
    p.add_argument("--debug", action="store_true", help="show tracebacks on error")
    return p


def parse_config(argv, prog: str = "python -m flows.train") -> TrainConfig:
    args = vars(parser(prog).parse_args(argv))
    args.pop("debug")
    return TrainConfig(**args)


def preflight(config: TrainConfig) -> TrainConfig:
    """Check the shard set and the request before any process or server starts."""
    session.prepare(config, create_out=False)
    session.check_run_folder(config)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    code, config, summary = run_cli(lambda: preflight(parse_config(argv)), lambda c: train(config=c),
                                    debug="--debug" in argv)
    if code == 0:
        print(f"trained {summary['optimizer']} with {summary['workers']} workers for {summary['epochs']} epochs: "
              f"final accuracy {summary['final_accuracy']:.4f} (best {summary['best_accuracy']:.4f}), epochs to "
              f"target {summary['epochs_to_target']}, mean staleness {summary['mean_staleness']}, "
              f"{summary['commits_per_second']:.1f} commits/s; outputs in {config.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
