"""Prefect's temporary server for a flow CLI run with no ``PREFECT_API_URL``, started by simshard.

Prefect starts one by itself on the first flow call when no server is configured. simshard starts the same
thing, Prefect's API app (``prefect.server.api.server:create_app``) under uvicorn on 127.0.0.1 with the UI and
the background services off (:mod:`flows.server_process`), for three reasons, all measured:

- The driver never imports Prefect's server package, which Prefect's own start needs: 1.6 s (measured under
  load) of a 40,000-row build's 8.5 s.
- A flow CLI starts the server before its own imports (:func:`flows.server_process.prestart`), so that the
  server's start (about 4 s of one core) and the driver's imports (about 2 s of the other) overlap.
- The server runs in a session of its own, so Ctrl-C in the terminal reaches the driver and not the server.
  The driver then reports the interrupted run to a live server and stops it; with Prefect's own start the same
  Ctrl-C stopped the server too, and the driver retried against it for 10 s before exiting.

The server stops when the block ends; if the driver is killed, its reaper (:mod:`flows.reaper`) stops it.
"""

import contextlib
import importlib
import logging
import time
from collections.abc import Iterator

import httpx
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from flows import server_process, startup_gc
from flows.server_process import ServerProcess
from pipeline import plots

log = logging.getLogger("simshard")
DRAIN_TIMEOUT_S = 5.0
PORT_ATTEMPTS = 3
# imported by every flow run on first use (Prefect's parameter encoding and flow call, pyarrow's first
# pa.array(), the artifacts' plots): about 0.9 s of a 40,000-row build, spent while the server starts instead
PRELOAD = ("fastapi.encoders", "prefect.utilities.visualization", "pandas")


def _healthy(server: ServerProcess, timeout: float) -> bool:
    """Wait until the server's /health answers 200; False when the process exits first (its port was taken)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            try:
                if client.get(f"{server.url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"Prefect's temporary server did not answer within {timeout:g} s "
                       "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")


def _drain_prefect() -> None:
    """Send the logs and events Prefect still holds, as prefect_test_harness does before it stops its server:
    afterwards they would be retried against a stopped server for over a minute at exit."""
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=DRAIN_TIMEOUT_S)


def _answering_server(timeout: float) -> ServerProcess:
    """The prestarted server, or a new one, once it answers; a new port when one exits first. The driver
    imports PRELOAD while the first one starts."""
    server = server_process.adopt() or server_process.start()
    with startup_gc.paused():
        for module in PRELOAD:
            importlib.import_module(module)
        plots.pyplot()
    for attempt in range(PORT_ATTEMPTS):
        server = server if attempt == 0 else server_process.start()
        try:
            if _healthy(server, timeout):
                return server
        except BaseException:
            server.stop()
            raise
        server.errors.seek(0)
        error = server.errors.read().strip()
        server.stop()
    raise RuntimeError(f"Prefect's temporary server did not start: {error[-300:]}")


@contextlib.contextmanager
def temporary_server() -> Iterator[str | None]:
    """Within the block, flows report to a temporary Prefect server on 127.0.0.1 (its API URL is yielded), or to
    the server ``PREFECT_API_URL`` names when it is set (None is yielded, nothing is started)."""
    if PREFECT_API_URL.value():
        prestarted = server_process.adopt()
        if prestarted is not None:
            prestarted.stop()
        yield None
        return
    server = _answering_server(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    url = server.url
    log.info("Prefect: temporary server on %s (set PREFECT_API_URL to use another)", url.removesuffix("/api"))
    try:
        # Heartbeats tell a lasting server that a run has crashed; this server ends with the run. Prefect also
        # waits for its heartbeat thread's 1 s sleep at the end of each flow run (0.5-1 s measured).
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            try:
                yield url
            finally:
                _drain_prefect()
    finally:
        server.stop()
