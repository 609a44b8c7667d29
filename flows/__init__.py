"""Prefect flows of simshard. Importing this package sets Prefect defaults that a user has not set:
analytics off (no network), a 90 s start-up timeout for the temporary server, simshard and Dask logs on the
flow-run page (reference §4), and Prefect's console lines on stdout (stderr carries only an error line)."""

import os
import sys

# first, for a flow CLI: its exit hook must run after every hook the libraries register (see flows.quick_exit;
# server_process imports only modules that register none)
from flows import quick_exit, server_process, startup_gc

if server_process.flow_cli_of(sys.orig_argv) is not None:
    quick_exit.arm()
    startup_gc.pause()  # until the CLI's imports are done: flows.terminal.configure resumes it

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "simshard,distributed,dask")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_STREAM", "ext://sys.stdout")  # prefect._internal's handler
# Dask's own loggers also fire outside flow runs (cluster shutdown); keep them out of warnings there.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

# A flow CLI (`python -m flows.build_shards`…) starts Prefect's temporary server here, so that its start
# overlaps this process's imports; a library import starts nothing (see flows.server_process).
server_process.prestart()

import logging  # noqa: E402

# distributed replaces the handlers of its loggers when first imported: import it before Prefect attaches its
# API handler to them (PREFECT_LOGGING_EXTRA_LOGGERS), or Dask's logs never reach the run page
import distributed  # noqa: E402, F401

# simshard's step logs (rows, families, quality) are INFO: show them on the terminal and the flow-run page
logging.getLogger("simshard").setLevel(logging.INFO)
