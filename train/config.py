"""The train parameters: one pydantic model shared by the CLI, the Prefect flow, the launcher and the simulator."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPTIMIZERS = ("downpour", "agn", "adag", "dynsgd", "aeasgd", "eamsgd", "averaging", "single")
# communication window λ by optimizer when --window is not given (dist-keras defaults of the thesis)
DEFAULT_WINDOW = {"downpour": 5, "dynsgd": 5, "agn": 12, "adag": 12, "aeasgd": 32, "eamsgd": 32, "averaging": 32,
                  "single": 1}
DEFAULT_LOCAL = {"aeasgd": "sgd", "eamsgd": "momentum"}
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05, "momentum": 0.01}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: str = Field("./shards", description="shard folder written by build_shards")
    out: str = Field("./runs/latest", description="run folder for model, metrics, summary and plots")
    optimizer: Literal["downpour", "agn", "adag", "dynsgd", "aeasgd", "eamsgd", "averaging", "single"] = Field(
        "agn", description="update rule (thesis names; dist-keras's ADAG class is AGN)")
    local_optimizer: Literal["sgd", "momentum", "adam"] | None = Field(
        None, description="worker step: adam, except sgd for aeasgd and Nesterov momentum for eamsgd")
    lr: float | None = Field(None, gt=0, description="local learning rate (default: adam 1e-3, sgd 0.05, "
                             "momentum 0.01)")
    window: int | None = Field(None, ge=1, description="communication window λ in local steps (default: "
                               "downpour/dynsgd 5, agn/adag 12, (a)easgd/averaging 32)")
    rho: float = Field(5.0, gt=0, description="elastic force ρ of (A)EASGD: α = ρ·lr")
    gamma: float = Field(1e-4, gt=0, description="ADAG's γ")
    batch_size: int = Field(32, ge=1, description="rows per local step")
    epochs: int = Field(5, ge=1, description="passes over each shard")
    workers: int | None = Field(None, ge=1, description="workers n (default: one per shard; never more)")
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

    def resolved_local(self) -> str:
        return self.local_optimizer or DEFAULT_LOCAL.get(self.optimizer, "adam")

    def resolved_lr(self) -> float:
        return self.lr or DEFAULT_LR[self.resolved_local()]

    def resolved_window(self) -> int:
        return self.window or DEFAULT_WINDOW[self.optimizer]
