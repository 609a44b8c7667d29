"""Start one rank of a training run from torchrun-compatible variables, for users who launch ranks themselves.

    RANK=0 WORLD_SIZE=3 MASTER_ADDR=10.0.0.5 MASTER_PORT=29500 python -m train.node --shards DIR --out RUN ...

Rank 0 is the parameter server, rank k+1 is worker k; every rank gets the same train options, and every
worker host needs the shard folder at the same path. The parameter server binds the rendezvous to
MASTER_ADDR:MASTER_PORT (use 127.0.0.1 for a one-machine test); set TP_SOCKET_IFNAME to the interface the
ranks should talk over. A worker that stays silent for --worker-timeout seconds is declared dead.
"""

import logging
import os
import sys

from flows.train import parse_config
from storage.errors import InputError
from train import rpc, session


def main(argv=None) -> int:
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError) as exc:
        print(f"error: set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun-compatible): {exc}",
              file=sys.stderr)
        return 2
    config = parse_config(argv, prog="python -m train.node")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(message)s")
    init_method = f"tcp://{addr}:{port}"
    try:
        setup = session.prepare(config, create_out=rank == 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if world != setup.workers + 1:
        print(f"error: WORLD_SIZE={world}, but this run has {setup.workers} workers + 1 parameter server",
              file=sys.stderr)
        return 2
    if rank == 0:
        summary = rpc.serve(config, rank=0, world_size=world, init_method=init_method)
        print(f"final accuracy {summary['final_accuracy']:.4f}; outputs in {config.out}")
    else:
        try:
            rpc.work(config, rank - 1, rank=rank, world_size=world, init_method=init_method)
        except SystemExit as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
