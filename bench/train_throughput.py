"""Parameter-server throughput against a bare RPC echo of the same payload, side by side in one run.

    python bench/train_throughput.py [--params 100000] [--seconds 5] [--workers 1,2,4]
                                     [--online-rows 60000] [--online-workers 2,4]

Part 1, for each worker count: n worker processes send (a) commit+pull round trips to the real
ParameterServer (AGN rule, the full per-commit bookkeeping: staleness, update norm, conflict cosine) and (b) a
bare echo of the same float32 payload. Prints round trips per second of each and the ratio (target >= 0.7).

Part 2, online coordination against pre-split shards: one source (demo:blobs) built as N aligned shards and
as an index, then the same AGN training (same model, λ, epochs, workers) over real RPC from each. Prints
commits/s of each, the ratio (target >= 0.8) and the workers' bucket-cache hit rate.
"""

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import torch
import torch.distributed.rpc as rpc

from pipeline.build import build_shards
from pipeline.config import BuildConfig
from pipeline.index import IndexConfig
from train import rpc as transport
from train.config import TrainConfig
from train.launcher import launch
from train.rules import make_rule
from train.server import ParameterServer


def echo(x: torch.Tensor) -> torch.Tensor:
    return x


def _worker(rank: int, world: int, init: str, params: int, seconds: float, results):
    torch.set_num_threads(1)
    rpc.init_rpc(f"worker{rank - 1}", rank=rank, world_size=world, rpc_backend_options=transport.backend_options(init))
    payload = torch.randn(params) * 1e-3
    for mode in ("echo", "commit"):
        rpc.rpc_sync("ps", time.sleep, args=(0,))  # both modes start warm
        n, clock, end = 0, 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            if mode == "echo":
                rpc.rpc_sync("ps", echo, args=(payload,))
            else:
                _, clock, _ = rpc.rpc_sync("ps", transport._commit, args=(rank - 1, payload, clock, 32, (0, 0), 0.0))
            n += 1
        results[f"{mode}{rank}"] = n / seconds
    rpc.rpc_sync("ps", time.sleep, args=(0,))
    rpc.shutdown()


def _server(world: int, init: str, params: int, workers: int):
    torch.set_num_threads(1)
    transport._SERVER = ParameterServer(rule=make_rule("agn", lr=1e-3), centre=torch.zeros(params),
                                        workers=workers, train_rows=10**9, eval_every=10**9,
                                        on_snapshot=lambda *a: None)
    rpc.init_rpc("ps", rank=0, world_size=world, rpc_backend_options=transport.backend_options(init))
    rpc.shutdown()


def measure(workers: int, params: int, seconds: float) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    results = ctx.Manager().dict()
    init = f"file://{tempfile.mktemp(prefix='simshard-bench-')}"
    world = workers + 1
    procs = [ctx.Process(target=_server, args=(world, init, params, workers))]
    procs += [ctx.Process(target=_worker, args=(r, world, init, params, seconds, results)) for r in range(1, world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120 + 3 * seconds)
        if p.is_alive():
            p.kill()
    return (sum(v for k, v in results.items() if k.startswith("commit")),
            sum(v for k, v in results.items() if k.startswith("echo")))


def online_vs_presplit(rows: int, workers: list[int], folder: str) -> None:
    source = f"demo:blobs?rows={rows}&dim=16&clusters=8&seed=1"
    print(f"\nonline coordination vs pre-split shards: {source}, AGN, λ 12, batch 32, 3 epochs")
    print(f"{'workers':>7} {'pre-split/s':>11} {'online/s':>9} {'ratio':>6} {'cache hits':>10} {'tightness':>17}")
    index = f"{folder}/index"
    build_shards(IndexConfig(source=source, out=index).build_config(), kind="index")
    for n in workers:
        shards = f"{folder}/shards-{n}"
        build_shards(BuildConfig(source=source, out=shards, workers=n))
        common = dict(workers=n, window=12, epochs=3, eval_every=50, overwrite=True)
        pre = launch(TrainConfig(shards=shards, out=f"{folder}/run-shards-{n}", **common))
        onl = launch(TrainConfig(index=index, out=f"{folder}/run-index-{n}", **common))
        ratio = onl["commits_per_second"] / pre["commits_per_second"]
        print(f"{n:>7} {pre['commits_per_second']:>11.1f} {onl['commits_per_second']:>9.1f} {ratio:>6.2f} "
              f"{onl['cache_hit_rate']:>10.3f} {pre['step_tightness']:>8.3f}/{onl['step_tightness']:.3f}",
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--online-rows", type=int, default=60_000, help="0 skips part 2")
    ap.add_argument("--online-workers", default="2,4")
    args = ap.parse_args()
    os.environ.setdefault("TP_SOCKET_IFNAME", "lo")
    print(f"payload {args.params} float32 ({args.params * 4 / 2**20:.2f} MiB) each way; {os.cpu_count()} cores")
    print(f"{'workers':>7} {'commits/s':>10} {'echo/s':>9} {'ratio':>6}")
    for n in map(int, args.workers.split(",")):
        commits, echoes = measure(n, args.params, args.seconds)
        print(f"{n:>7} {commits:>10.0f} {echoes:>9.0f} {commits / echoes:>6.2f}", flush=True)
    if args.online_rows:
        with tempfile.TemporaryDirectory(prefix="simshard-bench-") as folder:
            online_vs_presplit(args.online_rows, [int(n) for n in args.online_workers.split(",")], folder)


if __name__ == "__main__":
    main()
