"""Prefect flow ``experiment`` and its CLI: does aligned sharding cut epochs-to-target? Measured over seeds.

    python -m flows.experiment [--config bench/experiments/NAME.toml] [--quick] --out DIR
"""

import argparse
import base64
import datetime
import os
import platform
import sys
from pathlib import Path

import psutil
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.reporting import ProgressReporter, table_artifact
from pipeline.daskrt import dask_client
from train.experiment import DEFAULT_CONFIG, QUICK_CONFIG, load_config, run_experiment
from train.experiment_report import write_report


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


@task(name="run-grid", cache_policy=NO_CACHE)
def grid_task(config_path: str, out: str, progress) -> list[str]:
    cfg = load_config(Path(config_path))
    with dask_client(None, n_workers=2, threads_per_worker=1) as client:
        runs, curves, cells = run_experiment(cfg, Path(out), client=client, progress=progress)
    shown = Path(config_path)
    shown = shown.relative_to(Path.cwd()) if shown.is_absolute() and shown.is_relative_to(Path.cwd()) else shown
    header = (f"# Experiment {shown.stem}\n\nCommand: `python -m flows.experiment --config {shown} --out {out}`"
              f"  \nMachine: {machine()}  \nDate: "
              f"{datetime.date.today().isoformat()}  \nTarget: {cfg.target_fraction:g} × mean final accuracy of "
              f"`single` per dataset; {len(cfg.seeds)} seeds; schedule {cfg.schedule}; {cfg.epochs} epochs.")
    return [str(p) for p in write_report(Path(out), runs, curves, cells, header=header)]


@flow(name="experiment", log_prints=True)
def experiment(config: str = str(DEFAULT_CONFIG), out: str = "./experiments/latest") -> str:
    """Run the grid of ``config``; returns the path of results.md."""
    logger = get_run_logger()
    progress = ProgressReporter(f"experiment {Path(config).stem}")
    pngs = grid_task(config, out, progress)
    progress.set(100)
    import pandas as pd
    cells = pd.read_parquet(Path(out) / "cells.parquet")
    cols = ["mode", "dataset", "optimizer", "workers", "lr_scale", "sharding", "epochs_to_target",
            "epochs_to_target_low", "epochs_to_target_high", "reached", "seeds", "ratio_to_random", "ratio_low",
            "ratio_high", "final_accuracy"]
    table_artifact("experiment-results", cells[[c for c in cols if c in cells]].round(4).to_dict("records"),
                   f"Experiment {Path(config).stem}: per-cell means and 95 % intervals over seeds")
    md = (Path(out) / "results.md").read_text()
    for p in pngs:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        md = md.replace(f"]({Path(p).name})", f"](data:image/png;base64,{data})")
    create_markdown_artifact(key="experiment-report", markdown=md, description="experiment results and plots")
    logger.info("results in %s", Path(out) / "results.md")
    return str(Path(out) / "results.md")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.experiment", description=(
        "Do aligned hash shards reach a target accuracy in fewer epochs than random or contiguous shards? "
        "Runs a grid with several seeds and reports means with 95 % intervals."))
    ap.add_argument("--config", help="experiment TOML (default: bench/experiments/default.toml)")
    ap.add_argument("--quick", action="store_true", help="the small grid of bench/experiments/quick.toml "
                    "(under 3 minutes)")
    ap.add_argument("--out", required=True, help="run folder for results.parquet, results.md and plots")
    args = ap.parse_args(argv)
    config = args.config or str(QUICK_CONFIG if args.quick else DEFAULT_CONFIG)
    if not Path(config).is_file():
        print(f"error: --config {config} does not exist", file=sys.stderr)
        return 2
    path = experiment(config=config, out=args.out)
    print(Path(path).read_text().split("\n\n![")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
