"""Prefect flow ``pipeline``: build_shards then train, as subflows, with one validated parameter model.

    python -m flows.pipeline [--source demo:digits] [--shards ./shards] [--run ./runs/latest] [--workers 4]
                             [--optimizer agn] [--epochs 5] [--seed 0] [--config pipeline.json]
"""

import argparse
import json
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, model_validator

from flows.build_shards import build_shards
from flows.cli import run_cli
from flows.train import train
from pipeline.config import BuildConfig
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
    logger.info("built %d shards, group tightness %s", manifest["workers"], manifest["quality"]["group_tightness"])
    return train(config=config.train_config())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=(
        "build_shards then train (Prefect subflows). Without options: the digits demo, 4 workers, AGN."))
    ap.add_argument("--config", help="JSON file with {\"build\": {...}, \"train\": {...}} (the options below "
                    "override it)")
    ap.add_argument("--source", help="Parquet source or demo:... (default demo:digits)")
    ap.add_argument("--shards", help="shard folder (default ./shards)")
    ap.add_argument("--run", help="run folder (default ./runs/latest)")
    ap.add_argument("--workers", type=int, help="shards and workers (default 4)")
    ap.add_argument("--family", choices=["lsh", "pca", "itq", "kmeans"])
    ap.add_argument("--order", choices=["aligned", "stratified", "random", "contiguous"])
    ap.add_argument("--optimizer", choices=list(OPTIMIZERS))
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--keep", action="store_true", help="fail instead of replacing existing shards/run folders")
    args = ap.parse_args(argv)
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    build, tr = dict(base.get("build", {})), dict(base.get("train", {}))
    for key, dest, target in (("source", "source", build), ("shards", "out", build), ("workers", "workers", build),
                              ("family", "family", build), ("order", "order", build), ("seed", "seed", build),
                              ("run", "out", tr), ("optimizer", "optimizer", tr), ("epochs", "epochs", tr),
                              ("seed", "seed", tr)):
        if getattr(args, key) is not None:
            target[dest] = getattr(args, key)
    build.setdefault("overwrite", not args.keep)
    tr.setdefault("overwrite", not args.keep)
    code, config, summary = run_cli(lambda: PipelineConfig(build=build, train=tr), lambda c: pipeline(config=c),
                                    debug=False)
    if code:
        return code
    print(f"pipeline done: {summary['optimizer']} on {config.build.out}: final accuracy "
          f"{summary['final_accuracy']:.4f}, epochs to target {summary['epochs_to_target']}; run in "
          f"{config.train.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
