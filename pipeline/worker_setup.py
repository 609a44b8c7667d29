"""A Dask worker preload (``LocalCluster(preload=["pipeline.worker_setup"])``): worker processes leave Ctrl-C
to the driver.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group, Dask's worker processes included.
Each would print a KeyboardInterrupt traceback and die on its own, while the driver is already closing the
cluster in order. Instead a worker process takes SIGINT as the sign that the driver is about to close it, and
only goes quiet: the warnings its shutdown then logs (cancelled tasks, a heartbeat to a scheduler that has
gone) are expected and stay off the terminal, whose stderr keeps the driver's one line.
"""

import logging
import signal
import threading


def _quiet(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _quiet)
