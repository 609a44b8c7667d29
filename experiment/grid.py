"""The experiment's grid: what to compare (a TOML file validated by pydantic) and the list of runs it expands to.

Grids ship with the package (``experiment/grids/*.toml``): ``default``, ``quick`` (a few minutes), ``v2`` (the
README's figures) and ``v2-slice``. A grid is the product of its lists, or the union of its ``[[blocks]]``:
each block is a sub-grid whose unset fields take the grid's, so a grid can spend its budget where the
question is (64 workers on one optimizer, say) instead of on the whole product.
"""

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GRIDS = Path(__file__).resolve().parent / "grids"
DEFAULT_CONFIG = GRIDS / "default.toml"
QUICK_CONFIG = GRIDS / "quick.toml"
# what a cell is: every run field but the seed
KEYS = ["mode", "dataset", "model", "optimizer", "workers", "schedule", "lr_scale", "epochs", "sharding"]
MODELS = {"mlp": None, "cnn1d": "train.cnn1d:cnn1d"}  # grid name -> TrainConfig.model (None: the default MLP)
REFERENCES = ("single", "averaging")


class Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    source: str


class RpcCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    model: str = "mlp"
    optimizer: str = "agn"
    workers: int = 4
    lr_scale: float = 1.0
    epochs: int | None = Field(None, description="default: the grid's")
    shardings: list[str] = ["aligned-kmeans", "random", "contiguous-sorted"]
    seeds: list[int] = [0, 1, 2]


class Block(BaseModel):
    """A sub-grid: every field left unset takes the grid's value. ``datasets`` names the grid's datasets."""

    model_config = ConfigDict(extra="forbid")
    datasets: list[str] | None = None
    models: list[str] | None = None
    shardings: list[str] | None = None
    optimizers: list[str] | None = None
    references: list[str] | None = None
    workers: list[int] | None = None
    lr_scales: list[float] | None = None
    seeds: list[int] | None = None
    schedules: list[str] | None = None
    epochs: int | None = None


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    datasets: list[Dataset]
    models: list[Literal[tuple(MODELS)]] = ["mlp"]
    shardings: list[str] = ["aligned-kmeans", "aligned-pca", "stratified", "random", "contiguous",
                            "contiguous-sorted"]
    optimizers: list[str] = ["downpour", "agn", "adag", "dynsgd", "aeasgd"]
    references: list[Literal[REFERENCES]] = ["averaging", "single"]
    workers: list[int] = [4, 8]
    lr_scales: list[float] = Field([1.0, 4.0], description="multiples of each optimizer's default local lr")
    seeds: list[int] = [0, 1, 2, 3, 4]
    schedules: list[Literal["round-robin", "random", "heterogeneous"]] = ["round-robin"]
    epochs: int = 8
    batch_size: int = 32
    evals_per_epoch: int = 8
    target_fraction: float = 0.95
    target: Literal["single", "random"] = Field(
        "single", description="what the target accuracy is a fraction of: the mean final accuracy of `single` "
        "on the dataset and model, or of the `random` cell the run is paired with")
    blocks: list[Block] = []
    rpc_check: RpcCheck | None = None


@dataclass(frozen=True)
class Run:
    """One training run of the grid. ``schedule`` is "rpc" for real-RPC runs."""

    mode: str
    dataset: str
    model: str
    optimizer: str
    workers: int
    schedule: str
    lr_scale: float
    epochs: int
    sharding: str
    seed: int

    def fingerprint(self, cfg: ExperimentConfig) -> str:
        """A run's cache key: its fields, its dataset's source and the grid's training settings."""
        source = next(d.source for d in cfg.datasets if d.name == self.dataset)
        key = dict(asdict(self), source=source, batch_size=cfg.batch_size, evals_per_epoch=cfg.evals_per_epoch)
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

    def name(self) -> str:
        return "-".join(str(v) for v in asdict(self).values())


def load_config(path: Path) -> ExperimentConfig:
    with open(path, "rb") as fh:
        return ExperimentConfig(**tomllib.load(fh))


def _block_runs(cfg: ExperimentConfig, b: Block) -> list[Run]:
    get = lambda field: getattr(b, field) if getattr(b, field) is not None else getattr(cfg, field)  # noqa: E731
    names = {d.name for d in cfg.datasets}
    datasets = get("datasets") if b.datasets is not None else [d.name for d in cfg.datasets]
    unknown = sorted(set(datasets) - names)
    if unknown:
        raise ValueError(f"a block names datasets {unknown} that the grid does not define")
    epochs, runs = get("epochs"), []
    for d, m, w, lr, sched, seed in itertools.product(datasets, get("models"), get("workers"), get("lr_scales"),
                                                      get("schedules"), get("seeds")):
        runs += [Run("sim", d, m, opt, w, sched, lr, epochs, s, seed)
                 for opt in get("optimizers") for s in get("shardings")]
        if "averaging" in get("references"):
            runs.append(Run("sim", d, m, "averaging", w, sched, lr, epochs, "random", seed))
        if "single" in get("references"):
            runs.append(Run("sim", d, m, "single", 1, "round-robin", 1.0, epochs, "random", seed))
    return runs


def plan(cfg: ExperimentConfig) -> list[Run]:
    """Every run of the grid, each once, in a fixed order (the blocks', or the whole product's; references on
    random shards: ``single`` once per dataset, model, epochs and seed, ``averaging`` per cell group)."""
    runs: dict[Run, None] = {}
    for block in cfg.blocks or [Block()]:
        runs.update(dict.fromkeys(_block_runs(cfg, block)))
    if cfg.rpc_check:
        r = cfg.rpc_check
        runs.update(dict.fromkeys(Run("rpc", r.dataset, r.model, r.optimizer, r.workers, "rpc", r.lr_scale,
                                      r.epochs or cfg.epochs, s, seed) for s in r.shardings for seed in r.seeds))
    return list(runs)


def part_of(runs: list[Run], part: tuple[int, int] | None) -> list[Run]:
    """Part k of K (1-based) of ``runs``: every K-th run from the k-th, so that parts cost about the same."""
    if part is None:
        return runs
    k, n = part
    return runs[k - 1::n]
