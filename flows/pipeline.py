"""Prefect flow ``pipeline``: build_shards then train, as subflows, with one validated parameter model.

    python -m flows.pipeline [--source demo:digits] [--shards ./shards] [--run ./runs/latest] [--workers 4]
                             [--optimizer agn] [--epochs N] [--seed 0] [--config pipeline.json]
"""

import json
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows import quick_exit, terminal
from flows.build_shards import build_shards
from flows.reporting import rounded
from flows.temporary_server import temporary_server
from flows.train import target_text, train
from pipeline import build as steps
from pipeline.config import BuildConfig
from pipeline.deal import ORDERS
from pipeline.families import FAMILIES
from storage import cli
from storage.errors import InputError
from train.config import OPTIMIZERS, TrainConfig


class PipelineConfig(BaseModel):
    """``build`` and ``train`` parameters; train reads the shards build writes (``train.shards`` follows
    ``build.out``) and may use fewer workers than there are shards, never more."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    build: BuildConfig = BuildConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _consistent(self):
        if self.train.workers is not None and self.train.workers > self.build.workers:
            raise ValueError(f"train.workers {self.train.workers} exceeds build.workers {self.build.workers}")
        return self

    def train_config(self) -> TrainConfig:
        return self.train.model_copy(update={"shards": self.build.out})


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig = PipelineConfig()) -> dict:
    """Build the shards, then train on them; returns the training summary."""
    logger = get_run_logger()
    manifest = build_shards(config=config.build)
    logger.info("built %d shards, group tightness %s", manifest.workers,
                rounded(manifest.quality.get("group_tightness")))
    return train(config=config.train_config())


class PipelineOptions(BaseModel):
    """The pipeline's command line: a JSON parameter file and the options most runs change (they override
    the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: str | None = Field(None, description='JSON file with {"build": {...}, "train": {...}}')
    source: str | None = Field(None, description="Parquet source or demo:... (default demo:digits)")
    shards: str | None = Field(None, description="shard folder (default ./shards)")
    run: str | None = Field(None, description="run folder (default ./runs/latest)")
    workers: int | None = Field(None, description="shards and workers (default 4)")
    family: Literal[FAMILIES] | None = Field(None, description="hash family (default kmeans)")
    order: Literal[ORDERS] | None = Field(None, description="dealing order (default aligned)")
    optimizer: Literal[OPTIMIZERS] | None = Field(None, description="update rule (default agn)")
    epochs: int | None = Field(None, description="training epochs (default: from the shard size)")
    seed: int | None = Field(None, description="seed of the build and the training (default 0)")
    keep: bool = Field(False, description="fail instead of replacing existing shard and run folders")

    def pipeline_config(self) -> PipelineConfig:
        base = json.loads(Path(self.config).read_text()) if self.config else {}
        build, tr = dict(base.get("build", {})), dict(base.get("train", {}))
        for key, dest, target in (("source", "source", build), ("shards", "out", build),
                                  ("workers", "workers", build), ("family", "family", build),
                                  ("order", "order", build), ("seed", "seed", build), ("run", "out", tr),
                                  ("optimizer", "optimizer", tr), ("epochs", "epochs", tr), ("seed", "seed", tr)):
            if getattr(self, key) is not None:
                target[dest] = getattr(self, key)
        build.setdefault("overwrite", not self.keep)
        tr.setdefault("overwrite", not self.keep)
        return PipelineConfig(build=build, train=tr)


def main(argv=None) -> int:
    parser = cli.model_parser(PipelineOptions, prog="python -m flows.pipeline", description=(
        "build_shards then train (Prefect subflows). Without options: the digits demo, 4 workers, AGN."))
    values, common = cli.split_common(parser.parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        options = PipelineOptions(**values)
        if options.config and not Path(options.config).is_file():
            raise InputError(f"--config {options.config} does not exist")
        try:
            config = options.pipeline_config()
        except json.JSONDecodeError as exc:
            raise InputError(f"--config {options.config} is not valid JSON: {exc}") from None
        steps.check(config.build)  # bad input fails here, before the Prefect server or Dask starts
        with temporary_server():
            summary = pipeline(config=config)
        print(f"pipeline done: {summary['optimizer']} on {config.build.out}: final accuracy "
              f"{summary['final_accuracy']:.4f}, {target_text(summary)}; run in {config.train.out}")
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
