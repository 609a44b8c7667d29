"""Start one rank of a training run from torchrun-compatible variables, for users who launch ranks themselves.

    RANK=0 WORLD_SIZE=3 MASTER_ADDR=10.0.0.5 MASTER_PORT=29500 python -m train.node --shards DIR --out RUN ...

Rank 0 is the parameter server, rank k+1 is worker k; every rank gets the same train options, and every
worker host needs the shard folder at the same path. The parameter server binds the rendezvous to
MASTER_ADDR:MASTER_PORT (use 127.0.0.1 for a one-machine test); set TP_SOCKET_IFNAME to the interface the
ranks should talk over. A worker that stays silent for --worker-timeout seconds is declared dead.
"""

import os
import sys

from storage import cli, urls
from storage.errors import InputError
from train import rpc, session
from train.config import TrainConfig


def rank_from_env() -> tuple[int, int, str, int]:
    """(rank, world size, master address, master port) from torchrun-compatible variables."""
    try:
        return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]))
    except (KeyError, ValueError) as exc:
        raise InputError(f"set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun-compatible); "
                         f"{exc} is missing or not a number") from None


def main(argv=None) -> int:
    parser = cli.model_parser(TrainConfig, prog="python -m train.node", description=(
        "Run one rank of a training run (rank 0: parameter server; rank k+1: worker k) from torchrun-compatible "
        "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT."))
    values, common = cli.split_common(parser.parse_args(argv))
    cli.configure_logging(common.log_level)

    def command() -> int:
        rank, world, addr, port = rank_from_env()
        config = TrainConfig(**values)
        if urls.is_url(config.out):
            raise InputError(f"--out {config.out}: train.node writes its run folder where every rank sees it; pass "
                             "a shared local path (python -m flows.train uploads a run folder to a URL)")
        setup = session.prepare(config, create_out=rank == 0)
        if world != setup.workers + 1:
            raise InputError(f"WORLD_SIZE={world}, but this run has {setup.workers} workers + 1 parameter server; "
                             f"set WORLD_SIZE={setup.workers + 1} or --workers {world - 1}")
        init_method = f"tcp://{addr}:{port}"
        if rank == 0:
            summary = rpc.serve(config, rank=0, world_size=world, init_method=init_method)
            print(f"final accuracy {summary['final_accuracy']:.4f}; outputs in {config.out}")
        else:
            rpc.work(config, rank - 1, rank=rank, world_size=world, init_method=init_method)
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    sys.exit(main())
