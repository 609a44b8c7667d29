"""Command lines generated from pydantic models, and the exit contract every simshard CLI keeps.

Every option of a CLI is a field of its pydantic model: :func:`model_parser` turns the fields into argparse
options (``--field-name``, type, choices and help from the field), and options left out keep the model's
default. :func:`run` runs the command and keeps the contract:

- bad input (a pydantic ``ValidationError``, an :class:`~storage.errors.InputError` or a
  :class:`~storage.errors.ManifestError`, an argparse error): one line ``error: ...`` on stderr, exit 2;
- a failure of the environment (disk full, a crashed process): one line naming what failed, exit 1;
- Ctrl-C: exit 130;
- no traceback unless ``--debug``.

It lives below ``flows`` so that ``train.node`` and ``train.simulate`` keep it without importing Prefect.
"""

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import sys
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from storage.errors import InputError, ManifestError, SimshardError

LOG_LEVELS = ("debug", "info", "warning")
INTERRUPT_GRACE_S = 10.0
AFTER_CLEANUP_GRACE_S = 1.5
# set by the first Ctrl-C: long loops (the training launcher) check it, in case a library call swallowed the
# KeyboardInterrupt (Prefect's HTTP client retrying against a temporary server that Ctrl-C also stopped)
INTERRUPTED = threading.Event()
_reported = threading.Event()
_exit_timer: list[threading.Timer | None] = [None]


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one ``error:`` line and exit 2 (no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


@dataclasses.dataclass(frozen=True)
class Common:
    """Options every CLI has: ``--debug`` (tracebacks) and ``--log-level``."""

    debug: bool = False
    log_level: str = "info"


def _base(annotation):
    """(base type, choices) of a field annotation: ``X | None`` -> X, ``Literal[...]`` -> str with choices."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base(args[0])
    if origin is Literal:
        values = typing.get_args(annotation)
        return type(values[0]), list(values)
    return annotation, None


def _json_object(text: str) -> dict:
    """A dict option (``--storage-options``) given as a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        example = '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}); pass an object such "
                                         f"as '{example}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of fsspec keyword arguments (got "
                                         f"{type(value).__name__})")
    return value


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def model_parser(model: type[BaseModel], *, prog: str, description: str, positional: Iterable[str] = ()) -> Parser:
    """A parser with one option per field of ``model`` (fields in ``positional`` are positional arguments), plus
    ``--debug`` and ``--log-level``. Options not given are absent from the parsed namespace, so the model's
    defaults apply."""
    parser = Parser(prog=prog, description=description)
    add_model_options(parser, model, positional=positional)
    add_common_options(parser)
    return parser


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], *,
                      positional: Iterable[str] = ()) -> None:
    bare = set(positional)
    for name, field in model.model_fields.items():
        base, choices = _base(field.annotation)
        text = field.description or ""
        if name in bare:
            parser.add_argument(name, type=base, help=text, **({} if field.is_required() else {"nargs": "?"}))
            continue
        kw: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS)
        if base is bool:
            kw.update(action="store_true", help=text)
        else:
            origin = typing.get_origin(base)
            # None defaults are described in the field's text ("default: one per shard", ...)
            suffix = " (required)" if field.is_required() else \
                "" if field.default is None else f" (default: {field.default})"
            kind = _comma_list if origin is list else _json_object if origin is dict else base
            kw.update(type=kind, choices=choices, help=text + suffix)
            if origin is list:
                kw["metavar"] = "A,B,..."
            if origin is dict:
                kw["metavar"] = "JSON"
        parser.add_argument("--" + name.replace("_", "-"), **kw)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks on error")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="terminal detail: debug also shows the libraries' own logs (default: info)")


def split_common(namespace: argparse.Namespace) -> tuple[dict[str, Any], Common]:
    """(the model's arguments, the common options) of a parsed namespace."""
    values = vars(namespace).copy()
    common = Common(debug=values.pop("debug", False), log_level=values.pop("log_level", "info"))
    return values, common


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line that names the parameter, file or column."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if len(err["loc"]) > 1:  # a key of a nested parameter file (--config): name it as written there
            return f"{'.'.join(map(str, err['loc']))}: {msg}"
        where = "-".join(map(str, err["loc"])).replace("_", "-")
        if where and msg.startswith(f"--{where}"):
            return msg
        return f"--{where}: {msg}" if where else msg
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = exc.filename or "the output"
        return f"no space left on the device while writing {where}; free space or choose another --out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SimshardError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, ValidationError | InputError | ManifestError):
        return 2
    return 1


