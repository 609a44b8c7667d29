"""Named fault-injection points, so that tests can kill a build at each step of its publish sequence.

``SIMSHARD_FAULT=<point>`` makes the process SIGKILL itself when it reaches ``point`` (nothing runs after:
no ``finally``, no ``atexit``), exactly like a machine or an operator killing it there. Points, in order:
``after-data`` (every part file written), ``before-commit`` (quality measured, the manifest not yet
created), ``after-commit`` (the manifest created, the build's lease and old prefixes not yet cleaned).

``SIMSHARD_FAULT=part-written:<k>`` kills the build once the driver has seen its k-th part file of the write pass
finish (counted from this run's start), so that a test can kill it part-way through the write pass.

``SIMSHARD_HOLD=<point>:<folder>`` makes the process wait at ``point`` instead: it creates
``<folder>/<pid>.reached`` and goes on once ``<folder>/go`` exists, so that a test can line two builds up at
the same step (two concurrent commits).
"""

import os
import signal
import time
from pathlib import Path

HOLD_LIMIT_S = 300

POINTS = ("after-data", "before-commit", "after-commit")


def point(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    if os.environ.get("SIMSHARD_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    held, _, folder = os.environ.get("SIMSHARD_HOLD", "").partition(":")
    if held == name:
        (Path(folder) / f"{os.getpid()}.reached").touch()
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def part_written(count: int) -> None:
    """The write pass has finished ``count`` part files in this run."""
    if os.environ.get("SIMSHARD_FAULT") == f"part-written:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
