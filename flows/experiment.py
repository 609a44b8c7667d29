"""Prefect flow ``experiment`` and its CLI: does aligned sharding cut epochs-to-target? Measured over seeds.

    python -m flows.experiment [--config experiment/grids/NAME.toml] [--quick] [--part k/K] --out DIR

A rerun into the same ``--out`` continues where the last one stopped (every finished run is recorded);
``--part k/K`` runs every K-th run of the grid, and the run that finds every record writes the results.
"""

import datetime
import os
import platform
from pathlib import Path

import psutil
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from experiment.grid import DEFAULT_CONFIG, QUICK_CONFIG, load_config
from experiment.report import write_report
from experiment.runner import run_experiment
from flows import quick_exit, terminal
from flows.reporting import ProgressReporter, markdown_artifact, png_markdown, table_artifact
from flows.temporary_server import temporary_server
from pipeline.daskrt import dask_client
from storage import cli, urls
from storage.errors import InputError


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()}")


@task(name="run-grid", cache_policy=NO_CACHE)
def grid_task(config_path: str, out: str, progress, shown_out: str | None = None,
              part: tuple[int, int] | None = None) -> list[str] | None:
    """Run the grid into the local folder ``out``; ``shown_out``: the ``--out`` the user gave (a URL).
    Returns the plots, or None when other parts' runs are still missing."""
    cfg = load_config(Path(config_path))
    with dask_client(None, n_workers=2, threads_per_worker=1) as client:
        result = run_experiment(cfg, Path(out), client=client, progress=progress, part=part)
    if result is None:
        return None
    runs, curves, cells = result
    shown = Path(config_path)
    shown = shown.relative_to(Path.cwd()) if shown.is_absolute() and shown.is_relative_to(Path.cwd()) else shown
    target = "`single` on the dataset and model" if cfg.target == "single" else "the paired `random` cell"
    header = (f"# Experiment {shown.stem}\n\nCommand: `python -m flows.experiment --config {shown} --out "
              f"{shown_out or out}`"
              f"  \nMachine: {machine()}  \nDate: "
              f"{datetime.date.today().isoformat()}  \nTarget: {cfg.target_fraction:g} × mean final accuracy of "
              f"{target}.  \nRuns: {len(runs)}, {runs.cpu_seconds.sum() / 60:.1f} CPU minutes in all "
              f"(training; the runs' own CPU time, summed).")
    return [str(p) for p in write_report(Path(out), runs, curves, cells, header=header)]


@flow(name="experiment", log_prints=True)
def experiment(config: str = str(DEFAULT_CONFIG), out: str = "./experiments/latest",
               part: tuple[int, int] | None = None) -> str | None:
    """Run the grid of ``config`` (or its ``part`` k of K) into ``out`` (a local folder, or an fsspec URL that
    the results are uploaded to at the end, results.md last); returns the path of results.md, or None while
    other parts' runs are missing."""
    logger = get_run_logger()
    with urls.working_copy(out, last="results.md", keep="runs") as local:
        md = _run(config, str(local), out, part)
    if md is None:
        return None
    logger.info("results in %s/results.md", out)
    return md if not urls.is_url(out) else f"{out.rstrip('/')}/results.md"


def _run(config: str, out: str, shown_out: str, part: tuple[int, int] | None) -> str | None:
    progress = ProgressReporter(f"experiment {Path(config).stem}" + (f" part {part[0]}/{part[1]}" if part else ""))
    pngs = grid_task(config, out, progress, shown_out, part)
    progress.set(100)
    if pngs is None:
        return None
    import pandas as pd
    cells = pd.read_parquet(Path(out) / "cells.parquet")
    cols = ["mode", "dataset", "model", "optimizer", "workers", "schedule", "lr_scale", "epochs", "sharding",
            "epochs_to_target",
            "epochs_to_target_low", "epochs_to_target_high", "reached", "seeds", "ratio_to_random", "ratio_low",
            "ratio_high", "final_accuracy"]
    table_artifact("experiment-results", cells[[c for c in cols if c in cells]].to_dict("records"),
                   f"Experiment {Path(config).stem}: per-cell means and 95 % intervals over seeds")
    md = (Path(out) / "results.md").read_text()
    for p in pngs:
        md = md.replace(f"![{Path(p).name}]({Path(p).name})", png_markdown(p, Path(p).name))
    markdown_artifact("experiment-report", md, "experiment results and plots")
    return str(Path(out) / "results.md")


class ExperimentOptions(BaseModel):
    """The experiment's command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config: str | None = Field(None, description="experiment grid TOML (default: the packaged default grid)")
    quick: bool = Field(False, description="the small packaged grid quick.toml (under 3 minutes)")
    part: str | None = Field(None, description="k/K: run only part k of K of the grid (every K-th run); the parts "
                             "share --out, and a run that finds every record writes the results")
    out: str = Field(description="folder for results.parquet, results.md and plots: a local path, or an fsspec "
                     "URL the results are uploaded to when the grid has run")

    def grid(self) -> str:
        return self.config or str(QUICK_CONFIG if self.quick else DEFAULT_CONFIG)

    @field_validator("part")
    @classmethod
    def _part(cls, v: str | None) -> str | None:
        if v is not None:
            k, sep, n = v.partition("/")
            if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
                raise ValueError(f"{v!r} is not k/K with 1 <= k <= K (for example 2/4)")
        return v

    def part_numbers(self) -> tuple[int, int] | None:
        return None if self.part is None else tuple(int(x) for x in self.part.split("/"))


def main(argv=None) -> int:
    parser = cli.model_parser(ExperimentOptions, prog="python -m flows.experiment", description=(
        "Do aligned hash shards reach a target accuracy in fewer epochs than random or contiguous shards? "
        "Runs a grid with several seeds and reports means with 95 % intervals."))
    values, common = cli.split_common(parser.parse_args(argv))
    terminal.configure(common)

    def command() -> int:
        options = ExperimentOptions(**values)
        grid = options.grid()
        if not Path(grid).is_file():
            raise InputError(f"--config {grid} does not exist")
        try:
            load_config(Path(grid))
        except (ValueError, OSError) as exc:
            raise InputError(f"--config {grid} is not a valid experiment grid: {cli.one_line(exc)}") from None
        try:
            urls.check_backend(options.out, flag="--out")
        except ValueError as exc:
            raise InputError(str(exc)) from None
        with temporary_server():
            path = experiment(config=grid, out=options.out, part=options.part_numbers())
        if path is None:
            print(f"part {options.part} done; other parts' runs are still missing in {options.out}: run them, "
                  "then run once more without --part to write the results")
            return 0
        print(urls.folder(path).read_text().split("\n\n![")[0])
        return 0

    return cli.run(command, debug=common.debug)


if __name__ == "__main__":
    quick_exit.exit(main())