def _report_interrupt() -> None:
    if not _reported.is_set():
        _reported.set()
        print("error: interrupted", file=sys.stderr, flush=True)


def _exit_in(seconds: float) -> None:
    """(Re)arm the one timer that reports the interrupt and exits with 130 after ``seconds``."""

    def too_slow() -> None:
        _report_interrupt()
        os._exit(130)

    old, _exit_timer[0] = _exit_timer[0], threading.Timer(seconds, too_slow)
    if old is not None:
        old.cancel()
    _exit_timer[0].daemon = True
    _exit_timer[0].start()


def _on_sigint(signum, frame) -> None:
    if INTERRUPTED.is_set():  # a second Ctrl-C: leave now
        _report_interrupt()
        os._exit(130)
    INTERRUPTED.set()
    _exit_in(INTERRUPT_GRACE_S)  # the cleanup (stopping ranks, closing Dask) got stuck: exit anyway
    raise KeyboardInterrupt


@contextlib.contextmanager
def cleanup_boundary() -> Iterator[None]:
    """Wrap the work whose own cleanup (``finally`` blocks that stop processes) must run on Ctrl-C. Once
    KeyboardInterrupt has unwound out of it, that cleanup is done, and what is left gets AFTER_CLEANUP_GRACE_S
    instead of the rest of INTERRUPT_GRACE_S: in practice Prefect retrying to report the crash to its
    temporary server, which sits in the same process group and was stopped by the same Ctrl-C."""
    try:
        yield
    except KeyboardInterrupt:
        if INTERRUPTED.is_set():
            _exit_in(AFTER_CLEANUP_GRACE_S)
        raise


def install_interrupt_handler() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual (so ``finally`` blocks stop processes), marks
    :data:`INTERRUPTED`, and exits with 130 after INTERRUPT_GRACE_S if the cleanup hangs. A process started with
    SIGINT ignored (a background job) keeps ignoring it."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _unraisable


def _unraisable(info) -> None:
    """The Ctrl-C's KeyboardInterrupt can land in a finalizer or callback, where Python cannot raise it and would
    print it; the interrupt is already marked and reported once, so it stays silent. Others are printed."""
    if isinstance(info.exc_value, KeyboardInterrupt) and INTERRUPTED.is_set():
        return
    sys.__unraisablehook__(info)


def run(command: Callable[[], int | None], *, debug: bool) -> int:
    """Run ``command`` under the exit contract (see the module doc); returns the exit code."""
    install_interrupt_handler()
    try:
        code = command() or 0
        if INTERRUPTED.is_set():  # the KeyboardInterrupt was swallowed where it landed: still an interrupted run
            _report_interrupt()
            return 130
        return code
    except KeyboardInterrupt:
        if debug:
            raise
        _report_interrupt()
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        if INTERRUPTED.is_set():  # a library turned the Ctrl-C into an error of its own (a cancelled future…)
            _report_interrupt()
            return 130
        if not isinstance(exc, Exception):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exit_code(exc)


def configure_logging(level: str = "info") -> None:
    """Plain (non-Prefect) CLIs: simshard's lines on stdout; libraries stay quiet unless ``debug``."""
    export_log_level(level)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("simshard").setLevel(logging.getLevelName(level.upper()))
    if level != "debug":
        quiet_libraries()


def export_log_level(level: str) -> None:
    """Tell processes started from here (training ranks) how much to show: ``SIMSHARD_LOG_LEVEL``."""
    import os

    os.environ["SIMSHARD_LOG_LEVEL"] = level


def quiet_libraries() -> None:
    """Keep the libraries' routine warnings off the terminal: torch deprecations and ProcessGroupGloo notes,
    TensorPipe's shutdown warnings (C++ side, through ``TORCH_CPP_LOG_LEVEL`` for processes started after)."""
    import os

    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)

