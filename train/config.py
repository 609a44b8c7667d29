"""The train parameters: one pydantic model shared by the CLI, the Prefect flow, the launcher and the simulator."""

import dataclasses
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.urls import known_backend, storage_options_field

OPTIMIZERS = ("downpour", "agn", "adag", "dynsgd", "aeasgd", "eamsgd", "averaging", "single")
# communication window λ by optimizer when --window is not given (dist-keras defaults of the thesis)
DEFAULT_WINDOW = {"downpour": 5, "dynsgd": 5, "agn": 12, "adag": 12, "aeasgd": 32, "eamsgd": 32, "averaging": 32,
                  "single": 1}
DEFAULT_LOCAL = {"aeasgd": "sgd", "eamsgd": "momentum"}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05, "momentum": 0.01}
# default epochs: enough for about this many local steps per worker, within EPOCH_RANGE
STEP_BUDGET = 400
EPOCH_RANGE = (5, 100)
COMMITS_PER_EPOCH = 4  # the default λ is capped so that every worker commits at least this often per epoch
ONLINE_WORKERS = 4  # --workers by default with --index (an index has no shard count to follow)


@dataclasses.dataclass(frozen=True)
class RunLength:
    """The resolved length of a run: ``epochs``, window ``window`` (λ) and local ``steps_per_epoch`` of the
    smallest shard in use; ``reason`` says how defaults were chosen (logged)."""

    epochs: int
    window: int
    steps_per_epoch: int
    reason: str


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: str = Field("./shards", description="shard set written by build_shards: a local "
                        "folder or an fsspec URL")
    index: str | None = Field(None, description="index folder written by build_index: train with online "
                              "coordination instead of pre-split shards")
    cache_mb: float = Field(256.0, gt=0, description="with --index: MiB of index row groups each worker keeps")
    out: str = Field("./runs/latest", description="run folder for model, metrics, summary and plots: a local "
                     "path, or an fsspec URL that the finished run is uploaded to")
    optimizer: Literal[OPTIMIZERS] = Field(
        "agn", description="update rule (thesis names; dist-keras's ADAG class is AGN)")
    local_optimizer: Literal["sgd", "momentum", "adam"] | None = Field(
        None, description="worker step: adam, except sgd for aeasgd and Nesterov momentum for eamsgd")
    lr: float | None = Field(None, gt=0, description="local learning rate (default: adam 1e-3, sgd 0.05, "
                             "momentum 0.01)")
    window: int | None = Field(None, ge=1, description="communication window λ in local steps (default: "
                               "downpour/dynsgd 5, agn/adag 12, (a)easgd/averaging 32, capped so that a worker "
                               "commits at least 4 times per epoch)")
    rho: float = Field(5.0, gt=0, description="elastic force ρ of (A)EASGD: α = ρ·lr")
    gamma: float = Field(1e-4, gt=0, description="ADAG's γ")
    batch_size: int = Field(32, ge=1, description="rows per local step")
    epochs: int | None = Field(None, ge=1, description="passes over each shard (default: enough for about 400 "
                               "local steps per worker, 5 to 100)")
    workers: int | None = Field(None, ge=1, description="workers n (default: one per shard, never more; "
                                "with --index 4)")
    model: str | None = Field(None, description="module:factory returning a torch.nn.Module for "
                              "(input_dim, num_classes); default an MLP features -> 128 -> classes")
    target_accuracy: float = Field(0.9, gt=0, le=1, description="validation accuracy for epochs_to_target")
    eval_every: int | None = Field(None, ge=1, description="evaluate θ̃ every K commits (default: ~8 per epoch)")
    checkpoint_every: int | None = Field(None, ge=1, description="checkpoint every K commits (default 10 × "
                                         "eval_every); always at the end")
    seed: int = Field(0, description="seed for model init and epoch shuffles")
    resume: bool = Field(False, description="continue from the checkpoint in --out")
    threads: int = Field(1, ge=1, description="torch intra-op threads per process (1 avoids a 35x slowdown)")
    join_timeout: float = Field(90.0, gt=0, description="seconds for every rank to join before the launch fails")
    worker_timeout: float = Field(120.0, gt=0, description="seconds without a message before a worker is "
                                  "declared dead (multi-host runs; the local launcher sees exits at once)")
    overwrite: bool = Field(False, description="replace an existing run folder")

    storage_options: dict[str, Any] | None = storage_options_field("--shards, --index and --out")
    _known_backend = field_validator("shards", "index", "out")(known_backend)

    @model_validator(mode="after")
    def _one_source(self) -> "TrainConfig":
        if self.index is not None and "shards" in self.model_fields_set:
            raise ValueError("pass --shards (pre-split shards) or --index (online coordination), not both")
        if self.index is not None and self.resume:
            raise ValueError("--resume: a run with --index cannot resume yet; start it again")
        return self

    @property
    def data(self) -> str:
        """The folder training reads: the index, or the shard set."""
        return self.index or self.shards

    def resolved_local(self) -> str:
        return self.local_optimizer or DEFAULT_LOCAL.get(self.optimizer, "adam")

    def resolved_lr(self) -> float:
        return self.lr or DEFAULT_LR[self.resolved_local()]

    def default_window(self) -> int:
        """The optimizer's dist-keras λ, before any cap."""
        return DEFAULT_WINDOW[self.optimizer]

    def run_length(self, *, shard_rows: int) -> RunLength:
        """Epochs and λ for shards of at least ``shard_rows`` rows. Defaults follow the data: dist-keras's λ
        assumes shards of thousands of steps, and on a small shard (the digits demo: 13 steps per epoch) λ=12
        would mean one commit per worker per epoch; so λ is capped at a quarter of the steps per epoch, and
        the epoch count gives every worker about STEP_BUDGET local steps."""
        steps = max(1, math.ceil(shard_rows / self.batch_size))
        notes = []
        if self.optimizer == "single":
            window = 1
        elif self.window:
            window = self.window
        else:
            window = min(self.default_window(), max(1, steps // COMMITS_PER_EPOCH))
            if window < self.default_window():
                notes.append(f"λ {window} ({self.optimizer}'s default {self.default_window()} capped at a quarter of "
                             f"the {steps} steps a worker has per epoch)")
        epochs = self.epochs
        if epochs is None:
            lo, hi = EPOCH_RANGE
            epochs = min(hi, max(lo, math.ceil(STEP_BUDGET / steps)))
            notes.append(f"{epochs} epochs (about {STEP_BUDGET} local steps of {steps} per epoch)")
        return RunLength(epochs, window, steps, "; ".join(notes))
