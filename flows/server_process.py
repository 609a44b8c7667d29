"""The process of Prefect's temporary server, and its early start for a flow CLI.

Starting the server (uvicorn importing Prefect's API app) takes about 4 s of one core on the development
machine, and a flow CLI's own imports about 2 s of the other. :func:`prestart` runs from the ``flows`` package's
import when the command line is ``python -m flows.<a flow CLI>`` (never for a library import, a test run or a
deployment), so that the two overlap; :func:`flows.temporary_server.temporary_server` then adopts that process,
or stops it when the run reports to a configured server after all (``PREFECT_API_URL`` in a Prefect profile).

This module imports no Prefect code: it runs before Prefect is imported.
"""

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STOP_GRACE_S = 5.0
# the server process: Prefect's API app under uvicorn (as `uvicorn --factory ...create_app` runs it), its
# imports and app made with garbage collection paused, as flows.startup_gc does for a CLI. Written out here, not
# imported: importing flows.startup_gc would run flows/__init__, which imports Dask. argv: the folder holding
# the prefect package (first on sys.path, in place of the working directory), the port.
SERVER_MAIN = """
import gc, sys
gc.disable()
sys.path[0] = sys.argv[1]
from prefect.server.api.server import create_app
app = create_app()
gc.freeze()
gc.enable()
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error", lifespan="on")
"""
# the flow CLIs that report to Prefect (the modules that enter temporary_server())
FLOW_CLIS = frozenset({"flows.build_shards", "flows.build_index", "flows.train", "flows.pipeline",
                       "flows.experiment", "flows.verify"})


@dataclass
class ServerProcess:
    """A started server: its process, port and the file its stderr goes to."""

    proc: subprocess.Popen
    port: int
    errors: IO[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errors.close()


_prestarted: ServerProcess | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> ServerProcess:
    """Start Prefect's API app under uvicorn on 127.0.0.1 and a free port, the UI and background services off,
    in a session of its own (Ctrl-C in the terminal reaches the driver only). Returns at once; the caller waits
    for it to answer."""
    port, errors = free_port(), tempfile.TemporaryFile(mode="w+")
    prefect_root = Path(importlib.util.find_spec("prefect").origin).parent.parent
    env = dict(os.environ, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    proc = subprocess.Popen([sys.executable, "-c", SERVER_MAIN, str(prefect_root), str(port)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                            start_new_session=True)
    return ServerProcess(proc, port, errors)


def flow_cli_of(argv: list[str]) -> str | None:
    """The flow CLI module that ``argv`` (an interpreter's full command line, ``sys.orig_argv``) runs with
    ``-m``, or None (a script, another module, ``--help``)."""
    try:
        module = argv[argv.index("-m") + 1]
    except (ValueError, IndexError):
        return None
    rest = argv[argv.index("-m") + 2:]
    if module not in FLOW_CLIS or "-h" in rest or "--help" in rest:
        return None
    return module


def prestart() -> None:
    """Start the server now when this interpreter runs a flow CLI and no ``PREFECT_API_URL`` is in the
    environment. A reaper (:mod:`flows.reaper`) starts first, and an exit before the run adopts the server
    (a bad argument) stops it."""
    global _prestarted
    if _prestarted is not None or os.environ.get("PREFECT_API_URL") or flow_cli_of(sys.orig_argv) is None:
        return
    from flows import reaper

    reaper.watch_me()
    _prestarted = start()
    atexit.register(_stop_unadopted)


def adopt() -> ServerProcess | None:
    """The server :func:`prestart` started, now the caller's to stop; None when none was started."""
    global _prestarted
    server, _prestarted = _prestarted, None
    return server


def _stop_unadopted() -> None:
    server = adopt()
    if server is not None:
        server.stop()
