"""Running simshard's command lines as a user does: a subprocess, its exit code and its whole stderr."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, *args, cwd, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=timeout)


def run_modules(*runs: tuple, cwd, env: dict | None = None, timeout: float = 300) -> list:
    """Several command lines ``(module, *args)`` at once (each still its own process; they start in parallel,
    which halves the import time they spend on two cores); their CompletedProcesses in order. ``cwd``: one
    working directory for all, or a list of one per run."""
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    folders = cwd if isinstance(cwd, list) else [cwd] * len(runs)
    procs = [subprocess.Popen([sys.executable, "-m", module, *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=folder, env=environment)
             for (module, *args), folder in zip(runs, folders, strict=True)]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def assert_one_error_line(res: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """The run failed with ``code`` and its whole stderr is one ``error:`` line holding every fragment."""
    assert res.returncode == code, (res.returncode, res.stderr[-3000:], res.stdout[-3000:])
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr[-3000:]
    for fragment in fragments:
        assert fragment in res.stderr, (fragment, res.stderr)
    assert "Traceback" not in res.stdout, res.stdout[-3000:]
    return res.stderr
