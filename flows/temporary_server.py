"""Prefect's temporary server for a flow CLI run with no ``PREFECT_API_URL``, started by simshard.

Prefect starts one by itself on the first flow call when no server is configured. simshard starts the same
thing, Prefect's API app (``prefect.server.api.server:create_app``) under uvicorn on 127.0.0.1 with the UI and
the background services off, for two reasons, both measured:

- The driver never imports Prefect's server package, which Prefect's own start needs: 1.6 s (measured under
  load) of a 40,000-row build's 8.5 s.
- The server runs in a session of its own, so Ctrl-C in the terminal reaches the driver and not the server.
  The driver then reports the interrupted run to a live server and stops it; with Prefect's own start the same
  Ctrl-C stopped the server too, and the driver retried against it for 10 s before exiting.

The server stops when the block ends; if the driver is killed, its reaper (:mod:`flows.reaper`) stops it.
"""

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

log = logging.getLogger("simshard")
STOP_GRACE_S = 5.0
DRAIN_TIMEOUT_S = 5.0
PORT_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(port: int, errors) -> subprocess.Popen:
    env = dict(os.environ, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
         "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)


def _healthy(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """Wait until ``url``/health answers 200; False when the process exits first (its port was taken)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"Prefect's temporary server did not answer within {timeout:g} s "
                       "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")


def _drain_prefect() -> None:
    """Send the logs and events Prefect still holds, as prefect_test_harness does before it stops its server:
    afterwards they would be retried against a stopped server for over a minute at exit."""
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=DRAIN_TIMEOUT_S)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def temporary_server() -> Iterator[str | None]:
    """Within the block, flows report to a temporary Prefect server on 127.0.0.1 (its API URL is yielded), or to
    the server ``PREFECT_API_URL`` names when it is set (None is yielded, nothing is started)."""
    if PREFECT_API_URL.value():
        yield None
        return
    timeout = float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    with tempfile.TemporaryFile(mode="w+") as errors:
        for _ in range(PORT_ATTEMPTS):
            port = _free_port()
            url = f"http://127.0.0.1:{port}/api"
            proc = _start(port, errors)
            try:
                if _healthy(proc, url, timeout):
                    break
            except BaseException:
                _stop(proc)
                raise
        else:
            errors.seek(0)
            raise RuntimeError(f"Prefect's temporary server did not start: {errors.read().strip()[-300:]}")
        log.info("Prefect: temporary server on %s (set PREFECT_API_URL to use another)", url.removesuffix("/api"))
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                try:
                    yield url
                finally:
                    _drain_prefect()
        finally:
            _stop(proc)
