"""A flow CLI's process ends without the interpreter's teardown of its modules.

After a flow CLI's work, freeing the objects of Prefect, Dask, pyarrow and their dependencies took
0.77-0.92 s of a 40k-row build's 8 s (measured from ``main``'s return to the process's end; 0.02-0.03 s
without the teardown, and 0.41 s after a bare ``import prefect``). That teardown runs C code only: every
``atexit`` hook, Prefect's and Dask's included, still runs first, and non-daemon threads are joined before
them as usual. :func:`arm` registers the last hook, which flushes logging and stdio and ends the process
with the code given to :func:`exit`. An uncaught error, or an exit by any other way (``--help``, argparse),
keeps the ordinary teardown.
"""

import atexit
import logging
import os
import sys
from typing import NoReturn

_code: int | None = None


def arm() -> None:
    """Register the hook; called first thing by ``flows/__init__`` so that it runs after every other."""
    atexit.register(_end)


def exit(code: int) -> NoReturn:  # noqa: A001 - the CLI's sys.exit
    """``sys.exit(code)``, ending the process without teardown once the other exit hooks have run."""
    global _code
    _code = code
    sys.exit(code)


def _end() -> None:
    if _code is None:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(_code)
