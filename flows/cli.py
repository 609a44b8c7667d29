"""What the flow CLIs share: one-line errors (tracebacks only with --debug) and exit codes
(0 success, 2 bad input, 1 any other failure)."""

import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from storage.errors import SimshardError


def one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = "-".join(map(str, err["loc"])).replace("_", "-")
        return f"--{where}: {err['msg']}" if where else err["msg"]
    if isinstance(exc, SimshardError):
        return str(exc).splitlines()[0]
    return f"{type(exc).__name__}: {exc}"


def run_cli(make_config: Callable[[], Any], run: Callable[[Any], Any], *, debug: bool) -> tuple[int, Any, Any]:
    """(exit code, config, result): builds the config, runs it, and turns failures into one line on stderr."""
    try:
        config = make_config()
        result = run(config)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return (2 if isinstance(exc, ValidationError | SimshardError) else 1), None, None
    return 0, config, result
