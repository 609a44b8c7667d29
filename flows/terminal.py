"""What the terminal shows when a flow runs from its CLI.

stdout: simshard's lines, Prefect's run lines and the final summary. stderr: only the one ``error:`` line of a
failure (and terminal progress bars, which tqdm shows only on a TTY). Libraries' routine logs (Dask's INFO
chatter, HTTP clients) and tracebacks stay off the console unless ``--log-level debug`` / ``--debug``; they
still reach the Prefect run page through Prefect's API handler (``PREFECT_LOGGING_EXTRA_LOGGERS``).
"""

import logging
import os

from flows import reaper, startup_gc
from storage.cli import Common, export_log_level, quiet_libraries

LIBRARY_LOGGERS = ("distributed", "dask", "tornado", "bokeh", "asyncio", "httpx", "httpcore", "urllib3", "fsspec",
                   "s3fs", "botocore", "aiobotocore", "matplotlib", "PIL")


class ConsoleFilter(logging.Filter):
    """Drops library records below WARNING and strips tracebacks, unless asked for more."""

    def __init__(self, common: Common):
        super().__init__()
        self.verbose, self.debug = common.log_level == "debug", common.debug

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.verbose and record.name.split(".")[0] in LIBRARY_LOGGERS and record.levelno < logging.WARNING:
            return False
        if not self.debug and record.exc_info:
            # the console handler runs last (after the run page's API handler), so this changes no other output
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def configure(common: Common) -> None:
    """Set up a flow CLI's process: the console, and a reaper so that no child outlives it (call before the
    first flow runs, once the CLI's modules are imported: it turns garbage collection back on)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    startup_gc.resume()

    ensure_logging_setup()
    reaper.watch_me()
    export_log_level(common.log_level)
    verbose = common.log_level == "debug"
    if not verbose:
        # Dask worker processes log to their own stderr; keep their routine INFO lines off it
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        quiet_libraries()
    console_filter = ConsoleFilter(common)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(console_filter)
    for handler in logging.getLogger("prefect._internal").handlers:  # Prefect's own stream handler
        handler.addFilter(console_filter)
    for name in ("prefect", "simshard"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    attach_run_page_handlers()
    dask_logger = logging.getLogger("distributed")
    # distributed logs to its own stderr handler; send its records through the filtered console instead
    dask_logger.handlers[:] = [h for h in dask_logger.handlers if type(h) is not logging.StreamHandler]
    dask_logger.propagate = True
    # INFO in this process, for the run page (the console filter keeps it off the terminal), whatever
    # DASK_LOGGING__DISTRIBUTED a parent process left in the environment
    dask_logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def attach_run_page_handlers() -> None:
    """Make sure every extra logger (Dask's, simshard's) carries Prefect's API handler: a library that reset
    its logger's handlers after Prefect set them up would otherwise vanish from the run page."""
    from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS

    api_handlers = logging.getLogger("prefect.extra").handlers
    for name in PREFECT_LOGGING_EXTRA_LOGGERS.value():
        target = logging.getLogger(name)
        for handler in api_handlers:
            if handler not in target.handlers:
                target.addHandler(handler)
