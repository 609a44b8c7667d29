"""The experiment's grid: what to compare (a TOML file validated by pydantic) and the list of runs it expands to.

Grids ship with the package (``experiment/grids/*.toml``): ``default`` (the README's figures) and ``quick``
(a few minutes).
"""

import itertools
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

GRIDS = Path(__file__).resolve().parent / "grids"
DEFAULT_CONFIG = GRIDS / "default.toml"
QUICK_CONFIG = GRIDS / "quick.toml"
KEYS = ["mode", "dataset", "optimizer", "workers", "lr_scale", "sharding"]


class Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    source: str


class RpcCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    optimizer: str = "agn"
    workers: int = 4
    lr_scale: float = 1.0
    shardings: list[str] = ["aligned-kmeans", "random", "contiguous-sorted"]
    seeds: list[int] = [0, 1, 2]


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    datasets: list[Dataset]
    shardings: list[str] = ["aligned-kmeans", "aligned-pca", "stratified", "random", "contiguous",
                            "contiguous-sorted"]
    optimizers: list[str] = ["downpour", "agn", "adag", "dynsgd", "aeasgd"]
    references: list[str] = ["averaging", "single"]
    workers: list[int] = [4, 8]
    lr_scales: list[float] = Field([1.0, 4.0], description="multiples of each optimizer's default local lr")
    seeds: list[int] = [0, 1, 2, 3, 4]
    epochs: int = 8
    batch_size: int = 32
    evals_per_epoch: int = 8
    target_fraction: float = 0.95
    schedule: str = "round-robin"
    rpc_check: RpcCheck | None = None


def load_config(path: Path) -> ExperimentConfig:
    with open(path, "rb") as fh:
        return ExperimentConfig(**tomllib.load(fh))


def plan(cfg: ExperimentConfig) -> list[dict]:
    """Every run of the grid: references once per (dataset, workers, lr, seed) on random shards."""
    runs = []
    for d, w, lr, seed in itertools.product(cfg.datasets, cfg.workers, cfg.lr_scales, cfg.seeds):
        for opt in cfg.optimizers:
            runs += [dict(mode="sim", dataset=d.name, optimizer=opt, workers=w, lr_scale=lr, sharding=s, seed=seed)
                     for s in cfg.shardings]
        runs += [dict(mode="sim", dataset=d.name, optimizer=opt, workers=w, lr_scale=lr, sharding="random",
                      seed=seed) for opt in cfg.references if opt != "single"]
    for d, seed in itertools.product(cfg.datasets, cfg.seeds):
        if "single" in cfg.references:
            runs.append(dict(mode="sim", dataset=d.name, optimizer="single", workers=1, lr_scale=1.0,
                             sharding="random", seed=seed))
    if cfg.rpc_check:
        r = cfg.rpc_check
        runs += [dict(mode="rpc", dataset=r.dataset, optimizer=r.optimizer, workers=r.workers, lr_scale=r.lr_scale,
                      sharding=s, seed=seed) for s in r.shardings for seed in r.seeds]
    return runs
